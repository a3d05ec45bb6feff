import type { JsonObject } from "@bufbuild/protobuf";
import pg from "pg";
import type { NodeStatusName, WorkflowStatusName } from "./mapping.js";

/** A place in the relay order (tx_id, workflow_id, sequence) of workflow_events; see `workflowEvents` in schema.ts. */
export interface RelayPosition {
  /** `workflow_events.tx_id`, an xid8 as a decimal string. */
  txId: string;
  workflowId: string;
  sequence: number;
}

/** The position before every event: where a stream key that has no stored cursor starts. */
export const RELAY_ORIGIN: RelayPosition = {
  txId: "0",
  workflowId: "00000000-0000-0000-0000-000000000000",
  sequence: 0,
};

/** An event as the relay reads it, with its position. */
export interface RelayEvent extends RelayPosition {
  type: string;
  nodeId: string | null;
  workflowStatus: WorkflowStatusName;
  nodeStatus: NodeStatusName | null;
  time: Date;
  data: JsonObject;
}

/** What one read found. */
export interface RelayBatch {
  /** The next events after the cursor, in relay order, committed and flushed to disk. */
  events: RelayEvent[];
  /**
   * When fewer than asked were found: the time of the first committed event that a still-running transaction holds
   * back (see readBatch), or null when there is none.
   */
  heldBackSince: Date | null;
}

/** Options of a PgEventRelayStore. */
export interface PgEventRelayStoreOptions {
  databaseUrl: string;
  /** The Redis stream key: one cursor and one lock per key. */
  streamKey: string;
  /** Called when the connection fails between statements; the next call reconnects. */
  onError?: (error: Error) => void;
  /** Client-side timeout of each statement, after which the connection is dropped. @default 30000 */
  queryTimeoutMs?: number;
}

// Namespaces the advisory lock keys of relays (a 64-bit hash of this plus the stream key).
const LOCK_NAMESPACE = "trellis.event_relay:";

interface EventDbRow {
  tx_id: string;
  workflow_id: string;
  sequence: string;
  type: string;
  node_id: string | null;
  workflow_status: WorkflowStatusName;
  node_status: NodeStatusName | null;
  time: Date;
  data: JsonObject;
}

/**
 * The PostgreSQL side of the Redis Stream relay, on one dedicated connection: the session-level advisory lock that
 * lets one relay per stream key publish at a time, the reads of committed events in relay order, and the stored
 * cursor. Every statement runs on the lock's connection, so a relay that lost its connection (and with it the lock)
 * cannot move the cursor any more.
 */
export class PgEventRelayStore {
  private client: pg.Client | null = null;
  private locked = false;

  constructor(private readonly options: PgEventRelayStoreOptions) {}

  /** Whether this store's connection holds the stream key's lock. */
  get holdsLock(): boolean {
    return this.locked && this.client !== null;
  }

  /**
   * Takes the stream key's lock if no other session holds it (connecting first if needed); true when held.
   * Never waits for the lock.
   */
  async tryLock(): Promise<boolean> {
    if (this.holdsLock) return true;
    const client = await this.connection();
    const { rows } = await client.query<{ locked: boolean }>(
      "select pg_try_advisory_lock(hashtextextended($1, 0)) as locked",
      [LOCK_NAMESPACE + this.options.streamKey],
    );
    this.locked = rows[0]?.locked === true;
    return this.locked;
  }

  /** The stored cursor of the stream key (the origin the first time). Needs the lock. */
  async loadCursor(): Promise<RelayPosition> {
    const client = this.lockedConnection();
    await client.query(
      `insert into event_relay_cursors (stream_key, tx_id, workflow_id, sequence)
       values ($1, $2::xid8, $3::uuid, $4::bigint) on conflict (stream_key) do nothing`,
      [this.options.streamKey, RELAY_ORIGIN.txId, RELAY_ORIGIN.workflowId, RELAY_ORIGIN.sequence],
    );
    const { rows } = await client.query<{ tx_id: string; workflow_id: string; sequence: string }>(
      "select tx_id::text as tx_id, workflow_id, sequence from event_relay_cursors where stream_key = $1",
      [this.options.streamKey],
    );
    const row = rows[0];
    if (!row) throw new Error(`event_relay_cursors has no row for ${this.options.streamKey}`);
    return { txId: row.tx_id, workflowId: row.workflow_id, sequence: Number(row.sequence) };
  }

