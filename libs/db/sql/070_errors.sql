-- RUNNING -> QUEUED (a retry) or FAIL: the one implementation of a failed attempt, for a worker's error results and
-- for nodes whose worker was lost. The decision (retry after a delay, or fail) is the caller's, made with the retry
-- policy of @trellis/core; p_retry_delays[i] is the delay in ms, or null to fail. Under their leases, for nodes that
-- are still RUNNING:
-- - a retry: QUEUED with the error kept, the attempt ended 'RETRY', a `node.retry_scheduled` event; with p_new_job a
--   new queue generation when p_new_jobs[i] (the caller adds a new job: the node's worker was lost, or the attempt
--   was started locally and has no job of its own), else the same job is re-delivered by BullMQ after the delay;
-- - a failure: FAIL with its error, the attempt ended 'FAIL', every PENDING or QUEUED descendant SKIPPED (naming
--   the failed ancestor), and the workflow settled;
-- - a throttle (p_error_kinds[i] = 'THROTTLED', the NodeService answered THROTTLED; p_retry_delays[i] is its
--   retry_after): QUEUED under a new job after the delay, the attempt ended 'THROTTLED' and not counted against the
--   retry policy (attempt_base + 1), the node's last error kept, a `node.throttled` event, and every key of the node
--   (limit_keys and "capability:<capability>") paused until then in `limits` (a row of its own for a key without a
--   limit), so the scheduler holds the key's other ready nodes and workers hold back its queued ones.
-- What the attempts spent (p_usages) is recorded first (trellis_record_usage).
-- A null lease fails a WAITING node with `wait` instead (WAITING -> FAIL: a rejecting signal, or its timeout with
-- fail_on_timeout; p_retry_delays[i] must be null; its attempt counts one).
-- Locks the workflows in id order (a no-op inside a caller's transaction that holds them). Returns 'retry' {node
-- row fields: workflow_id, id, attempt, capability, queue_gen, retry_policy, delay_ms, new_job} per node retried, 'fail'
-- {workflow_id, id} per node failed, then the rows of trellis_write_events. Commits synchronously.
CREATE OR REPLACE FUNCTION trellis_record_errors(
  p_workflow_ids uuid[], p_node_ids text[], p_leases uuid[], p_error_kinds text[], p_messages text[],
  p_retry_delays integer[], p_new_jobs boolean[], p_usages jsonb[] DEFAULT NULL
)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql
-- Generic plans: planning each statement anew costs more than running it (see README.md).
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  v_ended jsonb;
  v_skipped jsonb;
  v_events jsonb;
