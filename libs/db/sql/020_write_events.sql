-- The one writer of events: numbers them, inserts them and updates the workflow rows. Every transaction that changes
-- a workflow ends its changes here (the TypeScript WorkflowChanges and every function below), after locking the
-- workflow row, so the per-workflow sequence has no gaps and no duplicates.
--
-- p_events: a JSON array of {workflow_id, type, node_id, workflow_status, node_status, data}, in order; each
-- workflow's events get the sequences after its event_seq, in that order. p_statuses: {workflow_id: status} for
-- workflows whose status changed (finished_at is set once the status is SUCCEEDED, FAILED or CANCELLED, cleared when
-- it leaves them). p_notify: NOTIFY `trellis_events` (`<workflow>:<last sequence>`, libs/db/src/channels.ts) from
-- inside the statement; only for callers that commit without waiting for the WAL flush (a NOTIFY holds the
-- database-wide notify lock through its commit), the others notify after commit.
-- The transaction-local setting `trellis.actor` (set by the api for a token's calls, libs/db/src/transactions.ts), when
-- set, is added to every event's data as `actor`: the audit trail of who caused each change.
-- Returns 'event' rows (each event as stored) and 'workflow' rows {id, status} of the workflows updated.
CREATE OR REPLACE FUNCTION trellis_write_events(p_events jsonb, p_statuses jsonb, p_notify boolean)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql
-- Generic plans: planning each statement anew costs more than running it (see README.md).
SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  RETURN QUERY
  WITH given AS (
    SELECT e.workflow_id, e.type, e.node_id, e.workflow_status, e.node_status,
           coalesce(e.data, '{}'::jsonb)
             || CASE WHEN coalesce(current_setting('trellis.actor', true), '') = '' THEN '{}'::jsonb
                     ELSE jsonb_build_object('actor', current_setting('trellis.actor', true)) END AS data,
           e.ord
      FROM ROWS FROM (jsonb_to_recordset(coalesce(p_events, '[]'::jsonb))
                        AS (workflow_id uuid, type text, node_id text, workflow_status workflow_status,
                            node_status node_status, data jsonb))
           WITH ORDINALITY AS e(workflow_id, type, node_id, workflow_status, node_status, data, ord)
  ),
  ev AS (
    SELECT g.workflow_id, wf.event_seq + row_number() OVER (PARTITION BY g.workflow_id ORDER BY g.ord) AS sequence,
           g.type, g.node_id, g.workflow_status, g.node_status, g.data
      FROM given g JOIN workflows wf ON wf.id = g.workflow_id
  ),
  inserted AS (
    INSERT INTO workflow_events (workflow_id, sequence, type, node_id, workflow_status, node_status, data)
    SELECT ev.workflow_id, ev.sequence, ev.type, ev.node_id, ev.workflow_status, ev.node_status, ev.data FROM ev
    RETURNING workflow_events.workflow_id, workflow_events.sequence, workflow_events.type, workflow_events.node_id,
              workflow_events.workflow_status, workflow_events.node_status, workflow_events.data, workflow_events.time
  ),
  changed AS (
    SELECT coalesce(c.workflow_id, s.id) AS id, c.last_sequence, s.status
      FROM (SELECT ev.workflow_id, max(ev.sequence) AS last_sequence FROM ev GROUP BY ev.workflow_id) c
      FULL JOIN (SELECT st.key::uuid AS id, st.value::workflow_status AS status
                   FROM jsonb_each_text(coalesce(p_statuses, '{}'::jsonb)) AS st) s ON s.id = c.workflow_id
  ),
  bumped AS (
    UPDATE workflows wf
       SET event_seq = coalesce(ch.last_sequence, wf.event_seq),
           status = coalesce(ch.status, wf.status),
           finished_at = CASE WHEN trellis_workflow_finished(coalesce(ch.status, wf.status))
                              THEN coalesce(wf.finished_at, now()) END,
           updated_at = now()
      FROM changed ch
     WHERE wf.id = ch.id
    RETURNING wf.id, wf.status, wf.event_seq, ch.last_sequence IS NOT NULL AS has_events
  )
  SELECT 'event', to_jsonb(i) FROM inserted i
  UNION ALL
  SELECT 'workflow', jsonb_build_object('id', b.id, 'status', b.status)
    FROM bumped b
    LEFT JOIN LATERAL (SELECT pg_notify('trellis_events', b.id::text || ':' || b.event_seq::text)
                        WHERE p_notify AND b.has_events) AS notified ON true;
END;
$$;
