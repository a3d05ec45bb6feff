-- nodes_unfinished_idx (migration 0000) was replaced by nodes_unfinished_all_idx (libs/db/sql/010_status_sets.sql,
-- whose predicate has WAITING too) and no plan needs it; every status change among PENDING, QUEUED and RUNNING still
-- maintained it.
DROP INDEX IF EXISTS "nodes_unfinished_idx";
