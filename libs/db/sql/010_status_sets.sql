-- The status sets of @trellis/core in SQL: isTerminalNodeStatus (a node is unfinished while it is not terminal) and
-- isTerminalWorkflowStatus. SQL-language, IMMUTABLE and one expression each, so the planner inlines them (and the
-- partial indexes on these sets still apply). libs/db/test/status-sets.test.ts holds them equal to libs/core for
-- every value of the enums.
CREATE OR REPLACE FUNCTION trellis_node_unfinished(s node_status) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT s IN ('PENDING', 'QUEUED', 'RUNNING') $$;

CREATE OR REPLACE FUNCTION trellis_workflow_finished(s workflow_status) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT s IN ('SUCCEEDED', 'FAILED', 'CANCELLED') $$;
