-- What a node's ExecuteNode call needs, for each given node as stored (in the order given; absent nodes left out):
-- {node (the row), parent_outputs (every parent's, null for a parent without one), has_children, workflow_name,
-- workflow_input, and trace_parent when the workflow has one (tracing on: the parent of the attempt's spans, so no
-- worker reads it separately)}. Read by the start (trellis_start_locked) and by a worker that calls a node before
-- its start is written (trellis_read_queued).
CREATE OR REPLACE FUNCTION trellis_call_bodies(p_workflow_ids uuid[], p_node_ids text[])
RETURNS SETOF jsonb
-- PL/pgSQL, not SQL: its statement's plan is cached per connection (a SQL function's is made at every call).
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  RETURN QUERY
  SELECT jsonb_build_object(
           'node', to_jsonb(n),
           'parent_outputs', (SELECT coalesce(jsonb_object_agg(pid, p.output), '{}'::jsonb)
                                FROM unnest(n.parent_ids) AS pid
                                LEFT JOIN nodes p ON p.workflow_id = n.workflow_id AND p.id = pid),
           'has_children', EXISTS (SELECT 1 FROM node_edges e WHERE e.workflow_id = n.workflow_id AND e.parent_id = n.id),
           'workflow_name', w.name,
           'workflow_input', w.input)
         -- Absent while tracing is off: not a byte more per start.
         || CASE WHEN w.trace_parent IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('trace_parent', w.trace_parent) END
    FROM unnest(p_workflow_ids, p_node_ids) WITH ORDINALITY AS r(workflow_id, id, ord)
    JOIN nodes n ON n.workflow_id = r.workflow_id AND n.id = r.id
    JOIN workflows w ON w.id = n.workflow_id
   ORDER BY r.ord;
END;
$$;

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
-- p_started_ats: when each node's call began, where it began before this start was written (a result recorded with
-- its start: trellis_pass_nodes, or the worker's mixed transaction); null entries (or none) are the clock's time.
-- p_bodies false: a 'started' row {workflow_id, id, lease} per started node instead of its call body (a result
-- recorded with its start needs only the lease).
-- A node one of whose keys a THROTTLED answer paused (limits.throttled_until, libs/db/sql/070_errors.sql) is not
-- started: it goes back to PENDING, held by that key (a `node.held` event), for the scheduler's claim once the pause
-- ends; its job finds it so and is dropped. So a throttled provider sees no call until then.
CREATE OR REPLACE FUNCTION trellis_start_locked(
  p_workflow_ids uuid[], p_node_ids text[], p_queue_gens integer[], p_worker_session uuid, p_notify boolean,
  p_events_before jsonb DEFAULT '[]'::jsonb, p_started_ats timestamptz[] DEFAULT NULL, p_bodies boolean DEFAULT true
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
           lease_expires_at = NULL, started_at = coalesce(r.started_at, clock_timestamp()), updated_at = now()
      FROM unnest(p_workflow_ids, p_node_ids, p_queue_gens, p_started_ats)
             WITH ORDINALITY AS r(workflow_id, id, queue_gen, started_at, ord)
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
  SELECT coalesce((SELECT jsonb_agg(jsonb_build_object('workflow_id', s.workflow_id, 'id', s.id, 'lease', s.lease)
                                     ORDER BY s.ord)
                     FROM started s), '[]'::jsonb),
         coalesce((SELECT jsonb_agg(to_jsonb(ev) - 'ord' ORDER BY ev.workflow_id, ev.ord) FROM ev), '[]'::jsonb),
         coalesce((SELECT jsonb_object_agg(f.id, 'RUNNING') FROM flipped f), '{}'::jsonb)
    INTO v_started, v_events, v_statuses;
  IF p_bodies THEN
    -- Read after the update: the bodies show the nodes as started.
    RETURN QUERY
    SELECT 'node', b
      FROM trellis_call_bodies(ARRAY(SELECT (e ->> 'workflow_id')::uuid FROM jsonb_array_elements(v_started) AS e),
                               ARRAY(SELECT e ->> 'id' FROM jsonb_array_elements(v_started) AS e)) AS b;
  ELSE
    RETURN QUERY SELECT 'started', e FROM jsonb_array_elements(v_started) AS e;
  END IF;
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

-- What a worker reads to call queued nodes before writing their start (the start is then written with the result, in
-- the PASS's transaction: trellis_pass_nodes, or on its own if the call outlasts START_AFTER_MS or ends otherwise).
-- Writes nothing. For each node asked for that is QUEUED under that queue generation (a null one is never), in a
-- workflow that is not finished: a 'node' row, its call body (trellis_call_bodies) as QUEUED; or, when any of its
-- keys has a limit row (a cap, a rate, a usage limit or a THROTTLED pause: a start weighs them), a 'start' row
-- {workflow_id, id}: that node must be started first (trellis_start_nodes). A node asked for twice is read once.
CREATE OR REPLACE FUNCTION trellis_read_queued(p_workflow_ids uuid[], p_node_ids text[], p_queue_gens integer[])
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql STABLE
-- Generic plans: planning each statement anew costs more than running it (see README.md).
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  v_found jsonb;
BEGIN
  SELECT coalesce(jsonb_agg(jsonb_build_object('workflow_id', q.workflow_id, 'id', q.id, 'limited', q.limited)
                            ORDER BY q.ord), '[]'::jsonb)
    INTO v_found
    FROM (SELECT DISTINCT ON (n.workflow_id, n.id) n.workflow_id, n.id, r.ord,
                 EXISTS (SELECT 1 FROM limits l WHERE l.key = ANY (n.limit_keys || ('capability:' || n.capability)))
                   AS limited
            FROM unnest(p_workflow_ids, p_node_ids, p_queue_gens) WITH ORDINALITY AS r(workflow_id, id, queue_gen, ord)
            JOIN nodes n ON n.workflow_id = r.workflow_id AND n.id = r.id AND n.status::text = 'QUEUED'
                        AND n.queue_gen = r.queue_gen
            JOIN workflows w ON w.id = n.workflow_id AND NOT trellis_workflow_finished(w.status)
           ORDER BY n.workflow_id, n.id, r.ord) q;
  RETURN QUERY
  SELECT 'start', e - 'limited' FROM jsonb_array_elements(v_found) AS e WHERE (e ->> 'limited')::boolean;
  RETURN QUERY
  SELECT 'node', b
    FROM trellis_call_bodies(
           ARRAY(SELECT (e ->> 'workflow_id')::uuid FROM jsonb_array_elements(v_found) AS e
                  WHERE NOT (e ->> 'limited')::boolean),
           ARRAY(SELECT e ->> 'id' FROM jsonb_array_elements(v_found) AS e WHERE NOT (e ->> 'limited')::boolean)) AS b;
END;
$$;