  /**
   * Up to `limit` events after `after` in relay order, among those whose tx_id is below the oldest transaction id
   * still running: they are committed, and no event committed later can come before them (see `workflowEvents`).
   * Events of transactions committed without waiting for their WAL flush (claims, starts) are made durable before
   * this returns, so a PostgreSQL crash cannot take back an event once it is published. Needs the lock.
   */
  async readBatch(after: RelayPosition, limit: number): Promise<RelayBatch> {
    const client = this.lockedConnection();
    const { rows } = await client.query<EventDbRow>(
      // Qualified: a bare `tx_id` in ORDER BY would name the text output column and sort "10" before "9".
      `select e.tx_id::text as tx_id, e.workflow_id, e.sequence, e.type, e.node_id, e.workflow_status, e.node_status,
              e.time, e.data
         from workflow_events e
        where (e.tx_id, e.workflow_id, e.sequence) > ($1::xid8, $2::uuid, $3::bigint)
          and e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
        order by e.tx_id, e.workflow_id, e.sequence
        limit $4`,
      [after.txId, after.workflowId, after.sequence, limit],
    );
    let heldBackSince: Date | null = null;
    if (rows.length < limit) {
      // Committed events past the horizon: an older transaction is still open (in any database of the server).
      const held = await client.query<{ time: Date }>(
        `select time from workflow_events
          where tx_id >= pg_snapshot_xmin(pg_current_snapshot())
          order by tx_id, workflow_id, sequence
          limit 1`,
      );
      heldBackSince = held.rows[0]?.time ?? null;
    }
    if (rows.length > 0) {
      // A write committed synchronously flushes the WAL up to its commit record, and with it the commit records of
      // every transaction whose events were just read (they committed before the read). Committing an xid alone
      // would not do: PostgreSQL commits a transaction that wrote no WAL asynchronously.
      await client.query("update event_relay_cursors set updated_at = now() where stream_key = $1", [
        this.options.streamKey,
      ]);
    }
    return { events: rows.map(eventFromDbRow), heldBackSince };
  }

  /** Stores `position` as the cursor; never moves it backwards. Needs the lock. */
  async saveCursor(position: RelayPosition): Promise<void> {
    await this.lockedConnection().query(
      `update event_relay_cursors
          set tx_id = $2::xid8, workflow_id = $3::uuid, sequence = $4::bigint, updated_at = now()
        where stream_key = $1 and (tx_id, workflow_id, sequence) < ($2::xid8, $3::uuid, $4::bigint)`,
      [this.options.streamKey, position.txId, position.workflowId, position.sequence],
    );
  }

  /** Closes the connection, which releases the lock; the next tryLock connects again. */
  async reset(): Promise<void> {
    const client = this.client;
    this.client = null;
    this.locked = false;
    await client?.end().catch(() => undefined);
  }

  private lockedConnection(): pg.Client {
    if (!this.client || !this.locked) throw new Error("the event relay does not hold its lock");
    return this.client;
  }

  private async connection(): Promise<pg.Client> {
    if (this.client) return this.client;
    const client = new pg.Client({
      connectionString: this.options.databaseUrl,
      application_name: "trellis-event-relay",
      connectionTimeoutMillis: 10_000,
      query_timeout: this.options.queryTimeoutMs ?? 30_000,
      keepAlive: true,
    });
    client.on("error", (error) => {
      if (this.client === client) {
        this.client = null;
        this.locked = false;
      }
      this.options.onError?.(error);
      client.end().catch(() => undefined);
    });
    await client.connect();
    try {
      // The durability of readBatch rests on synchronous commits, whatever the database's default.
      await client.query("set synchronous_commit = on");
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
    this.client = client;
    return client;
  }
}

function eventFromDbRow(row: EventDbRow): RelayEvent {
  return {
    txId: row.tx_id,
    workflowId: row.workflow_id,
    sequence: Number(row.sequence),
    type: row.type,
    nodeId: row.node_id,
    workflowStatus: row.workflow_status,
    nodeStatus: row.node_status,
    time: row.time,
    data: row.data,
  };
}
