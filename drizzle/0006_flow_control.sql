ALTER TYPE "public"."attempt_outcome" ADD VALUE 'THROTTLED';--> statement-breakpoint
ALTER TYPE "public"."attempt_outcome" ADD VALUE 'LEASE_LOST';--> statement-breakpoint
CREATE TABLE "limits" (
	"key" text PRIMARY KEY NOT NULL,
	"configured" boolean DEFAULT true NOT NULL,
	"max_concurrency" integer DEFAULT 0 NOT NULL,
	"rate" double precision DEFAULT 0 NOT NULL,
	"period_ms" integer DEFAULT 1000 NOT NULL,
	"burst" double precision DEFAULT 0 NOT NULL,
	"unit" text DEFAULT '' NOT NULL,
	"tokens" double precision DEFAULT 0 NOT NULL,
	"refilled_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"throttled_until" timestamp (3) with time zone,
	"throttled_total" bigint DEFAULT 0 NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
DROP INDEX "nodes_ready_idx";--> statement-breakpoint
ALTER TABLE "node_attempts" ADD COLUMN "started_at" timestamp (3) with time zone;--> statement-breakpoint
ALTER TABLE "node_attempts" ADD COLUMN "error_kind" "error_kind";--> statement-breakpoint
ALTER TABLE "node_attempts" ADD COLUMN "error_message" text;--> statement-breakpoint
ALTER TABLE "node_attempts" ADD COLUMN "worker_id" text;--> statement-breakpoint
ALTER TABLE "node_attempts" ADD COLUMN "usage" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "nodes" ADD COLUMN "priority" smallint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "nodes" ADD COLUMN "limit_keys" text[] DEFAULT '{}' NOT NULL;--> statement-breakpoint
ALTER TABLE "nodes" ADD COLUMN "held_by" text;--> statement-breakpoint
ALTER TABLE "workflows" ADD COLUMN "usage" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "workflows" ADD COLUMN "budget" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
CREATE INDEX "nodes_held_idx" ON "nodes" USING btree ("capability","priority" DESC NULLS LAST) WHERE "nodes"."held_by" is not null and "nodes"."status" = 'PENDING';--> statement-breakpoint
CREATE INDEX "nodes_held_keys_idx" ON "nodes" USING gin ("limit_keys") WHERE "nodes"."held_by" is not null and "nodes"."status" = 'PENDING';--> statement-breakpoint
CREATE INDEX "nodes_holding_idx" ON "nodes" USING btree ("capability") WHERE "nodes"."status" in ('QUEUED', 'RUNNING');--> statement-breakpoint
CREATE INDEX "nodes_holding_keys_idx" ON "nodes" USING gin ("limit_keys") WHERE "nodes"."status" in ('QUEUED', 'RUNNING') and "nodes"."limit_keys" <> '{}';--> statement-breakpoint
CREATE INDEX "nodes_ready_unheld_idx" ON "nodes" USING btree ("workflow_id") WHERE "nodes"."status" = 'PENDING' and "nodes"."pending_parents" = 0 and "nodes"."held_by" is null;