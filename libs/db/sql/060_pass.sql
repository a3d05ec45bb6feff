-- RUNNING -> PASS: the one implementation of a node's success, for a batch of results (with or without edits: a
-- result's edits are applied first, in the same transaction, by the caller). Under their leases, with everything
-- that follows in the same transaction. A null lease completes a WAITING node with `wait` instead (WAITING -> PASS:
-- a signal, or its timeout with its timeout_output; its attempt counts one). A null lease with a p_queue_gens entry
-- is the result of a call a worker made before writing its start (trellis_read_queued): QUEUED -> RUNNING is
-- written first (trellis_start_locked, started at its p_started_ats entry), then the PASS:
-- - what the attempts spent, first (p_usages, trellis_record_usage: the workflow's usage, usage-counted rate limits,
--   and a budget reached pauses the workflow before anything is dispatched);
-- - the attempts' endings (node_attempts);
-- - each child's pending_parents decremented; when p_dispatch and its workflow is PENDING or RUNNING, a child that
--   became ready is QUEUED at once (eager dispatch: the caller enqueues its job after commit), unless one of its
--   keys has a limit (flow control is the scheduler's claim: it is left PENDING and the scheduler woken), or it
--   waits (a `wait`, or a `not_before` still ahead: the claim makes it WAITING);
-- - eager local start: for each result whose p_start_local entry is true, one of the children it made ready (the
--   first by id) of the passed node's own capability, when p_capabilities has it, is started at once for the worker
--   of p_worker_session (trellis_start_locked): that worker runs it next in the same slot, without a queue round trip
--   (the same capability, so the worker's concurrency per capability holds);
-- - each workflow settled (trellis_settle_workflows); the events written (PASSes, children queued, starts, settle).
-- Locks the workflows in id order (a no-op when the caller's transaction already holds them). Returns 'pass'
-- {workflow_id, id, attempt, capability} per node passed (the others were stale), 'queued' {workflow_id, id,
-- capability, status, queue_gen, retry_policy} per child to enqueue, 'local' {workflow_id, id, parent_id} per
-- child started locally and the passed node it was started for, 'node' per child started locally (as
-- trellis_start_locked), 'ready' {workflow_id} per workflow with a ready child left to the scheduler, and the rows of trellis_write_events. Commits synchronously: its caller sends
-- the event notifications after commit.
CREATE OR REPLACE FUNCTION trellis_pass_nodes(
  p_workflow_ids uuid[], p_node_ids text[], p_leases uuid[], p_outputs jsonb[], p_dispatch boolean,
  p_start_local boolean[], p_worker_session uuid, p_capabilities text[], p_usages jsonb[] DEFAULT NULL,
  p_queue_gens integer[] DEFAULT NULL, p_started_ats timestamptz[] DEFAULT NULL
)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql
-- Generic plans: planning each statement anew costs more than running it (see README.md).
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  v_rows jsonb;
  v_events jsonb;
  v_local_wf uuid[];
  v_local_ids text[];
  v_limited boolean;
  v_leases uuid[] := p_leases;
  v_unstarted_wf uuid[];
  v_unstarted_ids text[];
  v_unstarted_gens integer[];
  v_unstarted_ats timestamptz[];
  v_row record;
  v_started jsonb := '{}'::jsonb;
  v_settle uuid[];
BEGIN
  PERFORM 1 FROM workflows WHERE id = ANY (p_workflow_ids) ORDER BY id FOR UPDATE;
  v_limited := EXISTS (SELECT 1 FROM limits);
  -- Results of calls made before their start was written (a null lease with a queue generation): the start first,
  -- its one implementation and its events, then these PASSes under the leases it gave. A node no longer QUEUED under
  -- that generation is not started, and its result is stale (a lease that matches nothing).
  IF p_queue_gens IS NOT NULL THEN
    SELECT array_agg(u.workflow_id ORDER BY u.ord), array_agg(u.id ORDER BY u.ord),
           array_agg(u.queue_gen ORDER BY u.ord), array_agg(u.started_at ORDER BY u.ord)
      INTO v_unstarted_wf, v_unstarted_ids, v_unstarted_gens, v_unstarted_ats
      FROM unnest(p_workflow_ids, p_node_ids, p_leases, p_queue_gens, p_started_ats)
             WITH ORDINALITY AS u(workflow_id, id, lease, queue_gen, started_at, ord)
     WHERE u.lease IS NULL AND u.queue_gen IS NOT NULL;
  END IF;
  IF v_unstarted_ids IS NOT NULL THEN
    FOR v_row IN
      SELECT x.kind, x.body
        FROM trellis_start_locked(v_unstarted_wf, v_unstarted_ids, v_unstarted_gens, p_worker_session, false,
                                  '[]'::jsonb, v_unstarted_ats, false) AS x
    LOOP
      IF v_row.kind = 'started' THEN
        v_started := v_started || jsonb_build_object((v_row.body ->> 'workflow_id') || '/' || (v_row.body ->> 'id'),
                                                     v_row.body -> 'lease');
      ELSE
        kind := v_row.kind;
        body := v_row.body;
        RETURN NEXT;
      END IF;
    END LOOP;
    SELECT array_agg(CASE WHEN u.lease IS NULL AND u.queue_gen IS NOT NULL
                          THEN coalesce((v_started ->> (u.workflow_id || '/' || u.id))::uuid, gen_random_uuid())
                          ELSE u.lease END ORDER BY u.ord)
      INTO v_leases
      FROM unnest(p_workflow_ids, p_node_ids, p_leases, p_queue_gens) WITH ORDINALITY AS u(workflow_id, id, lease, queue_gen, ord);
  END IF;
  IF p_usages IS NOT NULL THEN
    RETURN QUERY
    SELECT x.kind, x.body FROM trellis_record_usage(p_workflow_ids, p_node_ids, v_leases, p_usages) AS x;
  END IF;
  -- A passing node is never a child of another in the batch: a child cannot run before its parents passed.
  WITH passed AS (
    UPDATE nodes n
       SET status = 'PASS', output = r.output, error_kind = NULL, error_message = NULL, lease = NULL,
           worker_session = NULL, lease_expires_at = NULL, wake_at = NULL, attempt = n.attempt + (r.lease IS NULL)::int,
           finished_at = now(), updated_at = now()
      FROM unnest(p_workflow_ids, p_node_ids, v_leases, p_outputs) WITH ORDINALITY AS r(workflow_id, id, lease, output, ord)
     WHERE n.workflow_id = r.workflow_id AND n.id = r.id
       AND ((r.lease IS NOT NULL AND n.lease = r.lease AND n.status::text = 'RUNNING')
            OR (r.lease IS NULL AND n.status::text = 'WAITING' AND n.wait IS NOT NULL))
    RETURNING n.workflow_id, n.id, n.attempt, n.capability, n.limit_keys, n.started_at,
              CASE WHEN r.lease IS NULL THEN 'WAITING' ELSE 'RUNNING' END AS from_status,
              (SELECT wk.id FROM workers wk WHERE wk.session = p_worker_session) AS worker_id, r.ord
  ),
  ended AS (
    INSERT INTO node_attempts (workflow_id, node_id, attempt, outcome, started_at, worker_id, usage)
    SELECT p.workflow_id, p.id, p.attempt, 'PASS', p.started_at, p.worker_id,
           coalesce(p_usages[p.ord::int], '{}'::jsonb)
      FROM passed p
  ),
  decrements AS (
    SELECT e.workflow_id, e.child_id, count(*)::int AS n, p_dispatch AND w.status IN ('PENDING', 'RUNNING') AS now_ok,
           v_limited AND EXISTS (SELECT 1 FROM nodes c JOIN limits l ON l.key = ANY (c.limit_keys || ('capability:' || c.capability))
                                  WHERE c.workflow_id = e.workflow_id AND c.id = e.child_id) AS limited
      FROM node_edges e
      JOIN passed p ON e.workflow_id = p.workflow_id AND e.parent_id = p.id
      JOIN workflows w ON w.id = e.workflow_id
     GROUP BY e.workflow_id, e.child_id, w.status
  ),
  decided AS (
    SELECT d.workflow_id, d.child_id, d.n, d.now_ok AND NOT d.limited AS now_ok FROM decrements d
  ),
  children AS (
    UPDATE nodes c
       SET pending_parents = c.pending_parents - d.n,
           status = CASE WHEN d.now_ok AND c.status = 'PENDING' AND c.pending_parents = d.n
                          AND c.wait IS NULL AND coalesce(c.not_before <= now(), true)
                         THEN 'QUEUED'::node_status ELSE c.status END,
           queue_gen = CASE WHEN d.now_ok AND c.status = 'PENDING' AND c.pending_parents = d.n
                          AND c.wait IS NULL AND coalesce(c.not_before <= now(), true)
                            THEN c.queue_gen + 1 ELSE c.queue_gen END,
           queued_at = CASE WHEN d.now_ok AND c.status = 'PENDING' AND c.pending_parents = d.n
                          AND c.wait IS NULL AND coalesce(c.not_before <= now(), true)
                            THEN now() ELSE c.queued_at END,
           updated_at = now()
      FROM decided d
     WHERE c.workflow_id = d.workflow_id AND c.id = d.child_id
    RETURNING c.*
  ),
  ready AS (
    SELECT c.* FROM children c WHERE c.pending_parents = 0 AND c.status IN ('PENDING', 'QUEUED')
  ),
  local_start AS (
    -- One child per result that asked (the first by id), each child for one result only (the first by id); none
    -- without a worker session to start it for. Matched by the children's parent_ids, not their edges: a CTE has no
    -- index, and a join of each edge to `ready` cost a 1,000-node fan-out a million comparisons (220 ms).
    SELECT DISTINCT ON (l.workflow_id, l.id) l.workflow_id, l.id, l.parent_id
      FROM (SELECT DISTINCT ON (p.workflow_id, p.id) c.workflow_id, c.id, p.id AS parent_id
              FROM passed p
              JOIN ready c ON c.workflow_id = p.workflow_id AND p.id = ANY (c.parent_ids)
             WHERE coalesce(p_start_local[p.ord::int], false) AND p_worker_session IS NOT NULL
               AND c.status = 'QUEUED'
               AND c.capability = p.capability AND c.capability = ANY (coalesce(p_capabilities, '{}'::text[]))
             ORDER BY p.workflow_id, p.id, c.id) l
     ORDER BY l.workflow_id, l.id, l.parent_id
  )
  SELECT jsonb_build_object(
           'passed', coalesce((SELECT jsonb_agg(jsonb_build_object('workflow_id', p.workflow_id, 'id', p.id,
                                                                   'attempt', p.attempt, 'capability', p.capability)
                                                ORDER BY p.ord) FROM passed p), '[]'::jsonb),
           'ready', coalesce((SELECT jsonb_agg(jsonb_build_object('workflow_id', c.workflow_id, 'id', c.id,
                                                                  'capability', c.capability, 'status', c.status,
                                                                  'queue_gen', c.queue_gen, 'priority', c.priority,
                                                                  'retry_policy', c.retry_policy)
                                               ORDER BY c.workflow_id, c.id) FROM ready c), '[]'::jsonb),
           'local', coalesce((SELECT jsonb_agg(jsonb_build_object('workflow_id', l.workflow_id, 'id', l.id,
                                                                  'parent_id', l.parent_id))
                                FROM local_start l), '[]'::jsonb),
           -- Workflows of passed nodes that held a capped key: the slot they free may start a held node.
           'freed', coalesce((SELECT jsonb_agg(DISTINCT p.workflow_id) FROM passed p
                               WHERE v_limited
                                 AND EXISTS (SELECT 1 FROM limits l
                                              WHERE l.key = ANY (p.limit_keys || ('capability:' || p.capability))
                                                AND l.max_concurrency > 0)), '[]'::jsonb)),
         -- Events: the PASSes in the order given, then the children queued (by id).
         coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'workflow_id', p.workflow_id, 'type', 'node.status_changed', 'node_id', p.id,
                            'workflow_status', w.status, 'node_status', 'PASS',
                            'data', jsonb_build_object('from', p.from_status, 'attempt', p.attempt,
                                                       'capability', p.capability)) ORDER BY p.ord)
                     FROM passed p JOIN workflows w ON w.id = p.workflow_id), '[]'::jsonb)
         || coalesce((SELECT jsonb_agg(jsonb_build_object(
                               'workflow_id', c.workflow_id, 'type', 'node.status_changed', 'node_id', c.id,
                               'workflow_status', w.status, 'node_status', 'QUEUED',
                               'data', jsonb_build_object('from', 'PENDING', 'capability', c.capability))
                             ORDER BY c.workflow_id, c.id)
                        FROM ready c JOIN workflows w ON w.id = c.workflow_id
                       WHERE c.status = 'QUEUED'), '[]'::jsonb)
    INTO v_rows, v_events;

  RETURN QUERY SELECT 'pass', e FROM jsonb_array_elements(v_rows -> 'passed') AS e;
  RETURN QUERY SELECT 'local', e FROM jsonb_array_elements(v_rows -> 'local') AS e;
  SELECT coalesce(array_agg((l ->> 'workflow_id')::uuid), '{}'), coalesce(array_agg(l ->> 'id'), '{}')
    INTO v_local_wf, v_local_ids
    FROM jsonb_array_elements(v_rows -> 'local') AS l;
  IF cardinality(v_local_ids) > 0 THEN
    -- The starts' events follow these in one trellis_write_events call.
    RETURN QUERY SELECT x.kind, x.body
                   FROM trellis_start_locked(v_local_wf, v_local_ids,
                                             array_fill(NULL::integer, ARRAY[cardinality(v_local_ids)]),
                                             p_worker_session, false, v_events) AS x;
  ELSE
    RETURN QUERY SELECT x.kind, x.body FROM trellis_write_events(v_events, NULL, false) AS x;
  END IF;
  RETURN QUERY
  SELECT 'queued', e FROM jsonb_array_elements(v_rows -> 'ready') AS e
   WHERE e ->> 'status' = 'QUEUED'
     AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_rows -> 'local') l
                      WHERE l ->> 'workflow_id' = e ->> 'workflow_id' AND l ->> 'id' = e ->> 'id');
  -- A workflow with a child made ready here (QUEUED, started, or left PENDING for the scheduler) has an unfinished
  -- node: it cannot settle, and the check is skipped (a chain's every PASS).
  SELECT coalesce(array_agg(DISTINCT wid), '{}')
    INTO v_settle
    FROM unnest(p_workflow_ids) AS wid
   WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_rows -> 'ready') AS e WHERE (e ->> 'workflow_id')::uuid = wid);
  IF cardinality(v_settle) > 0 THEN
    RETURN QUERY SELECT x.kind, x.body FROM trellis_settle_workflows(v_settle) AS x;
  END IF;
  -- Ready children of a workflow that did not dispatch now (PAUSED, without p_dispatch, or held back by a limit),
  -- and slots freed on capped keys: the scheduler's.
  RETURN QUERY
  SELECT DISTINCT 'ready', jsonb_build_object('workflow_id', w.id)
    FROM (SELECT e -> 'workflow_id' AS id FROM jsonb_array_elements(v_rows -> 'ready') AS e
           WHERE e ->> 'status' = 'PENDING'
          UNION
          SELECT f FROM jsonb_array_elements(v_rows -> 'freed') AS f) w;
END;
$$;
