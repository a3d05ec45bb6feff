-- Keeps workflow_events.tx_id from decreasing along a workflow's sequence, which the Redis Stream relay needs to
-- publish each workflow's events in sequence order (libs/db/src/event-relay-store.ts).
--
-- tx_id defaults to the writing transaction's id, and ids are handed out when a transaction first writes, not when
-- it writes a given workflow: a transaction that locked workflow A (taking id 100) and then waited for workflow B,
-- whose holder took id 101 and committed B's events 5 and 6 first, writes B's event 7 with tx_id 100. Ordered by
-- tx_id, 7 would come before 5. So after each INSERT statement, the new rows of a workflow whose previous event has
-- a larger tx_id are raised to it. Every writer locks the workflow row before writing its events, so that previous
-- event is committed (or this transaction's own) and visible here.
--
-- One statement-level trigger with a transition table: per statement, one pass over the new rows and one index probe
-- per workflow, whatever the number of rows; an UPDATE only in the case above, and only of that workflow's new rows
-- (those from first_seq on: the workflow is locked, so no other transaction can have written them).
CREATE FUNCTION trellis_raise_event_tx_ids() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  FOR r IN
    SELECT f.workflow_id, f.first_seq, p.tx_id AS prev_tx_id
      FROM (SELECT n.workflow_id, min(n.sequence) AS first_seq, min(n.tx_id) AS min_tx_id
              FROM new_events n
             GROUP BY n.workflow_id) f
      CROSS JOIN LATERAL (SELECT pe.tx_id
                            FROM workflow_events pe
                           WHERE pe.workflow_id = f.workflow_id AND pe.sequence < f.first_seq
                           ORDER BY pe.sequence DESC
                           LIMIT 1) p
     WHERE p.tx_id > f.min_tx_id
  LOOP
    UPDATE workflow_events
       SET tx_id = r.prev_tx_id
     WHERE workflow_id = r.workflow_id AND sequence >= r.first_seq AND tx_id < r.prev_tx_id;
  END LOOP;
  RETURN NULL;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER workflow_events_raise_tx_ids
  AFTER INSERT ON workflow_events
  REFERENCING NEW TABLE AS new_events
  FOR EACH STATEMENT EXECUTE FUNCTION trellis_raise_event_tx_ids();
