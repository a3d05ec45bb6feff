-- PENDING or RUNNING -> PAUSED: the one implementation of a pause, for UpdateWorkflow's PAUSE and for a workflow
-- whose usage reached its budget. With the workflows locked by the caller: each workflow not already PAUSED or
-- finished becomes PAUSED (a `workflow.status_changed` event whose data is p_data plus `from`), and its QUEUED nodes
-- go back to PENDING (their jobs find them so and are dropped; the caller may remove the waiting ones). Returns
-- 'unqueued' {workflow_id, id, capability, queue_gen} per node taken off its queue, then what trellis_write_events
-- returns.
CREATE OR REPLACE FUNCTION trellis_pause_workflows(p_workflow_ids uuid[], p_data jsonb)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  v_paused jsonb;
  v_unqueued jsonb;
BEGIN
  SELECT coalesce(jsonb_agg(jsonb_build_object('id', w.id, 'status', w.status) ORDER BY w.id), '[]'::jsonb)
    INTO v_paused
    FROM workflows w
   WHERE w.id = ANY (p_workflow_ids) AND w.status IN ('PENDING', 'RUNNING');
  IF jsonb_array_length(v_paused) = 0 THEN
    RETURN;
  END IF;
  WITH unqueued AS (
    UPDATE nodes n
       SET status = 'PENDING', queued_at = NULL, held_by = NULL, updated_at = now()
      FROM jsonb_array_elements(v_paused) AS p
     WHERE n.workflow_id = (p ->> 'id')::uuid AND n.status = 'QUEUED'
    RETURNING n.workflow_id, n.id, n.capability, n.queue_gen
  )
  SELECT coalesce(jsonb_agg(to_jsonb(u) ORDER BY u.workflow_id, u.id), '[]'::jsonb) INTO v_unqueued FROM unqueued u;
  RETURN QUERY SELECT 'unqueued', e FROM jsonb_array_elements(v_unqueued) AS e;
  RETURN QUERY
  SELECT x.kind, x.body
    FROM trellis_write_events(
           (SELECT coalesce(jsonb_agg(e ORDER BY e.phase, e.workflow_id, e.node_id), '[]'::jsonb)
              FROM (SELECT 0 AS phase, (p ->> 'id')::uuid AS workflow_id, NULL::text AS node_id,
                           jsonb_build_object('workflow_id', p -> 'id', 'type', 'workflow.status_changed',
                                              'workflow_status', 'PAUSED',
                                              'data', coalesce(p_data, '{}'::jsonb)
                                                      || jsonb_build_object('from', p -> 'status')) AS e
                      FROM jsonb_array_elements(v_paused) AS p
                    UNION ALL
                    SELECT 1, (u ->> 'workflow_id')::uuid, u ->> 'id',
                           jsonb_build_object('workflow_id', u -> 'workflow_id', 'type', 'node.status_changed',
                                              'node_id', u -> 'id', 'workflow_status', 'PAUSED',
                                              'node_status', 'PENDING',
                                              'data', jsonb_build_object('from', 'QUEUED',
                                                                         'reason', 'workflow paused'))
                      FROM jsonb_array_elements(v_unqueued) AS u) AS e),
           (SELECT jsonb_object_agg(p ->> 'id', 'PAUSED') FROM jsonb_array_elements(v_paused) AS p),
           false) AS x;
END;
$$;

-- The workflows, of those given, whose usage reached their budget in some unit and that can still be paused: each
-- gets a `workflow.budget_exceeded` event {unit, usage, budget} and is PAUSED (trellis_pause_workflows, data
-- {reason: "budget exceeded", unit}). With the workflows locked by the caller. Returns what
-- trellis_pause_workflows returns.
CREATE OR REPLACE FUNCTION trellis_pause_over_budget(p_workflow_ids uuid[])
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  v_over jsonb;
  v_ids uuid[];
