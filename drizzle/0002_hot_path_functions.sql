-- The three transactions every node goes through, the scheduler's claim, the worker's start and a success without
-- edits, as server-side functions: each is one round trip instead of four to seven, so a workflow's row lock is held
-- for the time PostgreSQL takes to run the statements, not for the client's round trips. They do what
-- PgStateManager's TypeScript transactions (which stay for every other path) do, with the same events; the tests of
-- libs/db and the apps hold them to it. Each returns rows of (kind, body): 'event' rows are the events written,
-- 'workflow' rows {id, status} the workflows updated; the other kinds are described with each function.
--
-- NOTIFY: the claim and the start send their `trellis_events` notifications themselves (`<workflow>:<last
-- sequence>`, see libs/db/src/channels.ts). A NOTIFY holds PostgreSQL's database-wide notify lock from the commit's
-- start to its end; these two commit without waiting for the WAL flush, so that is short, and it saves a statement.
-- The pass commits synchronously (a flush under that lock would serialise every notifying commit), so its caller
-- sends its notifications after the commit.

-- The end of each: writes events numbered by the caller from the locked workflows' event_seq (p_events: an array of
-- {workflow_id, sequence, type, node_id, workflow_status, node_status, data}), moves each workflow's event_seq to
-- its last sequence and its status to p_statuses[id] when given (finished_at set once it is SUCCEEDED, FAILED or
-- CANCELLED), and NOTIFYs `trellis_events` when p_notify.
CREATE OR REPLACE FUNCTION trellis_write_events(p_events jsonb, p_statuses jsonb, p_notify boolean)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql AS $$
BEGIN
  RETURN QUERY
  WITH ev AS (
    SELECT e.* FROM jsonb_to_recordset(p_events)
      AS e(workflow_id uuid, sequence bigint, type text, node_id text, workflow_status workflow_status,
           node_status node_status, data jsonb)
  ),
  inserted AS (
    INSERT INTO workflow_events (workflow_id, sequence, type, node_id, workflow_status, node_status, data)
    SELECT ev.workflow_id, ev.sequence, ev.type, ev.node_id, ev.workflow_status, ev.node_status, ev.data FROM ev
    RETURNING workflow_events.workflow_id, workflow_events.sequence, workflow_events.type, workflow_events.node_id,
              workflow_events.workflow_status, workflow_events.node_status, workflow_events.data, workflow_events.time
  ),
  bumped AS (
    UPDATE workflows wf
       SET event_seq = c.last_sequence,
           status = coalesce((p_statuses ->> wf.id::text)::workflow_status, wf.status),
           finished_at = CASE WHEN coalesce((p_statuses ->> wf.id::text)::workflow_status, wf.status)
                                   IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
                              THEN coalesce(wf.finished_at, now()) END,
           updated_at = now()
      FROM (SELECT ev.workflow_id, max(ev.sequence) AS last_sequence FROM ev GROUP BY ev.workflow_id) c
     WHERE wf.id = c.workflow_id
    RETURNING wf.id, wf.status, wf.event_seq
  )
  SELECT 'event', to_jsonb(i) FROM inserted i
  UNION ALL
  SELECT 'workflow', jsonb_build_object('id', b.id, 'status', b.status)
    FROM bumped b
    LEFT JOIN LATERAL (SELECT pg_notify('trellis_events', b.id::text || ':' || b.event_seq::text) WHERE p_notify)
           AS notified ON true;
END;
$$;
--> statement-breakpoint

