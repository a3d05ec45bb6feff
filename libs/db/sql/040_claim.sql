-- PENDING -> QUEUED, the scheduler's claim: up to p_limit ready nodes (PENDING, no pending parent) of PENDING or
-- RUNNING workflows get a new queue generation (their job id), their workflows locked first in id order and rows of
-- other claimers skipped; a PENDING workflow becomes RUNNING with its first queued node (that event comes first).
--
-- Flow control (docs/flow-control.md): a node's keys are its limit_keys and "capability:<capability>". A ready node
-- with a key that has a row in `limits` is claimed only when every such key allows: fewer QUEUED or RUNNING nodes
-- holding it than max_concurrency, a token in its bucket (rate limits; a unit-counted bucket needs a positive
-- level, the usage is debited after the call), and not throttled. Until then it stays PENDING with `held_by` set
-- (the key that held it last; '' when not yet weighed), out of the index of the other ready nodes, and gets one
-- `node.held` event {key, reason, until} each time the key holding it changes. Held nodes are weighed key by key:
-- for each key with room, its waiting nodes by priority (higher first), round robin across workflows; so a key at
-- its cap holds back only its own nodes. The limited part runs under one transaction-scoped advisory lock
-- (trellis_lock_limits, also taken by SetLimit and DeleteLimit): the count of a key's holders cannot change under a
-- claim, which is what makes a cap exact across schedulers. Lock order as every writer: workflows, then limits.
--
-- Waits (docs/waiting-and-streaming.md): a ready node with a `wait`, or a `not_before` still ahead, becomes WAITING
-- instead (no worker, no limit slot), `wake_at` set to its wait's timeout or its start time (trellis_wake_nodes
-- looks at it then), or to now when a signal is already kept for it (trellis_wake_nodes hands it to the scheduler).
--
-- Commits without waiting for the WAL flush: a lost claim is harmless (the nodes are PENDING again and claimed anew;
-- a job added for them finds them so and is dropped). Returns a 'queued' row per claimed node {workflow_id, id,
-- capability, queue_gen, retry_policy, priority}, then what trellis_write_events returns (it NOTIFYs).
CREATE OR REPLACE FUNCTION trellis_lock_limits()
RETURNS void
LANGUAGE sql AS $$
  SELECT pg_advisory_xact_lock(7262010);
$$;

-- The level of a limit's token bucket now (refilled since refilled_at, up to its burst; burst 0 means = rate).
CREATE OR REPLACE FUNCTION trellis_limit_tokens(l limits)
RETURNS float8
LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN l.rate <= 0 THEN NULL
              ELSE least(CASE WHEN l.burst > 0 THEN l.burst ELSE l.rate END,
                         l.tokens + l.rate * greatest(0, extract(epoch FROM clock_timestamp() - l.refilled_at) * 1000)
                                    / greatest(l.period_ms, 1))
         END;
$$;

