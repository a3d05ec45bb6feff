-- QUEUED -> RUNNING: the one implementation of a node's start, used by a worker's job (trellis_start_nodes) and by
-- a PASS that hands a ready child to the worker that sent it (trellis_pass_nodes, eager local start).
--
-- With the workflows locked by the caller: each node asked for that is QUEUED (and, when its p_queue_gens entry is
-- not null, still of that queue generation: a node queued again since, under a newer job, is left to that job) in a
-- workflow that is not finished gets attempt + 1, a fresh lease (the fencing token of this attempt) and the worker's
-- session (liveness is the session's heartbeat: nothing per node is renewed). A PENDING workflow becomes RUNNING
-- (that event first). started_at is the clock's time, not the transaction's start: a transaction that waited for
-- the workflow's lock must not start a child at a time before its other parents (committed meanwhile) finished.
-- Returns a 'node' row per started node: {node (the row), parent_outputs, has_children,
-- workflow_name, workflow_input, and trace_parent when the workflow has one (tracing on: the parent of the attempt's
-- spans, so no worker reads it separately)}, a node asked for twice is started once; then what trellis_write_events
-- returns.
-- p_events_before: events of the caller's to write first, in the same trellis_write_events call (the PASS's).
-- A node one of whose keys a THROTTLED answer paused (limits.throttled_until, libs/db/sql/070_errors.sql) is not
-- started: it goes back to PENDING, held by that key (a `node.held` event), for the scheduler's claim once the pause
-- ends; its job finds it so and is dropped. So a throttled provider sees no call until then.
CREATE OR REPLACE FUNCTION trellis_start_locked(
  p_workflow_ids uuid[], p_node_ids text[], p_queue_gens integer[], p_worker_session uuid, p_notify boolean,
  p_events_before jsonb DEFAULT '[]'::jsonb
)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  v_started jsonb;
  v_events jsonb;
  v_statuses jsonb;
  v_held jsonb := '[]'::jsonb;
