CREATE TYPE "public"."attempt_outcome" AS ENUM('PASS', 'FAIL', 'RETRY', 'CANCELLED');--> statement-breakpoint
CREATE TABLE "node_attempts" (
	"workflow_id" uuid NOT NULL,
	"node_id" text NOT NULL,
	"attempt" integer NOT NULL,
	"outcome" "attempt_outcome" NOT NULL,
	"ended_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "node_attempts_workflow_id_node_id_attempt_pk" PRIMARY KEY("workflow_id","node_id","attempt")
);
--> statement-breakpoint
ALTER TABLE "node_attempts" ADD CONSTRAINT "node_attempts_workflow_id_node_id_nodes_workflow_id_id_fk" FOREIGN KEY ("workflow_id","node_id") REFERENCES "public"."nodes"("workflow_id","id") ON DELETE cascade ON UPDATE no action;