-- Functions whose signature changed since an earlier version: CREATE OR REPLACE cannot change arguments or the
-- return type, and an old overload left beside the new one would be a second implementation. Runs first.
DROP FUNCTION IF EXISTS trellis_start_nodes(uuid[], text[], integer[], double precision);
DROP FUNCTION IF EXISTS trellis_pass_nodes(uuid[], text[], uuid[], jsonb[], boolean);
DROP FUNCTION IF EXISTS trellis_start_locked(uuid[], text[], integer[], uuid, boolean);
DROP FUNCTION IF EXISTS trellis_pass_nodes(uuid[], text[], uuid[], jsonb[], boolean, boolean[], uuid, text[]);
DROP FUNCTION IF EXISTS trellis_record_errors(uuid[], text[], uuid[], text[], text[], integer[], boolean[]);
DROP FUNCTION IF EXISTS trellis_start_locked(uuid[], text[], integer[], uuid, boolean, jsonb);
DROP FUNCTION IF EXISTS trellis_pass_nodes(uuid[], text[], uuid[], jsonb[], boolean, boolean[], uuid, text[], jsonb[]);
