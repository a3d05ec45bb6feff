-- ListWorkflows with a label selector chooses between walking an index in created_at order (filtering labels) and
-- the labels GIN index (then a sort of the matches) by how many workflows it expects the selector to match. With the
-- default statistics target ANALYZE keeps at most 100 common label sets, and a selector outside them is guessed at
-- 1% of the table: a rarer one then walks the whole created_at index. 1000 keeps the frequencies of up to 1000 label
-- sets (docs/reads-at-volume.md).
ALTER TABLE "workflows" ALTER COLUMN "labels" SET STATISTICS 1000;
