import type pg from "pg";

/** A transaction that writes workflow events the way the engine does, left open until the test says. */
export interface OpenEventTransaction {
  /** The transaction's id (xid8, decimal), taken when it began. */
  readonly txId: string;
  /**
   * Locks the workflows' rows (in id order, as every engine writer does) and writes `perWorkflow` events to each,
   * numbered after the workflow's last sequence, in one INSERT. Returns the (workflowId, sequence) written.
   */
  write(workflowIds: readonly string[], perWorkflow?: number): Promise<{ workflowId: string; sequence: number }[]>;
  commit(): Promise<void>;
  rollback(): Promise<void>;
}

/** Begins a transaction on its own pooled connection and takes its transaction id at once. */
export async function beginEventTransaction(pool: pg.Pool): Promise<OpenEventTransaction> {
  const client = await pool.connect();
  let released = false;
  const end = async (statement: "commit" | "rollback") => {
    if (released) return;
    released = true;
    try {
      await client.query(statement);
    } finally {
      client.release();
    }
  };
  try {
    await client.query("begin");
    const { rows } = await client.query<{ tx_id: string }>("select pg_current_xact_id()::text as tx_id");
    const txId = rows[0]!.tx_id;
    return {
      txId,
      async write(workflowIds, perWorkflow = 1) {
        const locked = await client.query<{ id: string; event_seq: string; status: string }>(
          "select id, event_seq, status from workflows where id = any($1::uuid[]) order by id for update",
          [[...new Set(workflowIds)]],
        );
        const written: { workflowId: string; sequence: number }[] = [];
        const statuses: string[] = [];
        for (const row of locked.rows) {
          for (let i = 1; i <= perWorkflow; i++) {
            written.push({ workflowId: row.id, sequence: Number(row.event_seq) + i });
            statuses.push(row.status);
          }
        }
        // Rows go in in descending sequence order: the relay's ordering must not depend on the order of insertion.
        const rows = written.map((w, i) => ({ ...w, status: statuses[i]! })).reverse();
        await client.query(
          `insert into workflow_events (workflow_id, sequence, type, workflow_status, data)
           select u.workflow_id, u.sequence, 'test.event', u.status::workflow_status, jsonb_build_object('tx', $4::text)
             from unnest($1::uuid[], $2::bigint[], $3::text[]) as u(workflow_id, sequence, status)`,
          [rows.map((r) => r.workflowId), rows.map((r) => r.sequence), rows.map((r) => r.status), txId],
        );
        await client.query(
          "update workflows set event_seq = event_seq + $2::bigint, updated_at = now() where id = any($1::uuid[])",
          [locked.rows.map((r) => r.id), perWorkflow],
        );
        return written;
      },
      commit: () => end("commit"),
      rollback: () => end("rollback"),
    };
  } catch (error) {
    await end("rollback").catch(() => undefined);
    throw error;
  }
}

/** Writes `perWorkflow` events to each of the workflows in one committed transaction (see beginEventTransaction). */
export async function writeEvents(
  pool: pg.Pool,
  workflowIds: readonly string[],
  perWorkflow = 1,
): Promise<{ workflowId: string; sequence: number }[]> {
  const tx = await beginEventTransaction(pool);
  try {
    const written = await tx.write(workflowIds, perWorkflow);
    await tx.commit();
    return written;
  } catch (error) {
    await tx.rollback().catch(() => undefined);
    throw error;
  }
}

/** Inserts `count` bare RUNNING workflows (no nodes, no events yet) for event tests; returns their ids. */
export async function insertWorkflows(pool: pg.Pool, count: number, name = "event-test"): Promise<string[]> {
  const { rows } = await pool.query<{ id: string }>(
    `insert into workflows (id, name, status)
     select gen_random_uuid(), $2, 'RUNNING' from generate_series(1, $1::int)
     returning id`,
    [count, name],
  );
  return rows.map((r) => r.id);
}
