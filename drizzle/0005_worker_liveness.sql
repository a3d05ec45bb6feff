ALTER TABLE "nodes" ADD COLUMN "worker_session" uuid;--> statement-breakpoint
ALTER TABLE "workers" ADD COLUMN "session" uuid DEFAULT gen_random_uuid() NOT NULL;--> statement-breakpoint
CREATE INDEX "nodes_running_session_idx" ON "nodes" USING btree ("worker_session") WHERE "nodes"."status" = 'RUNNING';--> statement-breakpoint
CREATE UNIQUE INDEX "workers_session_idx" ON "workers" USING btree ("session");