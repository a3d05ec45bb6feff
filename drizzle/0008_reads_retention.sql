CREATE INDEX "workflows_labels_path_idx" ON "workflows" USING gin ("labels" jsonb_path_ops);--> statement-breakpoint
DROP INDEX "workflows_labels_idx";--> statement-breakpoint
CREATE INDEX "workflows_finished_at_idx" ON "workflows" USING btree ("finished_at") WHERE "workflows"."finished_at" is not null;