BEGIN
  SELECT coalesce(jsonb_agg(jsonb_build_object('workflow_id', o.id, 'type', 'workflow.budget_exceeded',
                                               'workflow_status', o.status,
                                               'data', jsonb_build_object('unit', o.unit, 'usage', o.used,
                                                                          'budget', o.allowed))
                            ORDER BY o.id), '[]'::jsonb),
         coalesce(array_agg(o.id ORDER BY o.id), '{}')
    INTO v_over, v_ids
    FROM (SELECT DISTINCT ON (w.id) w.id, w.status, b.key AS unit, coalesce((w.usage ->> b.key)::float8, 0) AS used,
                 b.value::float8 AS allowed
            FROM workflows w, jsonb_each_text(w.budget) AS b
           WHERE w.id = ANY (p_workflow_ids) AND w.status IN ('PENDING', 'RUNNING') AND w.budget <> '{}'::jsonb
             AND coalesce((w.usage ->> b.key)::float8, 0) >= b.value::float8
           ORDER BY w.id, b.key) o;
  IF cardinality(v_ids) = 0 THEN
    RETURN;
  END IF;
  RETURN QUERY SELECT x.kind, x.body FROM trellis_write_events(v_over, NULL, false) AS x;
  RETURN QUERY
  SELECT x.kind, x.body
    FROM trellis_pause_workflows(v_ids, jsonb_build_object('reason', 'budget exceeded')) AS x;
END;
$$;

-- What attempts spent: p_usages[i] ({unit: amount}) of the attempt of node p_node_ids[i] running under lease
-- p_leases[i] (a stale one is skipped: it was recorded as lost), with the workflows locked by the caller. Adds each to its workflow's usage, debits the rate limits whose unit names a spent unit and whose
-- key is one of the node's (its limit_keys and "capability:<capability>"), then pauses the workflows that reached
-- their budget (trellis_pause_over_budget). Empty or null usages are skipped. Returns what that returns.
CREATE OR REPLACE FUNCTION trellis_record_usage(
  p_workflow_ids uuid[], p_node_ids text[], p_leases uuid[], p_usages jsonb[]
)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  v_spent jsonb;
BEGIN
  SELECT jsonb_agg(jsonb_build_object('workflow_id', r.workflow_id, 'node_id', r.node_id, 'unit', u.key,
                                      'amount', u.value::float8))
    INTO v_spent
    FROM unnest(p_workflow_ids, p_node_ids, p_leases, p_usages) AS r(workflow_id, node_id, lease, usage)
    JOIN nodes n ON n.workflow_id = r.workflow_id AND n.id = r.node_id AND n.lease = r.lease AND n.status::text = 'RUNNING',
         jsonb_each_text(r.usage) AS u
   WHERE r.usage IS NOT NULL AND r.usage <> '{}'::jsonb;
  IF v_spent IS NULL THEN
    RETURN;
  END IF;
  WITH spent AS (
    SELECT * FROM jsonb_to_recordset(v_spent) AS s(workflow_id uuid, node_id text, unit text, amount float8)
  ),
  sums AS (
    SELECT t.workflow_id, jsonb_object_agg(t.unit, t.total) AS added
      FROM (SELECT workflow_id, unit, sum(amount) AS total FROM spent GROUP BY workflow_id, unit) t
     GROUP BY t.workflow_id
  )
  UPDATE workflows w
     SET usage = (SELECT jsonb_object_agg(k, coalesce((w.usage ->> k)::float8, 0) + coalesce((s.added ->> k)::float8, 0))
                    FROM (SELECT jsonb_object_keys(w.usage) UNION SELECT jsonb_object_keys(s.added)) AS keys(k))
    FROM sums s
   WHERE w.id = s.workflow_id;
  -- Debits of rate limits counted in a usage unit, their rows locked in key order (as every writer of limits).
  IF EXISTS (SELECT 1 FROM limits l WHERE l.unit <> '') THEN
    PERFORM trellis_debit_limits(
      (SELECT jsonb_object_agg(d.key || E'\n' || d.unit, d.amount)
         FROM (SELECT k AS key, s.unit, sum(s.amount) AS amount
                 FROM jsonb_to_recordset(v_spent) AS s(workflow_id uuid, node_id text, unit text, amount float8)
                 JOIN nodes n ON n.workflow_id = s.workflow_id AND n.id = s.node_id,
                      unnest(n.limit_keys || ('capability:' || n.capability)) AS k
                GROUP BY k, s.unit) d));
  END IF;
  RETURN QUERY
  SELECT x.kind, x.body
    FROM trellis_pause_over_budget(ARRAY(SELECT DISTINCT (e ->> 'workflow_id')::uuid
                                           FROM jsonb_array_elements(v_spent) AS e)) AS x;
END;
$$;