-- QUEUED -> RUNNING under fresh leases. Workflows are locked first, in id order, like every writer does; a finished
-- workflow's nodes are not started. Commits without waiting for the WAL flush: a lost start is redone (the node is
-- QUEUED again and its job re-delivered). Returns a 'node' row per started node: {node, parent_outputs,
-- workflow_name, workflow_input}; a node asked for twice is started once. p_queue_gens holds each job's queue
-- generation (null: any): a node queued again since that job was added (the reconciler gave it a new job) is left
-- to its new job.
CREATE OR REPLACE FUNCTION trellis_start_nodes(
  p_workflow_ids uuid[], p_node_ids text[], p_queue_gens integer[], p_lease_secs double precision
)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  v_started jsonb;
  v_events jsonb;
  v_statuses jsonb;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  PERFORM 1 FROM workflows WHERE id = ANY (p_workflow_ids) ORDER BY id FOR UPDATE;
  WITH w AS (
    SELECT wf.id, wf.status, wf.event_seq, wf.name, wf.input
      FROM workflows wf
     WHERE wf.id = ANY (p_workflow_ids) AND wf.status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
  ),
  started AS (
    UPDATE nodes n
       SET status = 'RUNNING', attempt = n.attempt + 1, lease = gen_random_uuid(),
           lease_expires_at = now() + make_interval(secs => p_lease_secs),
           started_at = now(), updated_at = now()
      FROM unnest(p_workflow_ids, p_node_ids, p_queue_gens) WITH ORDINALITY AS r(workflow_id, id, queue_gen, ord)
     WHERE n.workflow_id = r.workflow_id AND n.id = r.id AND n.status = 'QUEUED'
       AND (r.queue_gen IS NULL OR n.queue_gen = r.queue_gen)
       AND r.workflow_id IN (SELECT w.id FROM w)
    RETURNING n.*, r.ord
  ),
  numbered AS (
    SELECT s.workflow_id, s.id, s.attempt, s.capability,
           row_number() OVER (PARTITION BY s.workflow_id ORDER BY s.ord) AS k
      FROM started s
  ),
  flipped AS (
    -- A PENDING workflow becomes RUNNING with its first started node: that event comes first.
    SELECT w.id, w.event_seq FROM w
     WHERE w.status = 'PENDING' AND EXISTS (SELECT 1 FROM started s WHERE s.workflow_id = w.id)
  ),
  ev AS (
    SELECT f.id AS workflow_id, f.event_seq + 1 AS sequence, 'workflow.status_changed' AS type, NULL::text AS node_id,
           'RUNNING'::workflow_status AS workflow_status, NULL::node_status AS node_status,
           jsonb_build_object('from', 'PENDING') AS data
      FROM flipped f
    UNION ALL
    SELECT c.workflow_id, w.event_seq + (w.status = 'PENDING')::int + c.k, 'node.status_changed', c.id,
           CASE WHEN w.status = 'PENDING' THEN 'RUNNING'::workflow_status ELSE w.status END, 'RUNNING'::node_status,
           jsonb_build_object('from', 'QUEUED', 'attempt', c.attempt, 'capability', c.capability)
      FROM numbered c JOIN w ON w.id = c.workflow_id
  )
  SELECT coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'node', to_jsonb(s) - 'ord',
                            'parent_outputs', (SELECT coalesce(jsonb_object_agg(pid, p.output), '{}'::jsonb)
                                                 FROM unnest(s.parent_ids) AS pid
                                                 LEFT JOIN nodes p ON p.workflow_id = s.workflow_id AND p.id = pid),
                            'workflow_name', w.name,
                            'workflow_input', w.input))
                     FROM started s JOIN w ON w.id = s.workflow_id), '[]'::jsonb),
         coalesce((SELECT jsonb_agg(to_jsonb(ev)) FROM ev), '[]'::jsonb),
         coalesce((SELECT jsonb_object_agg(f.id, 'RUNNING') FROM flipped f), '{}'::jsonb)
    INTO v_started, v_events, v_statuses;
  RETURN QUERY SELECT 'node', e FROM jsonb_array_elements(v_started) AS e;
  RETURN QUERY SELECT x.kind, x.body FROM trellis_write_events(v_events, v_statuses, true) AS x;
END;
$$;
--> statement-breakpoint

