import { type SQL, sql } from "drizzle-orm";
import { type LimitSpec, validateLimitKey, validateLimitSpec } from "@trellis/core";
import { CHANNELS } from "./channels.js";
import type { Database } from "./pool.js";
import type { LimitState } from "./state-manager.js";
import { type Transactions, type TxContext, notifyAfterCommit } from "./transactions.js";

/** A row of {@link limitStates}' query. */
interface LimitStateRow extends Record<string, unknown> {
  key: string;
  configured: boolean;
  max_concurrency: number;
  rate: number;
  period_ms: number;
  burst: number;
  unit: string;
  throttled_until_ms: number | null;
  throttled_total: number;
  running: number;
  waiting: number;
  available: number | null;
}

/**
 * The limits matching `where` (a condition on `l`, the limits row), by key, with what they hold now. A key
 * `capability:<name>` is held by the nodes of that capability, any other by the nodes listing it in limit_keys (the
 * same rule as the claim's, written so that each branch uses its partial index). `available` is the bucket refilled
 * up to now (trellis_limit_tokens, the claim's own arithmetic); `throttled_until` only while it is ahead.
 */
async function limitStates(executor: Pick<Database, "execute">, where: SQL): Promise<LimitState[]> {
  const { rows } = await executor.execute<LimitStateRow>(sql`
    select l.key, l.configured, l.max_concurrency, l.rate, l.period_ms, l.burst, l.unit,
           case when l.throttled_until > clock_timestamp()
                then extract(epoch from l.throttled_until)::float8 * 1000 end as throttled_until_ms,
           l.throttled_total::float8 as throttled_total,
           case when l.configured then trellis_limit_tokens(l) end as available,
           case when left(l.key, 11) = 'capability:'
                then (select count(*) from nodes n
                       where n.status in ('QUEUED', 'RUNNING') and n.capability = substr(l.key, 12))
                else (select count(*) from nodes n
                       where n.status in ('QUEUED', 'RUNNING') and n.limit_keys <> '{}'
                         and n.limit_keys @> array[l.key])
           end::int as running,
           case when left(l.key, 11) = 'capability:'
                then (select count(*) from nodes n
                       where n.held_by is not null and n.status = 'PENDING' and n.capability = substr(l.key, 12))
                else (select count(*) from nodes n
                       where n.held_by is not null and n.status = 'PENDING' and n.limit_keys @> array[l.key])
           end::int as waiting
      from limits l
     where ${where}
     order by l.key`);
  return rows.map((r) => ({
    key: r.key,
    configured: r.configured,
    maxConcurrency: r.max_concurrency,
    rate: r.rate,
    periodMs: r.period_ms,
    burst: r.burst,
    unit: r.unit,
    throttledUntil: r.throttled_until_ms === null ? null : new Date(r.throttled_until_ms),
    running: r.running,
    waiting: r.waiting,
    available: r.available,
    throttledTotal: r.throttled_total,
  }));
}

/**
 * Flow-control limits (SetLimit, ListLimits, DeleteLimit). Every write takes the limits' advisory lock
 * (trellis_lock_limits, as the scheduler's claim does) and then the key's row, so no claim weighs a key while its
 * limit changes; the scheduler is notified after commit, since a raised or removed limit lets held nodes start.
 */
export class LimitStore {
  constructor(private readonly transactions: Transactions) {}

  async setLimit(spec: LimitSpec): Promise<LimitState> {
    const limit = validateLimitSpec(spec, "limit");
    return this.transactions.write(async (ctx) => {
      await this.lock(ctx, limit.key);
      // A new bucket starts full; a replaced one keeps its level (refilled up to now), at most the new burst. A row
      // without a rate so far (a cap only, or a key only a THROTTLED answer paused) had no bucket: it starts full.
      await ctx.tx.execute(sql`
        insert into limits as l (key, configured, max_concurrency, rate, period_ms, burst, unit, tokens, refilled_at)
        values (${limit.key}, true, ${limit.maxConcurrency}, ${limit.rate}, ${limit.periodMs}, ${limit.burst},
                ${limit.unit}, ${limit.burst}, clock_timestamp())
        on conflict (key) do update
           set configured = true, max_concurrency = excluded.max_concurrency, rate = excluded.rate,
               period_ms = excluded.period_ms, burst = excluded.burst, unit = excluded.unit,
               tokens = case when not l.configured or l.rate <= 0 then excluded.burst
                             else least(excluded.burst, trellis_limit_tokens(l)) end,
               refilled_at = clock_timestamp(), updated_at = now()`);
      notifyAfterCommit(ctx, CHANNELS.ready, "");
      const [state] = await limitStates(ctx.tx, sql`l.key = ${limit.key}`);
      return state!;
    });
  }

  listLimits(): Promise<LimitState[]> {
    return limitStates(this.transactions.db, sql`l.configured or l.throttled_until > clock_timestamp()`);
  }

  async deleteLimit(key: string): Promise<boolean> {
    validateLimitKey(key, "key", "allowed");
    return this.transactions.write(async (ctx) => {
      const row = await this.lock(ctx, key);
      if (!row?.configured) return false;
      // A THROTTLED pause outlives the limit: the provider said so, whatever the limit was. The row stays as a pause
      // only, which the claim removes once it ends.
      if (row.throttled) {
        await ctx.tx.execute(sql`
          update limits
             set configured = false, max_concurrency = 0, rate = 0, burst = 0, unit = '', tokens = 0, updated_at = now()
           where key = ${key}`);
      } else {
        await ctx.tx.execute(sql`delete from limits where key = ${key}`);
      }
      await ctx.tx.execute(sql`select trellis_release_held(${key})`);
      notifyAfterCommit(ctx, CHANNELS.ready, "");
      return true;
    });
  }

  /** Takes the limits' advisory lock, then locks the key's row; returns it (null when there is none). */
  private async lock(ctx: TxContext, key: string): Promise<{ configured: boolean; throttled: boolean } | null> {
    await ctx.tx.execute(sql`select trellis_lock_limits()`);
    const { rows } = await ctx.tx.execute<{ configured: boolean; throttled: boolean }>(sql`
      select configured, coalesce(throttled_until > clock_timestamp(), false) as throttled
        from limits where key = ${key} for update`);
    return rows[0] ?? null;
  }
}
