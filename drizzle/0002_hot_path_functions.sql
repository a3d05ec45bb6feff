-- Hot-path functions: filled in by the next commit.
SELECT 1;
