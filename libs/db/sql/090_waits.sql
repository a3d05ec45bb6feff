-- A google.protobuf.Duration in its JSON form ("1.5s") in milliseconds; null for null.
CREATE OR REPLACE FUNCTION trellis_duration_ms(p_duration text)
RETURNS float8
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN p_duration IS NULL THEN NULL ELSE rtrim(p_duration, 's')::float8 * 1000 END;
$$;

-- What time does to WAITING nodes (their `wake_at` passed), up to p_limit of them, their workflows locked in id order:
-- - a node waiting for its start time (`not_before`, no `wait`) goes back to PENDING (a `node.status_changed` event,
--   reason "start time reached") for the claim that follows, which queues it as usual (limits included);
-- - a node waiting for a signal whose wait timed out is completed as a signal would: PASS with its timeout_output
--   (trellis_pass_nodes), or, with fail_on_timeout, FAIL with TASK_ERROR "timed out waiting for a signal after ..."
--   (trellis_record_errors), descendants SKIPPED as for any failure.
-- - a node waiting for a signal that holds a kept signal (sent before it was ready) is named in a 'signaled' row
--   {workflow_id, id}: the scheduler completes it as SignalNode would (libs/db/src/signal-store.ts), edits and all;
--   until then it stays due here.
-- Called by the scheduler around each claim. Returns 'woken' {workflow_id, id} per node back to PENDING, the
-- 'signaled' rows, then what those functions return. Commits synchronously (a PASS or FAIL is final).
CREATE OR REPLACE FUNCTION trellis_wake_nodes(p_limit integer)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  v_due jsonb;
  v_ids uuid[];
  v_woken jsonb;
  v_pass jsonb;
  v_fail jsonb;
BEGIN
  SELECT jsonb_agg(jsonb_build_object('workflow_id', n.workflow_id, 'id', n.id)) INTO v_due
    FROM (SELECT n.workflow_id, n.id FROM nodes n
           WHERE n.wake_at <= clock_timestamp() AND n.status = 'WAITING'
           ORDER BY n.wake_at LIMIT p_limit) n;
  IF v_due IS NULL THEN
    RETURN;
  END IF;
  v_ids := ARRAY(SELECT DISTINCT (e ->> 'workflow_id')::uuid FROM jsonb_array_elements(v_due) AS e);
  PERFORM 1 FROM workflows WHERE id = ANY (v_ids) ORDER BY id FOR UPDATE;
  WITH woken AS (
    UPDATE nodes n
       SET status = 'PENDING', wake_at = NULL, updated_at = now()
      FROM jsonb_to_recordset(v_due) AS d(workflow_id uuid, id text), workflows wf
     WHERE n.workflow_id = d.workflow_id AND n.id = d.id AND n.status::text = 'WAITING' AND n.wait IS NULL
       AND n.wake_at <= clock_timestamp() AND wf.id = n.workflow_id
    RETURNING n.workflow_id, n.id, wf.status AS workflow_status
  )
  SELECT coalesce(jsonb_agg(to_jsonb(w) ORDER BY w.workflow_id, w.id), '[]'::jsonb) INTO v_woken FROM woken w;
  RETURN QUERY SELECT 'woken', e - 'workflow_status' FROM jsonb_array_elements(v_woken) AS e;
  RETURN QUERY
  SELECT x.kind, x.body
    FROM trellis_write_events(
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                     'workflow_id', e -> 'workflow_id', 'type', 'node.status_changed', 'node_id', e -> 'id',
                     'workflow_status', e -> 'workflow_status', 'node_status', 'PENDING',
                     'data', jsonb_build_object('from', 'WAITING', 'reason', 'start time reached'))), '[]'::jsonb)
              FROM jsonb_array_elements(v_woken) AS e),
           NULL, false) AS x;
  RETURN QUERY
  SELECT 'signaled', jsonb_build_object('workflow_id', n.workflow_id, 'id', n.id)
    FROM jsonb_to_recordset(v_due) AS d(workflow_id uuid, id text)
    JOIN nodes n ON n.workflow_id = d.workflow_id AND n.id = d.id
   WHERE n.status = 'WAITING' AND n.wait IS NOT NULL AND n.signal IS NOT NULL;
  -- Timed-out waits (without a kept signal): PASS with the timeout's output, or FAIL.
  SELECT jsonb_agg(jsonb_build_object('workflow_id', n.workflow_id, 'id', n.id, 'output', n.wait -> 'timeoutOutput'))
           FILTER (WHERE NOT coalesce((n.wait ->> 'failOnTimeout')::boolean, false)),
         jsonb_agg(jsonb_build_object('workflow_id', n.workflow_id, 'id', n.id,
                                      'message', 'timed out waiting for a signal after '
                                                 || (n.wait ->> 'timeout')))
           FILTER (WHERE coalesce((n.wait ->> 'failOnTimeout')::boolean, false))
    INTO v_pass, v_fail
    FROM jsonb_to_recordset(v_due) AS d(workflow_id uuid, id text)
    JOIN nodes n ON n.workflow_id = d.workflow_id AND n.id = d.id
   WHERE n.status = 'WAITING' AND n.wait IS NOT NULL AND n.signal IS NULL AND n.wake_at <= clock_timestamp();
  IF v_pass IS NOT NULL THEN
    RETURN QUERY
    SELECT x.kind, x.body
      FROM trellis_pass_nodes(
             ARRAY(SELECT (e ->> 'workflow_id')::uuid FROM jsonb_array_elements(v_pass) AS e),
             ARRAY(SELECT e ->> 'id' FROM jsonb_array_elements(v_pass) AS e),
             array_fill(NULL::uuid, ARRAY[jsonb_array_length(v_pass)]),
             ARRAY(SELECT CASE WHEN jsonb_typeof(e -> 'output') IS NULL THEN NULL ELSE e -> 'output' END
                     FROM jsonb_array_elements(v_pass) AS e),
             false, array_fill(false, ARRAY[jsonb_array_length(v_pass)]), NULL, '{}') AS x;
  END IF;
  IF v_fail IS NOT NULL THEN
    RETURN QUERY
    SELECT x.kind, x.body
      FROM trellis_record_errors(
             ARRAY(SELECT (e ->> 'workflow_id')::uuid FROM jsonb_array_elements(v_fail) AS e),
             ARRAY(SELECT e ->> 'id' FROM jsonb_array_elements(v_fail) AS e),
             array_fill(NULL::uuid, ARRAY[jsonb_array_length(v_fail)]),
             array_fill('TASK_ERROR'::text, ARRAY[jsonb_array_length(v_fail)]),
             ARRAY(SELECT e ->> 'message' FROM jsonb_array_elements(v_fail) AS e),
             array_fill(NULL::integer, ARRAY[jsonb_array_length(v_fail)]),
             array_fill(false, ARRAY[jsonb_array_length(v_fail)])) AS x;
  END IF;
END;
$$;
