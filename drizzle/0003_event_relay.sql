CREATE TABLE "event_relay_cursors" (
	"stream_key" text PRIMARY KEY NOT NULL,
	"tx_id" "xid8" NOT NULL,
	"workflow_id" uuid NOT NULL,
	"sequence" bigint NOT NULL,
	"updated_at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "workflow_events" ADD COLUMN "tx_id" "xid8" DEFAULT pg_current_xact_id() NOT NULL;--> statement-breakpoint
CREATE INDEX "workflow_events_relay_idx" ON "workflow_events" USING btree ("tx_id","workflow_id","sequence");