import type pg from "pg";

/** Rows one retention batch deleted, by table. */
export interface RetentionBatch {
  /** Workflows deleted (each finished before the cutoff). */
  workflows: number;
  nodes: number;
  edges: number;
  events: number;
  attempts: number;
  /** The finished_at of the oldest workflow deleted; null when none was. */
  oldestFinishedAt: Date | null;
}

/** Options of {@link deleteFinishedWorkflows}. */
export interface RetentionBatchOptions {
  /** Workflows finished before this are deleted. */
  before: Date;
  /** Workflows per transaction at most. */
  batchSize: number;
  /**
   * How long a delete may wait for a row lock (a node row a late result holds, say) before the batch gives up; the
   * next batch tries again. @default 2000
   */
  lockTimeoutMs?: number;
}

/** The pick of a batch: $1 the cutoff, $2 the batch size; through workflows_finished_at_idx. */
export const RETENTION_SELECT_SQL = `select id, finished_at from workflows
 where finished_at < $1
 order by finished_at
 limit $2
   for update skip locked`;

/**
 * Deletes one batch of finished workflows (SUCCEEDED, FAILED or CANCELLED: `finished_at` is set exactly then) that
 * finished before `before`, oldest first, with every row that belongs to them: attempts, events, edges, nodes, in one
 * transaction. The workflow rows are taken `FOR UPDATE SKIP LOCKED` through `workflows_finished_at_idx`, so several
 * schedulers delete disjoint batches and none waits for a workflow another transaction holds (a RETRY of that very
 * workflow, say: it is kept and looked at again next time, and once RETRY commits it is no longer finished). Each
 * child table is reached by its primary key's leading `workflow_id`; the foreign keys' cascades then find nothing.
 * The locks are held for one batch (a few hundred milliseconds at 500 workflows of a few nodes each).
 */
export async function deleteFinishedWorkflows(pool: pg.Pool, options: RetentionBatchOptions): Promise<RetentionBatch> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query("begin");
    try {
      await client.query(`set local lock_timeout = ${Math.max(1, Math.floor(options.lockTimeoutMs ?? 2_000))}`);
      const doomed = await client.query<{ id: string; finished_at: Date }>(RETENTION_SELECT_SQL, [
        options.before,
        options.batchSize,
      ]);
      const ids = doomed.rows.map((r) => r.id);
      if (ids.length === 0) {
        await client.query("commit");
        return { workflows: 0, nodes: 0, edges: 0, events: 0, attempts: 0, oldestFinishedAt: null };
      }
      const count = async (table: string) =>
        (await client.query(`delete from ${table} where workflow_id = any($1::uuid[])`, [ids])).rowCount ?? 0;
      // Children first, so the cascades of the deletes below have nothing left to do.
      const attempts = await count("node_attempts");
      const events = await count("workflow_events");
      const edges = await count("node_edges");
      const nodes = await count("nodes");
      const deleted = await client.query("delete from workflows where id = any($1::uuid[])", [ids]);
      await client.query("commit");
      return {
        workflows: deleted.rowCount ?? 0,
        nodes,
        edges,
        events,
        attempts,
        oldestFinishedAt: doomed.rows[0]!.finished_at,
      };
    } catch (error) {
      await client.query("rollback").catch((e: Error) => {
        broken = e;
      });
      throw error;
    }
  } finally {
    // A connection that could not even roll back is dropped, not handed to the next query.
    client.release(broken);
  }
}