-- RUNNING -> PASS under their leases for successes without edits, with everything that follows in the same
-- transaction: the attempts' endings, each child's pending_parents decremented, the children that became ready
-- QUEUED at once when p_dispatch and their workflow is PENDING or RUNNING (eager dispatch), each workflow settled
-- (SUCCEEDED or FAILED once nothing can run), the events numbered and the workflow rows updated. Returns
-- 'pass' {workflow_id, id, attempt, capability} per node passed (the others were stale), 'queued' (a node row) per
-- child dispatched, and 'ready' {workflow_id} per workflow with a ready child left to the scheduler.
CREATE OR REPLACE FUNCTION trellis_pass_nodes(
  p_workflow_ids uuid[], p_node_ids text[], p_leases uuid[], p_outputs jsonb[], p_dispatch boolean
)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  v_rows jsonb;
  v_settled jsonb;
  v_events jsonb;
BEGIN
  PERFORM 1 FROM workflows WHERE id = ANY (p_workflow_ids) ORDER BY id FOR UPDATE;
  -- A passing node is never a child of another in the batch: a child cannot run before its parents passed.
  WITH passed AS (
    UPDATE nodes n
       SET status = 'PASS', output = r.output, error_kind = NULL, error_message = NULL, lease = NULL,
           lease_expires_at = NULL, finished_at = now(), updated_at = now()
      FROM unnest(p_workflow_ids, p_node_ids, p_leases, p_outputs) WITH ORDINALITY AS r(workflow_id, id, lease, output, ord)
     WHERE n.workflow_id = r.workflow_id AND n.id = r.id AND n.lease = r.lease AND n.status = 'RUNNING'
    RETURNING n.workflow_id, n.id, n.attempt, n.capability, r.ord
  ),
  ended AS (
    INSERT INTO node_attempts (workflow_id, node_id, attempt, outcome)
    SELECT p.workflow_id, p.id, p.attempt, 'PASS' FROM passed p
  ),
  decrements AS (
    SELECT e.workflow_id, e.child_id, count(*)::int AS n, p_dispatch AND w.status IN ('PENDING', 'RUNNING') AS now_ok
      FROM node_edges e
      JOIN passed p ON e.workflow_id = p.workflow_id AND e.parent_id = p.id
      JOIN workflows w ON w.id = e.workflow_id
     GROUP BY e.workflow_id, e.child_id, w.status
  ),
  children AS (
    UPDATE nodes c
       SET pending_parents = c.pending_parents - d.n,
           status = CASE WHEN d.now_ok AND c.status = 'PENDING' AND c.pending_parents = d.n
                         THEN 'QUEUED'::node_status ELSE c.status END,
           queue_gen = CASE WHEN d.now_ok AND c.status = 'PENDING' AND c.pending_parents = d.n
                            THEN c.queue_gen + 1 ELSE c.queue_gen END,
           queued_at = CASE WHEN d.now_ok AND c.status = 'PENDING' AND c.pending_parents = d.n
                            THEN now() ELSE c.queued_at END,
           updated_at = now()
      FROM decrements d
     WHERE c.workflow_id = d.workflow_id AND c.id = d.child_id
    RETURNING c.*
  )
  SELECT jsonb_build_object(
           'passed', coalesce((SELECT jsonb_agg(jsonb_build_object('workflow_id', p.workflow_id, 'id', p.id,
                                                                   'attempt', p.attempt, 'capability', p.capability)
                                                ORDER BY p.ord) FROM passed p), '[]'::jsonb),
           'children', coalesce((SELECT jsonb_agg(to_jsonb(c) ORDER BY c.workflow_id, c.id)
                                   FROM children c WHERE c.pending_parents = 0 AND c.status IN ('PENDING', 'QUEUED')),
                                '[]'::jsonb))
    INTO v_rows;

  -- Settle: a workflow with nothing left to run is FAILED when a node is FAIL, else SUCCEEDED. The FAIL check
  -- scans the workflow's nodes, so it runs only once nothing is unfinished (CASE is lazy).
  SELECT coalesce(jsonb_object_agg(s.id, s.to_status), '{}'::jsonb)
    INTO v_settled
    FROM (SELECT w.id,
                 CASE WHEN EXISTS (SELECT 1 FROM nodes WHERE workflow_id = w.id AND status IN ('PENDING', 'QUEUED', 'RUNNING'))
                      THEN NULL
                      WHEN EXISTS (SELECT 1 FROM nodes WHERE workflow_id = w.id AND status = 'FAIL') THEN 'FAILED'
                      ELSE 'SUCCEEDED' END AS to_status
            FROM workflows w
           WHERE w.id IN (SELECT (e ->> 'workflow_id')::uuid FROM jsonb_array_elements(v_rows -> 'passed') e)
             AND w.status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')) s
   WHERE s.to_status IS NOT NULL;

  -- Events: the PASSes, then the children queued, then the workflow's new status, numbered per workflow.
  WITH w AS (
    SELECT wf.id, wf.status, wf.event_seq, (v_settled ->> wf.id::text)::workflow_status AS settled
      FROM workflows wf WHERE wf.id = ANY (p_workflow_ids)
  ),
  raw AS (
    SELECT (e ->> 'workflow_id')::uuid AS workflow_id, 1 AS phase, x.ord, 'node.status_changed' AS type,
           e ->> 'id' AS node_id, 'PASS'::node_status AS node_status,
           jsonb_build_object('from', 'RUNNING', 'attempt', e -> 'attempt', 'capability', e -> 'capability') AS data
      FROM jsonb_array_elements(v_rows -> 'passed') WITH ORDINALITY AS x(e, ord)
    UNION ALL
    SELECT (e ->> 'workflow_id')::uuid, 2, x.ord, 'node.status_changed', e ->> 'id', 'QUEUED'::node_status,
           jsonb_build_object('from', 'PENDING', 'capability', e -> 'capability')
      FROM jsonb_array_elements(v_rows -> 'children') WITH ORDINALITY AS x(e, ord)
     WHERE e ->> 'status' = 'QUEUED'
    UNION ALL
    SELECT w.id, 3, 1, 'workflow.status_changed', NULL, NULL, jsonb_build_object('from', w.status)
      FROM w WHERE w.settled IS NOT NULL
  )
  SELECT coalesce(jsonb_agg(to_jsonb(ev)), '[]'::jsonb)
    INTO v_events
    FROM (SELECT r.workflow_id,
                 w.event_seq + row_number() OVER (PARTITION BY r.workflow_id ORDER BY r.phase, r.ord) AS sequence,
                 r.type, r.node_id,
                 CASE WHEN r.phase = 3 THEN w.settled ELSE w.status END AS workflow_status,
                 r.node_status, r.data
            FROM raw r JOIN w ON w.id = r.workflow_id) AS ev;

  RETURN QUERY SELECT 'pass', e FROM jsonb_array_elements(v_rows -> 'passed') AS e;
  RETURN QUERY SELECT 'queued', e FROM jsonb_array_elements(v_rows -> 'children') AS e WHERE e ->> 'status' = 'QUEUED';
  RETURN QUERY SELECT x.kind, x.body FROM trellis_write_events(v_events, v_settled, false) AS x;
  -- Ready children of a workflow that did not dispatch now (PAUSED, or without p_dispatch): the scheduler's.
  RETURN QUERY
  SELECT 'ready', jsonb_build_object('workflow_id', wf.id)
    FROM workflows wf
   WHERE wf.status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
     AND wf.id IN (SELECT (e ->> 'workflow_id')::uuid FROM jsonb_array_elements(v_rows -> 'children') AS e
                    WHERE e ->> 'status' = 'PENDING');
END;
$$;
--> statement-breakpoint

-- The scheduler's claim: up to p_limit ready nodes (PENDING, no pending parent) of PENDING or RUNNING workflows
-- become QUEUED with a new queue generation, their workflows locked first in id order and rows of other claimers
-- skipped. Commits without waiting for the WAL flush: a lost claim is harmless (the nodes are PENDING again and
-- claimed anew). Returns a 'queued' row per claimed node {workflow_id, id, capability, queue_gen, retry_policy}.
CREATE OR REPLACE FUNCTION trellis_claim_ready_nodes(p_limit integer)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  v_ids uuid[];
  v_claimed jsonb;
  v_events jsonb;
  v_statuses jsonb;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  v_ids := ARRAY(SELECT DISTINCT n.workflow_id
                   FROM nodes n JOIN workflows w ON w.id = n.workflow_id
                  WHERE n.status = 'PENDING' AND n.pending_parents = 0 AND w.status IN ('PENDING', 'RUNNING')
                  LIMIT p_limit);
  IF cardinality(v_ids) = 0 THEN
    RETURN;
  END IF;
  PERFORM 1 FROM workflows WHERE id = ANY (v_ids) ORDER BY id FOR UPDATE;
  WITH w AS (
    SELECT wf.id, wf.status, wf.event_seq FROM workflows wf
     WHERE wf.id = ANY (v_ids) AND wf.status IN ('PENDING', 'RUNNING')
  ),
  claimed AS (
    UPDATE nodes n
       SET status = 'QUEUED', queue_gen = n.queue_gen + 1, queued_at = now(), updated_at = now()
     WHERE (n.workflow_id, n.id) IN (SELECT c.workflow_id, c.id FROM nodes c
                                      WHERE c.workflow_id IN (SELECT w.id FROM w)
                                        AND c.status = 'PENDING' AND c.pending_parents = 0
                                      LIMIT p_limit
                                        FOR UPDATE SKIP LOCKED)
    RETURNING n.workflow_id, n.id, n.capability, n.queue_gen, n.retry_policy
  ),
  numbered AS (
    SELECT c.workflow_id, c.id, c.capability, row_number() OVER (PARTITION BY c.workflow_id ORDER BY c.id) AS k
      FROM claimed c
  ),
  flipped AS (
    -- A PENDING workflow becomes RUNNING with its first queued node: that event comes first.
    SELECT w.id, w.event_seq FROM w
     WHERE w.status = 'PENDING' AND EXISTS (SELECT 1 FROM claimed c WHERE c.workflow_id = w.id)
  ),
  ev AS (
    SELECT f.id AS workflow_id, f.event_seq + 1 AS sequence, 'workflow.status_changed' AS type, NULL::text AS node_id,
           'RUNNING'::workflow_status AS workflow_status, NULL::node_status AS node_status,
           jsonb_build_object('from', 'PENDING') AS data
      FROM flipped f
    UNION ALL
    SELECT c.workflow_id, w.event_seq + (w.status = 'PENDING')::int + c.k, 'node.status_changed', c.id,
           'RUNNING'::workflow_status, 'QUEUED'::node_status,
           jsonb_build_object('from', 'PENDING', 'capability', c.capability)
      FROM numbered c JOIN w ON w.id = c.workflow_id
  )
  SELECT coalesce((SELECT jsonb_agg(to_jsonb(c)) FROM claimed c), '[]'::jsonb),
         coalesce((SELECT jsonb_agg(to_jsonb(ev)) FROM ev), '[]'::jsonb),
         coalesce((SELECT jsonb_object_agg(f.id, 'RUNNING') FROM flipped f), '{}'::jsonb)
    INTO v_claimed, v_events, v_statuses;
  RETURN QUERY SELECT 'queued', e FROM jsonb_array_elements(v_claimed) AS e;
  RETURN QUERY SELECT x.kind, x.body FROM trellis_write_events(v_events, v_statuses, true) AS x;
END;
$$;
