-- The status sets of @trellis/core in SQL: isTerminalNodeStatus (a node is unfinished while it is not terminal) and
-- isTerminalWorkflowStatus. SQL-language, IMMUTABLE and one expression each, so the planner inlines them (and the
-- partial indexes on these sets still apply). libs/db/test/status-sets.test.ts holds them equal to libs/core for
-- every value of the enums.
CREATE OR REPLACE FUNCTION trellis_node_unfinished(s node_status) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT s IN ('PENDING', 'QUEUED', 'RUNNING', 'WAITING') $$;

-- The unfinished nodes of a workflow (the settle check), for the set above. Here and not in a migration: an index
-- predicate naming an enum value cannot be created in the transaction that adds the value (migration 0007 adds
-- WAITING, and drizzle-kit applies every pending migration in one transaction); these files run after, in their own.
-- It replaces nodes_unfinished_idx of migration 0000, whose predicate lacks WAITING (dropped by migration 0011).
CREATE INDEX IF NOT EXISTS nodes_unfinished_all_idx ON nodes (workflow_id, status)
 WHERE status IN ('PENDING', 'QUEUED', 'RUNNING', 'WAITING');

CREATE OR REPLACE FUNCTION trellis_workflow_finished(s workflow_status) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT s IN ('SUCCEEDED', 'FAILED', 'CANCELLED') $$;