-- Debits rate limits counted in usage units: p_debits {"<key>\n<unit>": amount}; rows locked in key order.
CREATE OR REPLACE FUNCTION trellis_debit_limits(p_debits jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF p_debits IS NULL OR p_debits = '{}'::jsonb THEN
    RETURN;
  END IF;
  PERFORM 1 FROM limits l
   WHERE l.key IN (SELECT split_part(d.key, E'\n', 1) FROM jsonb_each_text(p_debits) AS d)
   ORDER BY l.key FOR UPDATE;
  UPDATE limits l
     SET tokens = trellis_limit_tokens(l) - d.amount, refilled_at = clock_timestamp(), updated_at = now()
    FROM (SELECT split_part(e.key, E'\n', 1) AS key, split_part(e.key, E'\n', 2) AS unit, e.value::float8 AS amount
            FROM jsonb_each_text(p_debits) AS e) d
   WHERE l.key = d.key AND l.configured AND l.rate > 0 AND l.unit = d.unit AND l.unit <> '';
END;
$$;

-- Gives the ready nodes held back by a key that no longer has a limit (DeleteLimit, a throttle-only row that
-- expired) back to the plain claim: held_by cleared (the next claim holds them again if another key still limits
-- them). Under trellis_lock_limits, so no claim is weighing them meanwhile. Returns how many.
CREATE OR REPLACE FUNCTION trellis_release_held(p_key text)
RETURNS integer
LANGUAGE sql AS $$
  WITH released AS (
    UPDATE nodes n SET held_by = NULL, updated_at = now()
     WHERE n.held_by IS NOT NULL AND n.status = 'PENDING'
       AND CASE WHEN p_key LIKE 'capability:%' THEN n.capability = substr(p_key, 12)
                ELSE n.limit_keys @> ARRAY[p_key] END
    RETURNING 1
  )
  SELECT count(*)::int FROM released;
$$;

CREATE OR REPLACE FUNCTION trellis_claim_ready_nodes(p_limit integer)
RETURNS TABLE (kind text, body jsonb)
LANGUAGE plpgsql
-- Generic plans: planning each statement anew costs more than running it (see README.md).
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  v_limited boolean;
  v_fresh jsonb := '[]'::jsonb;
  v_pool jsonb := '[]'::jsonb;
  v_ids uuid[];
  v_keys jsonb := '{}'::jsonb;
  v_take jsonb := '[]'::jsonb;
  v_held jsonb := '[]'::jsonb;
  v_spent jsonb := '{}'::jsonb;
  v_node record;
  v_key text;
  v_state jsonb;
  v_block text;
  v_reason text;
  v_until timestamptz;
  v_claimed jsonb;
  v_events jsonb;
  v_statuses jsonb;
  v_waiting jsonb := '[]'::jsonb;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  v_limited := EXISTS (SELECT 1 FROM limits);
  IF v_limited THEN
    PERFORM trellis_lock_limits();
    -- A pause a THROTTLED answer put on a key without a limit ends with its time: the row goes, and what it held.
    PERFORM trellis_release_held(l.key)
       FROM limits l WHERE NOT l.configured AND l.throttled_until <= clock_timestamp();
    DELETE FROM limits WHERE NOT configured AND throttled_until <= clock_timestamp();
    v_limited := EXISTS (SELECT 1 FROM limits);
  END IF;
  -- Ready nodes no limit has held yet (read only: rows are locked once their workflows are).
  SELECT coalesce(jsonb_agg(jsonb_build_object('workflow_id', n.workflow_id, 'id', n.id)), '[]'::jsonb)
    INTO v_fresh
    FROM (SELECT n.workflow_id, n.id
            FROM nodes n JOIN workflows w ON w.id = n.workflow_id
           WHERE n.status = 'PENDING' AND n.pending_parents = 0 AND n.held_by IS NULL
             -- As text: each node's workflow by primary key, not a scan of every active workflow per node (the
             -- partial index on active workflows looks as cheap to a generic plan: see "Plans" in README.md).
             AND w.status::text IN ('PENDING', 'RUNNING')
           LIMIT p_limit) n;
  IF v_limited THEN
    -- Each limit now: room for more holders (null: no cap), tokens in its bucket, throttled until.
    SELECT coalesce(jsonb_object_agg(l.key, jsonb_build_object(
             'room', CASE WHEN l.configured AND l.max_concurrency > 0
                          THEN l.max_concurrency
                               - CASE WHEN l.key LIKE 'capability:%'
                                      THEN (SELECT count(*) FROM nodes h
                                             WHERE h.capability = substr(l.key, 12)
                                               AND h.status IN ('QUEUED', 'RUNNING'))
                                      ELSE (SELECT count(*) FROM nodes h
                                             WHERE h.limit_keys @> ARRAY[l.key] AND h.limit_keys <> '{}'
                                               AND h.status IN ('QUEUED', 'RUNNING')) END
                     END,
             'tokens', CASE WHEN l.configured THEN trellis_limit_tokens(l) END,
             'unit', l.unit, 'rate', l.rate, 'period_ms', l.period_ms,
             'throttled_until', CASE WHEN l.throttled_until > clock_timestamp() THEN l.throttled_until END)),
             '{}'::jsonb)
      INTO v_keys
      FROM limits l;
    -- Held nodes worth weighing: for each key with room, a window of its waiting nodes by priority (read from an
    -- index, never the whole backlog: a key may hold back tens of thousands), of which the first few by priority,
    -- round robin across workflows.
    SELECT coalesce(jsonb_agg(DISTINCT jsonb_build_object('workflow_id', c.workflow_id, 'id', c.id)), '[]'::jsonb)
      INTO v_pool
      FROM jsonb_each(v_keys) AS k(key, s)
      CROSS JOIN LATERAL (
        SELECT greatest(0, least(p_limit, coalesce((k.s ->> 'room')::int, p_limit),
                                 CASE WHEN (k.s ->> 'tokens') IS NULL THEN p_limit
                                      WHEN k.s ->> 'unit' = '' THEN floor((k.s ->> 'tokens')::float8)::int
                                      WHEN (k.s ->> 'tokens')::float8 > 0 THEN p_limit ELSE 0 END,
                                 CASE WHEN k.s ->> 'throttled_until' IS NULL THEN p_limit ELSE 0 END)) AS take
      ) t
      CROSS JOIN LATERAL (
        SELECT r.workflow_id, r.id
          FROM (SELECT x.workflow_id, x.id, x.priority,
                       row_number() OVER (PARTITION BY x.workflow_id, x.priority ORDER BY x.id) AS rn
                  FROM ((SELECT n.workflow_id, n.id, n.priority FROM nodes n
                         WHERE t.take > 0 AND k.key LIKE 'capability:%' AND n.capability = substr(k.key, 12)
                           AND n.held_by IS NOT NULL AND n.status = 'PENDING'
                         ORDER BY n.capability, n.priority DESC NULLS LAST LIMIT 4 * t.take + 32)
                        UNION ALL
                        (SELECT n.workflow_id, n.id, n.priority FROM nodes n
                         WHERE t.take > 0 AND k.key NOT LIKE 'capability:%' AND n.limit_keys @> ARRAY[k.key]
                           AND n.held_by IS NOT NULL AND n.status = 'PENDING'
                         ORDER BY n.priority DESC LIMIT 4 * t.take + 32)) x
                  JOIN workflows w ON w.id = x.workflow_id AND w.status IN ('PENDING', 'RUNNING')) r
         ORDER BY r.priority DESC, r.rn, r.workflow_id
         LIMIT t.take
      ) c;
  END IF;
  v_ids := ARRAY(SELECT DISTINCT (e ->> 'workflow_id')::uuid FROM jsonb_array_elements(v_fresh || v_pool) AS e);
  IF cardinality(v_ids) = 0 THEN
    RETURN;
  END IF;
  PERFORM 1 FROM workflows WHERE id = ANY (v_ids) ORDER BY id FOR UPDATE;
  -- Ready nodes that wait, for a signal or for their start time: WAITING, not queued.
  WITH waiting AS (
    UPDATE nodes n
       SET status = 'WAITING', held_by = NULL, updated_at = now(),
           wake_at = CASE WHEN n.wait IS NOT NULL AND n.signal IS NOT NULL THEN clock_timestamp()
                          WHEN n.wait IS NULL THEN n.not_before
                          WHEN trellis_duration_ms(n.wait ->> 'timeout') > 0
                          THEN clock_timestamp() + make_interval(secs => trellis_duration_ms(n.wait ->> 'timeout') / 1000)
                     END
      FROM jsonb_to_recordset(v_fresh) AS f(workflow_id uuid, id text)
     WHERE n.workflow_id = f.workflow_id AND n.id = f.id AND n.status::text = 'PENDING' AND n.pending_parents = 0
       AND n.held_by IS NULL AND (n.wait IS NOT NULL OR n.not_before > now())
       AND n.workflow_id IN (SELECT wf.id FROM workflows wf
                              WHERE wf.id = ANY (v_ids) AND wf.status IN ('PENDING', 'RUNNING'))
    RETURNING n.workflow_id, n.id, n.wait IS NOT NULL AS for_signal, n.signal IS NOT NULL AS signaled, n.wake_at,
              n.capability
  )
  SELECT coalesce(jsonb_agg(to_jsonb(w)), '[]'::jsonb) INTO v_waiting FROM waiting w;
  IF v_limited THEN
    -- Rows are stable from here (the advisory lock and the workflows are held): lock them for the token debits.
    PERFORM 1 FROM limits ORDER BY key FOR UPDATE;
    -- Fresh nodes with a limited key join the held ones ('' = not weighed yet); the others are claimed as they are.
    WITH limited AS (
      UPDATE nodes n
         SET held_by = ''
        FROM jsonb_to_recordset(v_fresh) AS f(workflow_id uuid, id text)
       WHERE n.workflow_id = f.workflow_id AND n.id = f.id AND n.status::text = 'PENDING' AND n.pending_parents = 0
         AND n.held_by IS NULL
         AND EXISTS (SELECT 1 FROM limits l WHERE l.key = ANY (n.limit_keys || ('capability:' || n.capability)))
      RETURNING n.workflow_id, n.id
    )
    SELECT v_pool || coalesce(jsonb_agg(jsonb_build_object('workflow_id', l.workflow_id, 'id', l.id)), '[]'::jsonb)
      INTO v_pool
      FROM limited l;
    -- Weigh the held nodes, higher priority first, round robin across workflows: claim a node when every one of its
    -- keys has room, and count it against them.
    FOR v_node IN
      SELECT n.workflow_id, n.id, n.held_by, n.limit_keys || ('capability:' || n.capability) AS keys
        FROM (SELECT DISTINCT (e ->> 'workflow_id')::uuid AS workflow_id, e ->> 'id' AS id
                FROM jsonb_array_elements(v_pool) AS e) p
        JOIN nodes n ON n.workflow_id = p.workflow_id AND n.id = p.id
        JOIN workflows w ON w.id = n.workflow_id
       WHERE n.status = 'PENDING' AND n.pending_parents = 0 AND n.held_by IS NOT NULL
         AND w.status IN ('PENDING', 'RUNNING')
       ORDER BY n.priority DESC, row_number() OVER (PARTITION BY n.workflow_id, n.priority ORDER BY n.id),
                n.workflow_id
    LOOP
      v_block := NULL;
      FOREACH v_key IN ARRAY v_node.keys LOOP
        v_state := v_keys -> v_key;
        CONTINUE WHEN v_state IS NULL;
        IF v_state ->> 'throttled_until' IS NOT NULL THEN
          v_block := v_key; v_reason := 'throttled'; v_until := (v_state ->> 'throttled_until')::timestamptz;
        ELSIF (v_state ->> 'room')::int <= 0 THEN
          v_block := v_key; v_reason := 'concurrency'; v_until := NULL;
        ELSIF (v_state ->> 'tokens') IS NOT NULL
              AND (v_state ->> 'tokens')::float8 < (CASE WHEN v_state ->> 'unit' = '' THEN 1 ELSE 1e-9 END) THEN
          v_block := v_key; v_reason := 'rate';
          v_until := clock_timestamp() + make_interval(secs => (CASE WHEN v_state ->> 'unit' = '' THEN 1 ELSE 0 END
                                                                - (v_state ->> 'tokens')::float8)
                                                               * (v_state ->> 'period_ms')::float8
                                                               / 1000 / (v_state ->> 'rate')::float8);
        END IF;
        EXIT WHEN v_block IS NOT NULL;
      END LOOP;
      IF v_block IS NULL THEN
        v_take := v_take || jsonb_build_object('workflow_id', v_node.workflow_id, 'id', v_node.id);
        FOREACH v_key IN ARRAY v_node.keys LOOP
          v_state := v_keys -> v_key;
          CONTINUE WHEN v_state IS NULL;
          IF (v_state ->> 'room') IS NOT NULL THEN
            v_state := jsonb_set(v_state, '{room}', to_jsonb((v_state ->> 'room')::int - 1));
          END IF;
          IF (v_state ->> 'tokens') IS NOT NULL AND v_state ->> 'unit' = '' THEN
            v_state := jsonb_set(v_state, '{tokens}', to_jsonb((v_state ->> 'tokens')::float8 - 1));
            v_spent := jsonb_set(v_spent, ARRAY[v_key], to_jsonb(coalesce((v_spent ->> v_key)::int, 0) + 1));
          END IF;
          v_keys := jsonb_set(v_keys, ARRAY[v_key], v_state);
        END LOOP;
      ELSIF v_node.held_by IS DISTINCT FROM v_block THEN
        v_held := v_held || jsonb_build_object('workflow_id', v_node.workflow_id, 'id', v_node.id, 'key', v_block,
                                               'reason', v_reason, 'until', v_until);
      END IF;
      EXIT WHEN jsonb_array_length(v_take) >= p_limit;
    END LOOP;
    UPDATE limits l
       SET tokens = trellis_limit_tokens(l) - s.value::float8, refilled_at = clock_timestamp(), updated_at = now()
      FROM jsonb_each_text(v_spent) AS s
     WHERE l.key = s.key;
    UPDATE nodes n
       SET held_by = h.key, updated_at = now()
      FROM jsonb_to_recordset(v_held) AS h(workflow_id uuid, id text, key text)
     WHERE n.workflow_id = h.workflow_id AND n.id = h.id;
  END IF;
  WITH w AS (
    SELECT wf.id, wf.status FROM workflows wf
     WHERE wf.id = ANY (v_ids) AND wf.status IN ('PENDING', 'RUNNING')
  ),
  claimed AS (
    UPDATE nodes n
       SET status = 'QUEUED', queue_gen = n.queue_gen + 1, queued_at = now(), held_by = NULL, updated_at = now()
     WHERE (n.workflow_id, n.id) IN (
             SELECT c.workflow_id, c.id
               FROM nodes c
               JOIN (SELECT f.workflow_id, f.id FROM jsonb_to_recordset(v_fresh) AS f(workflow_id uuid, id text)
                     UNION
                     SELECT t.workflow_id, t.id FROM jsonb_to_recordset(v_take) AS t(workflow_id uuid, id text)) x
                 ON c.workflow_id = x.workflow_id AND c.id = x.id
              WHERE c.workflow_id IN (SELECT w.id FROM w)
                AND c.status::text = 'PENDING' AND c.pending_parents = 0
                AND (c.held_by IS NULL OR (c.workflow_id, c.id) IN (SELECT t.workflow_id, t.id
                                                                        FROM jsonb_to_recordset(v_take)
                                                                          AS t(workflow_id uuid, id text)))
                FOR UPDATE OF c SKIP LOCKED)
    RETURNING n.workflow_id, n.id, n.capability, n.queue_gen, n.retry_policy, n.priority
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
    UNION ALL
    SELECT w.workflow_id, 1, w.id, 'node.status_changed', w.id, wf.status, 'WAITING'::node_status,
           jsonb_strip_nulls(jsonb_build_object(
             'from', 'PENDING',
             'reason', CASE WHEN w.for_signal THEN 'waiting for a signal' ELSE 'waiting for its start time' END,
             'until', w.wake_at))
      FROM jsonb_to_recordset(v_waiting) AS w(workflow_id uuid, id text, for_signal boolean, wake_at timestamptz)
      JOIN workflows wf ON wf.id = w.workflow_id
    UNION ALL
    SELECT h.workflow_id, 2, h.id, 'node.held', h.id, w.status, 'PENDING'::node_status,
           jsonb_strip_nulls(jsonb_build_object('key', h.key, 'reason', h.reason, 'until', h.until))
      FROM jsonb_to_recordset(v_held) AS h(workflow_id uuid, id text, key text, reason text, until timestamptz)
      JOIN workflows w ON w.id = h.workflow_id
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