BEGIN
  IF EXISTS (SELECT 1 FROM limits WHERE throttled_until > clock_timestamp()) THEN
    WITH held AS (
      UPDATE nodes n
         SET status = 'PENDING', queued_at = NULL, updated_at = now(),
             held_by = (SELECT l.key FROM limits l
                         WHERE l.throttled_until > clock_timestamp()
                           AND l.key = ANY (n.limit_keys || ('capability:' || n.capability))
                         ORDER BY l.key LIMIT 1)
        FROM unnest(p_workflow_ids, p_node_ids, p_queue_gens) AS r(workflow_id, id, queue_gen),
             workflows wf
       WHERE n.workflow_id = r.workflow_id AND n.id = r.id AND n.status::text = 'QUEUED'
         AND (r.queue_gen IS NULL OR n.queue_gen = r.queue_gen)
         AND wf.id = n.workflow_id AND NOT trellis_workflow_finished(wf.status)
         AND EXISTS (SELECT 1 FROM limits l
                      WHERE l.throttled_until > clock_timestamp()
                        AND l.key = ANY (n.limit_keys || ('capability:' || n.capability)))
      RETURNING n.workflow_id, n.id, n.held_by, wf.status AS workflow_status
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
             'workflow_id', h.workflow_id, 'type', 'node.held', 'node_id', h.id, 'workflow_status', h.workflow_status,
             'node_status', 'PENDING',
             'data', jsonb_build_object('from', 'QUEUED', 'key', h.held_by, 'reason', 'throttled',
                                        'until', (SELECT l.throttled_until FROM limits l WHERE l.key = h.held_by)))
             ORDER BY h.workflow_id, h.id), '[]'::jsonb)
      INTO v_held
      FROM held h;
  END IF;
  WITH w AS (
    SELECT wf.id, wf.status, wf.name, wf.input, wf.trace_parent
      FROM workflows wf
     WHERE wf.id = ANY (p_workflow_ids) AND NOT trellis_workflow_finished(wf.status)
  ),
  started AS (
    UPDATE nodes n
       SET status = 'RUNNING', attempt = n.attempt + 1, lease = gen_random_uuid(), worker_session = p_worker_session,
           lease_expires_at = NULL, started_at = clock_timestamp(), updated_at = now()
      FROM unnest(p_workflow_ids, p_node_ids, p_queue_gens) WITH ORDINALITY AS r(workflow_id, id, queue_gen, ord)
     -- status compared as text: see "Plans" in README.md (the primary key, not a status index).
     WHERE n.workflow_id = r.workflow_id AND n.id = r.id AND n.status::text = 'QUEUED'
       AND (r.queue_gen IS NULL OR n.queue_gen = r.queue_gen)
       AND r.workflow_id IN (SELECT w.id FROM w)
    RETURNING n.*, r.ord
  ),
  flipped AS (
    SELECT w.id FROM w
     WHERE w.status = 'PENDING' AND EXISTS (SELECT 1 FROM started s WHERE s.workflow_id = w.id)
  ),
  ev AS (
    SELECT f.id AS workflow_id, 0::bigint AS ord, 'workflow.status_changed' AS type, NULL::text AS node_id,
           'RUNNING'::workflow_status AS workflow_status, NULL::node_status AS node_status,
           jsonb_build_object('from', 'PENDING') AS data
      FROM flipped f
    UNION ALL
    SELECT s.workflow_id, s.ord, 'node.status_changed', s.id,
           CASE WHEN w.status = 'PENDING' THEN 'RUNNING'::workflow_status ELSE w.status END, 'RUNNING'::node_status,
           jsonb_build_object('from', 'QUEUED', 'attempt', s.attempt, 'capability', s.capability)
      FROM started s JOIN w ON w.id = s.workflow_id
  )
  SELECT coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'node', to_jsonb(s) - 'ord',
                            'parent_outputs', (SELECT coalesce(jsonb_object_agg(pid, p.output), '{}'::jsonb)
                                                 FROM unnest(s.parent_ids) AS pid
                                                 LEFT JOIN nodes p ON p.workflow_id = s.workflow_id AND p.id = pid),
                            'has_children', EXISTS (SELECT 1 FROM node_edges e
                                                     WHERE e.workflow_id = s.workflow_id AND e.parent_id = s.id),
                            'workflow_name', w.name,
                            'workflow_input', w.input)
                          -- Absent while tracing is off: not a byte more per start.
                          || CASE WHEN w.trace_parent IS NULL THEN '{}'::jsonb
                                  ELSE jsonb_build_object('trace_parent', w.trace_parent) END
                          ORDER BY s.ord)
                     FROM started s JOIN w ON w.id = s.workflow_id), '[]'::jsonb),
         coalesce((SELECT jsonb_agg(to_jsonb(ev) - 'ord' ORDER BY ev.workflow_id, ev.ord) FROM ev), '[]'::jsonb),
         coalesce((SELECT jsonb_object_agg(f.id, 'RUNNING') FROM flipped f), '{}'::jsonb)
    INTO v_started, v_events, v_statuses;
  RETURN QUERY SELECT 'node', e FROM jsonb_array_elements(v_started) AS e;
  RETURN QUERY SELECT x.kind, x.body
                 FROM trellis_write_events(coalesce(p_events_before, '[]'::jsonb) || v_held || v_events, v_statuses,
                                           p_notify)
                   AS x;
END;
$$;

-- A worker's starts, a whole transaction in one statement: locks the workflows in id order (like every writer) and
-- starts the nodes (trellis_start_locked). Commits without waiting for the WAL flush: a lost start is redone (the
-- node is QUEUED again and its job re-delivered), so it NOTIFYs from inside.
CREATE OR REPLACE FUNCTION trellis_start_nodes(
  p_workflow_ids uuid[], p_node_ids text[], p_queue_gens integer[], p_worker_session uuid
)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql
-- Generic plans: planning each statement anew costs more than running it (see README.md).
SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  PERFORM 1 FROM workflows WHERE id = ANY (p_workflow_ids) ORDER BY id FOR UPDATE;
  RETURN QUERY SELECT x.kind, x.body
                 FROM trellis_start_locked(p_workflow_ids, p_node_ids, p_queue_gens, p_worker_session, true) AS x;
END;
$$;
