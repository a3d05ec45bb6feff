CREATE TYPE "public"."error_kind" AS ENUM('TASK_ERROR', 'INFRA_ERROR');--> statement-breakpoint
CREATE TYPE "public"."node_status" AS ENUM('PENDING', 'QUEUED', 'RUNNING', 'PASS', 'FAIL', 'SKIPPED', 'CANCELLED');--> statement-breakpoint
CREATE TYPE "public"."workflow_status" AS ENUM('PENDING', 'RUNNING', 'PAUSED', 'SUCCEEDED', 'FAILED', 'CANCELLED');--> statement-breakpoint
CREATE TABLE "node_edges" (
	"workflow_id" uuid NOT NULL,
	"parent_id" text NOT NULL,
	"child_id" text NOT NULL,
	CONSTRAINT "node_edges_workflow_id_parent_id_child_id_pk" PRIMARY KEY("workflow_id","parent_id","child_id")
);
--> statement-breakpoint
CREATE TABLE "nodes" (
	"workflow_id" uuid NOT NULL,
	"id" text NOT NULL,
	"name" text NOT NULL,
	"capability" text NOT NULL,
	"status" "node_status" NOT NULL,
	"parent_ids" text[] DEFAULT '{}' NOT NULL,
	"pending_parents" integer DEFAULT 0 NOT NULL,
	"input" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"output" jsonb,
	"error_kind" "error_kind",
	"error_message" text,
	"attempt" integer DEFAULT 0 NOT NULL,
	"attempt_base" integer DEFAULT 0 NOT NULL,
	"retry_policy" jsonb,
	"timeout_ms" integer,
	"labels" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"queue_gen" integer DEFAULT 0 NOT NULL,
	"lease" uuid,
	"lease_expires_at" timestamp (3) with time zone,
	"queued_at" timestamp (3) with time zone,
	"unroutable_at" timestamp (3) with time zone,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp (3) with time zone,
	"finished_at" timestamp (3) with time zone,
	CONSTRAINT "nodes_workflow_id_id_pk" PRIMARY KEY("workflow_id","id")
);
--> statement-breakpoint
CREATE TABLE "workers" (
	"id" text PRIMARY KEY NOT NULL,
	"capabilities" text[] NOT NULL,
	"hostname" text DEFAULT '' NOT NULL,
	"started_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"heartbeat_at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "workflow_events" (
	"workflow_id" uuid NOT NULL,
	"sequence" bigint NOT NULL,
	"type" text NOT NULL,
	"node_id" text,
	"workflow_status" "workflow_status" NOT NULL,
	"node_status" "node_status",
	"data" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"time" timestamp (3) with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "workflow_events_workflow_id_sequence_pk" PRIMARY KEY("workflow_id","sequence")
);
--> statement-breakpoint
CREATE TABLE "workflows" (
	"id" uuid PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"status" "workflow_status" NOT NULL,
	"input" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"labels" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"request_id" text,
	"event_seq" bigint DEFAULT 0 NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp (3) with time zone
);
--> statement-breakpoint
ALTER TABLE "node_edges" ADD CONSTRAINT "node_edges_workflow_id_workflows_id_fk" FOREIGN KEY ("workflow_id") REFERENCES "public"."workflows"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "nodes" ADD CONSTRAINT "nodes_workflow_id_workflows_id_fk" FOREIGN KEY ("workflow_id") REFERENCES "public"."workflows"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "workflow_events" ADD CONSTRAINT "workflow_events_workflow_id_workflows_id_fk" FOREIGN KEY ("workflow_id") REFERENCES "public"."workflows"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "node_edges_child_idx" ON "node_edges" USING btree ("workflow_id","child_id");--> statement-breakpoint
CREATE INDEX "nodes_ready_idx" ON "nodes" USING btree ("workflow_id") WHERE "nodes"."status" = 'PENDING' and "nodes"."pending_parents" = 0;--> statement-breakpoint
CREATE INDEX "nodes_unfinished_idx" ON "nodes" USING btree ("workflow_id","status") WHERE "nodes"."status" in ('PENDING', 'QUEUED', 'RUNNING');--> statement-breakpoint
CREATE INDEX "nodes_in_flight_idx" ON "nodes" USING btree ("status","queued_at") WHERE "nodes"."status" in ('QUEUED', 'RUNNING');--> statement-breakpoint
CREATE INDEX "workers_heartbeat_idx" ON "workers" USING btree ("heartbeat_at");--> statement-breakpoint
CREATE UNIQUE INDEX "workflows_request_id_key" ON "workflows" USING btree ("request_id");--> statement-breakpoint
CREATE INDEX "workflows_created_at_id_idx" ON "workflows" USING btree ("created_at" DESC NULLS LAST,"id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "workflows_status_created_at_idx" ON "workflows" USING btree ("status","created_at" DESC NULLS LAST,"id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "workflows_labels_idx" ON "workflows" USING gin ("labels");--> statement-breakpoint
CREATE INDEX "workflows_active_idx" ON "workflows" USING btree ("id") WHERE "workflows"."status" in ('PENDING', 'RUNNING');