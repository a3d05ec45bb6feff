-- The one place a workflow ends by itself: of the given workflows, each that is not finished and has no unfinished
-- node becomes FAILED when a node is FAIL, else SUCCEEDED, with its `workflow.status_changed` event. Called at the
-- end of every transaction that can finish nodes (results, errors, lost workers, edits that delete nodes), with the
-- workflows locked. Returns what trellis_write_events returns (nothing when no workflow settled).
CREATE OR REPLACE FUNCTION trellis_settle_workflows(p_workflow_ids uuid[])
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql
-- Generic plans: planning each statement anew costs more than running it (see README.md).
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  v_statuses jsonb;
  v_events jsonb;
BEGIN
  -- The FAIL check scans the workflow's nodes, so it runs only once nothing is unfinished (CASE is lazy). Both are
  -- scalar subqueries with LIMIT, probed per workflow: as EXISTS, a generic plan without statistics hashed every
  -- unfinished node of the database once per call instead (see "Plans" in README.md).
  SELECT jsonb_object_agg(s.id, s.to_status),
         jsonb_agg(jsonb_build_object('workflow_id', s.id, 'type', 'workflow.status_changed',
                                      'workflow_status', s.to_status, 'data', jsonb_build_object('from', s.status))
                   ORDER BY s.id)
    INTO v_statuses, v_events
    FROM (SELECT w.id, w.status,
                 CASE WHEN (SELECT true FROM nodes n
                             WHERE n.workflow_id = w.id AND trellis_node_unfinished(n.status) LIMIT 1) THEN NULL
                      WHEN (SELECT true FROM nodes n WHERE n.workflow_id = w.id AND n.status = 'FAIL' LIMIT 1)
                      THEN 'FAILED'
                      ELSE 'SUCCEEDED' END AS to_status
            FROM workflows w
           WHERE w.id = ANY (p_workflow_ids) AND NOT trellis_workflow_finished(w.status)) s
   WHERE s.to_status IS NOT NULL;
  IF v_statuses IS NULL THEN
    RETURN;
  END IF;
  RETURN QUERY SELECT x.kind, x.body FROM trellis_write_events(v_events, v_statuses, false) AS x;
END;
$$;