BEGIN
  PERFORM 1 FROM workflows WHERE id = ANY (p_workflow_ids) ORDER BY id FOR UPDATE;
  IF p_usages IS NOT NULL THEN
    RETURN QUERY
    SELECT x.kind, x.body FROM trellis_record_usage(p_workflow_ids, p_node_ids, p_leases, p_usages) AS x;
  END IF;
  WITH ended AS (
    UPDATE nodes n
       SET status = CASE WHEN r.delay_ms IS NULL THEN 'FAIL'::node_status ELSE 'QUEUED'::node_status END,
           output = CASE WHEN r.delay_ms IS NULL THEN NULL ELSE n.output END,
           error_kind = CASE WHEN r.error_kind = 'THROTTLED' THEN n.error_kind ELSE r.error_kind::error_kind END,
           error_message = CASE WHEN r.error_kind = 'THROTTLED' THEN n.error_message ELSE r.message END,
           attempt_base = n.attempt_base + (r.error_kind = 'THROTTLED')::int,
           attempt = n.attempt + (r.lease IS NULL)::int, wake_at = NULL,
           lease = NULL, worker_session = NULL, lease_expires_at = NULL,
           queue_gen = n.queue_gen + (r.delay_ms IS NOT NULL
                                      AND (coalesce(r.new_job, false) OR r.error_kind = 'THROTTLED'))::int,
           queued_at = CASE WHEN r.delay_ms IS NULL THEN n.queued_at ELSE now() END,
           finished_at = CASE WHEN r.delay_ms IS NULL THEN now() ELSE n.finished_at END,
           updated_at = now()
      FROM unnest(p_workflow_ids, p_node_ids, p_leases, p_error_kinds, p_messages, p_retry_delays, p_new_jobs)
           WITH ORDINALITY AS r(workflow_id, id, lease, error_kind, message, delay_ms, new_job, ord),
           nodes o
     WHERE n.workflow_id = r.workflow_id AND n.id = r.id
       AND ((r.lease IS NOT NULL AND n.lease = r.lease AND n.status::text = 'RUNNING')
            OR (r.lease IS NULL AND r.delay_ms IS NULL AND n.status::text = 'WAITING' AND n.wait IS NOT NULL))
       AND o.workflow_id = n.workflow_id AND o.id = n.id
    RETURNING n.workflow_id, n.id, n.attempt, n.capability, n.queue_gen, n.retry_policy, n.status, n.priority,
              n.limit_keys, o.started_at, (SELECT wk.id FROM workers wk WHERE wk.session = o.worker_session) AS worker_id,
              CASE WHEN r.error_kind = 'THROTTLED' THEN NULL ELSE n.error_kind END AS error_kind,
              CASE WHEN r.error_kind = 'THROTTLED' THEN NULL ELSE n.error_message END AS error_message,
              r.error_kind = 'THROTTLED' AS throttled, r.message AS throttle_message,
              r.delay_ms, coalesce(r.new_job, false) OR r.error_kind = 'THROTTLED' AS new_job, o.status AS from_status,
              r.ord
  ),
  attempts AS (
    INSERT INTO node_attempts (workflow_id, node_id, attempt, outcome, started_at, worker_id, error_kind,
                               error_message, usage)
    SELECT e.workflow_id, e.id, e.attempt,
           CASE WHEN e.throttled THEN 'THROTTLED'::attempt_outcome
                WHEN e.status = 'FAIL' THEN 'FAIL'::attempt_outcome ELSE 'RETRY'::attempt_outcome END,
           e.started_at, e.worker_id, e.error_kind, coalesce(e.error_message, e.throttle_message),
           coalesce(p_usages[e.ord::int], '{}'::jsonb)
      FROM ended e
  )
  SELECT coalesce(jsonb_agg(to_jsonb(e) ORDER BY e.ord), '[]'::jsonb) INTO v_ended FROM ended e;

  -- Throttles pause every key of their nodes (rows in key order, as every writer of limits).
  INSERT INTO limits AS l (key, configured, throttled_until, throttled_total)
  SELECT t.key, false, max(t.until), count(*)
    FROM (SELECT k AS key, now() + make_interval(secs => (e ->> 'delay_ms')::float8 / 1000) AS until
            FROM jsonb_array_elements(v_ended) AS e,
                 jsonb_array_elements_text((e -> 'limit_keys') || to_jsonb('capability:' || (e ->> 'capability'))) AS k
           WHERE (e ->> 'throttled')::boolean) t
   GROUP BY t.key
   ORDER BY t.key
  ON CONFLICT (key) DO UPDATE
     SET throttled_until = greatest(l.throttled_until, excluded.throttled_until),
         throttled_total = l.throttled_total + excluded.throttled_total, updated_at = now();

  -- The descendants of the failed nodes that have not run: SKIPPED, each naming its first failed ancestor (by id).
  WITH RECURSIVE failed AS (
    SELECT (e ->> 'workflow_id')::uuid AS workflow_id, e ->> 'id' AS id, (e ->> 'ord')::int AS ord
      FROM jsonb_array_elements(v_ended) AS e WHERE e ->> 'status' = 'FAIL'
  ),
  descendants(workflow_id, id, root) AS (
    SELECT e.workflow_id, e.child_id, f.id
      FROM failed f JOIN node_edges e ON e.workflow_id = f.workflow_id AND e.parent_id = f.id
    UNION
    SELECT e.workflow_id, e.child_id, d.root
      FROM descendants d JOIN node_edges e ON e.workflow_id = d.workflow_id AND e.parent_id = d.id
  ),
  first_root AS (
    SELECT DISTINCT ON (d.workflow_id, d.id) d.workflow_id, d.id, d.root
      FROM descendants d ORDER BY d.workflow_id, d.id, d.root
  ),
  skipped AS (
    UPDATE nodes n
       SET status = 'SKIPPED', finished_at = now(), updated_at = now()
      FROM first_root d
     WHERE n.workflow_id = d.workflow_id AND n.id = d.id AND n.status IN ('PENDING', 'QUEUED')
    RETURNING n.workflow_id, n.id, n.capability, d.root
  )
  SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.workflow_id, s.root, s.id), '[]'::jsonb) INTO v_skipped
    FROM skipped s;

  -- Events: each ended attempt in the order given, then the skipped nodes.
  SELECT coalesce(jsonb_agg(ev.e ORDER BY ev.phase, ev.ord), '[]'::jsonb)
    INTO v_events
    FROM (SELECT 1 AS phase, (e ->> 'ord')::bigint AS ord,
                 jsonb_build_object(
                   'workflow_id', e -> 'workflow_id', 'node_id', e -> 'id', 'workflow_status', wf.status,
                   'type', CASE WHEN (e ->> 'throttled')::boolean THEN 'node.throttled'
                                WHEN e ->> 'status' = 'FAIL' THEN 'node.status_changed'
                                ELSE 'node.retry_scheduled' END,
                   'node_status', e -> 'status',
                   'data', CASE WHEN (e ->> 'throttled')::boolean
                                THEN jsonb_build_object('from', 'RUNNING', 'attempt', e -> 'attempt',
                                                        'capability', e -> 'capability',
                                                        'retryAfterMs', e -> 'delay_ms',
                                                        'keys', (e -> 'limit_keys')
                                                                || to_jsonb('capability:' || (e ->> 'capability')),
                                                        'message', e -> 'throttle_message')
                                WHEN e ->> 'status' = 'FAIL'
                                THEN jsonb_build_object('from', e -> 'from_status', 'attempt', e -> 'attempt',
                                                        'capability', e -> 'capability',
                                                        'error', jsonb_build_object('kind', e -> 'error_kind',
                                                                                    'message', e -> 'error_message'))
                                ELSE jsonb_build_object('attempt', e -> 'attempt', 'capability', e -> 'capability',
                                                        'delayMs', e -> 'delay_ms',
                                                        'error', jsonb_build_object('kind', e -> 'error_kind',
                                                                                    'message', e -> 'error_message'))
                           END) AS e
            FROM jsonb_array_elements(v_ended) AS e
            JOIN workflows wf ON wf.id = (e ->> 'workflow_id')::uuid
          UNION ALL
          SELECT 2, x.ord,
                 jsonb_build_object('workflow_id', s -> 'workflow_id', 'type', 'node.status_changed',
                                    'node_id', s -> 'id', 'workflow_status', wf.status, 'node_status', 'SKIPPED',
                                    'data', jsonb_build_object('reason', 'ancestor "' || (s ->> 'root') || '" failed',
                                                               'capability', s -> 'capability'))
            FROM jsonb_array_elements(v_skipped) WITH ORDINALITY AS x(s, ord)
            JOIN workflows wf ON wf.id = (s ->> 'workflow_id')::uuid) AS ev;

  RETURN QUERY SELECT CASE WHEN e ->> 'status' = 'FAIL' THEN 'fail' ELSE 'retry' END, e
                 FROM jsonb_array_elements(v_ended) AS e;
  -- A failed node that held a capped key frees its slot: the scheduler may start a held node.
  RETURN QUERY
  SELECT DISTINCT 'ready', jsonb_build_object('workflow_id', e -> 'workflow_id')
    FROM jsonb_array_elements(v_ended) AS e
   WHERE e ->> 'status' = 'FAIL'
     AND EXISTS (SELECT 1 FROM limits l
                  WHERE l.max_concurrency > 0
                    AND l.key IN (SELECT jsonb_array_elements_text((e -> 'limit_keys')
                                                                   || to_jsonb('capability:' || (e ->> 'capability')))));
  RETURN QUERY SELECT x.kind, x.body FROM trellis_write_events(v_events, NULL, false) AS x;
  RETURN QUERY SELECT x.kind, x.body FROM trellis_settle_workflows(p_workflow_ids) AS x;
END;
$$;
