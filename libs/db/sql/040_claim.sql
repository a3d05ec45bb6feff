-- PENDING -> QUEUED, the scheduler's claim: up to p_limit ready nodes (PENDING, no pending parent) of PENDING or
-- RUNNING workflows get a new queue generation (their job id), their workflows locked first in id order and rows of
-- other claimers skipped; a PENDING workflow becomes RUNNING with its first queued node (that event comes first).
-- Commits without waiting for the WAL flush: a lost claim is harmless (the nodes are PENDING again and claimed anew;
-- a job added for them finds them so and is dropped). Returns a 'queued' row per claimed node {workflow_id, id,
-- capability, queue_gen, retry_policy}, then what trellis_write_events returns (it NOTIFYs).
CREATE OR REPLACE FUNCTION trellis_claim_ready_nodes(p_limit integer)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql
-- Generic plans: planning each statement anew costs more than running it (see README.md).
SET plan_cache_mode = force_generic_plan AS $$
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
    SELECT wf.id, wf.status FROM workflows wf
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
  flipped AS (
    SELECT w.id FROM w
     WHERE w.status = 'PENDING' AND EXISTS (SELECT 1 FROM claimed c WHERE c.workflow_id = w.id)
  ),
  ev AS (
    SELECT f.id AS workflow_id, 0 AS phase, NULL::text AS sort_id, 'workflow.status_changed' AS type,
           NULL::text AS node_id, 'RUNNING'::workflow_status AS workflow_status, NULL::node_status AS node_status,
           jsonb_build_object('from', 'PENDING') AS data
      FROM flipped f
    UNION ALL
    SELECT c.workflow_id, 1, c.id, 'node.status_changed', c.id, 'RUNNING'::workflow_status, 'QUEUED'::node_status,
           jsonb_build_object('from', 'PENDING', 'capability', c.capability)
      FROM claimed c
  )
  SELECT coalesce((SELECT jsonb_agg(to_jsonb(c)) FROM claimed c), '[]'::jsonb),
         coalesce((SELECT jsonb_agg(to_jsonb(ev) - 'phase' - 'sort_id' ORDER BY ev.workflow_id, ev.phase, ev.sort_id)
                     FROM ev), '[]'::jsonb),
         coalesce((SELECT jsonb_object_agg(f.id, 'RUNNING') FROM flipped f), '{}'::jsonb)
    INTO v_claimed, v_events, v_statuses;
  RETURN QUERY SELECT 'queued', e FROM jsonb_array_elements(v_claimed) AS e;
  RETURN QUERY SELECT x.kind, x.body FROM trellis_write_events(v_events, v_statuses, true) AS x;
END;
$$;
