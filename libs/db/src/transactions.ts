import { AsyncLocalStorage } from "node:async_hooks";
import type { JsonObject } from "@bufbuild/protobuf";
import { type SQL, sql } from "drizzle-orm";
import { CHANNELS } from "./channels.js";
import type { NodeStatusName, WorkflowStatusName } from "./mapping.js";
import type { Database } from "./pool.js";
import type { workflowEvents } from "./schema.js";

const actors = new AsyncLocalStorage<string>();

/**
 * Runs `work` on behalf of an actor (an api token's name): every write transaction it starts sets the
 * transaction-local `trellis.actor`, which trellis_write_events adds to each event's data as `actor`.
 */
export function withActor<T>(actor: string | undefined, work: () => Promise<T>): Promise<T> {
  return actor === undefined ? work() : actors.run(actor, work);
}

/** The actor of the current call (see withActor), if any. */
export function currentActor(): string | undefined {
  return actors.getStore();
}

function setActorStatement(actor: string): SQL {
  return sql`select set_config('trellis.actor', ${actor}, true)`;
}

/** An event as written (numbered by `trellis_write_events`). */
export type NewEvent = typeof workflowEvents.$inferInsert;

/** A Drizzle transaction. */
export type Tx = Parameters<Parameters<Database["transaction"]>[0]>[0];

/** A NOTIFY to send after commit. */
export interface Notification {
  channel: string;
  payload: string;
}

/** What a transaction hands over once it has committed: its events and the notifications to send. */
export interface TransactionOutbox {
  events: NewEvent[];
  notifications: Notification[];
}

/** A write transaction in progress, with the outbox its statements fill. Passed explicitly, never looked up. */
export interface TxContext {
  tx: Tx;
  outbox: TransactionOutbox;
}

/** A row of a SQL function of libs/db/sql: its kind and a JSON body. */
export interface FunctionRow extends Record<string, unknown> {
  kind: string;
  body: Record<string, unknown>;
}

/** Something that runs a statement: the pool's Drizzle database or a transaction. */
type Executor = Pick<Database, "execute">;

/** An event row as trellis_write_events returns it (to_jsonb of workflow_events). */
function eventOfRow(body: Record<string, unknown>): NewEvent {
  return {
    workflowId: String(body.workflow_id),
    sequence: Number(body.sequence),
    type: String(body.type),
    nodeId: (body.node_id as string | null) ?? null,
    workflowStatus: body.workflow_status as WorkflowStatusName,
    nodeStatus: (body.node_status as NodeStatusName | null) ?? null,
    data: (body.data ?? {}) as JsonObject,
    time: new Date(String(body.time)),
  };
}

/**
 * The transaction and notification plumbing every store of libs/db shares: runs write transactions and the SQL
 * functions (libs/db/sql), and after each commit sends the notifications (coalesced, without the writer waiting)
 * and hands the committed events to `onEvents`.
 */
export class Transactions {
  private readonly unsent: Notification[] = [];
  private notifying: Promise<void> | null = null;

  constructor(
    readonly db: Database,
    private readonly onEvents?: (events: readonly NewEvent[]) => void,
  ) {}

  /** Runs a write transaction; after it commits, sends its notifications and hands its events to onEvents. */
  async write<T>(work: (ctx: TxContext) => Promise<T>): Promise<T> {
    const outbox: TransactionOutbox = { events: [], notifications: [] };
    const actor = currentActor();
    const result = await this.db.transaction(async (tx) => {
      if (actor !== undefined) await tx.execute(setActorStatement(actor));
      return work({ tx, outbox });
    });
    this.afterCommit(outbox, true);
    return result;
  }

  /**
   * Runs a SQL function that is a whole transaction in one autocommit statement, then does what write() does after a
   * commit with the events it returns and the `ready` workflows it names. `notifiesEvents`: the function sent the
   * events' notifications itself (the async-commit ones do).
   */
  async call(statement: SQL, options: { notifiesEvents?: boolean } = {}): Promise<FunctionRow[]> {
    const outbox: TransactionOutbox = { events: [], notifications: [] };
    const actor = currentActor();
    // With an actor the statement runs in a transaction that sets it first (the setting is transaction-local).
    const rows =
      actor === undefined
        ? await this.run(this.db, statement, outbox)
        : await this.db.transaction(async (tx) => {
            await tx.execute(setActorStatement(actor));
            return this.run(tx, statement, outbox);
          });
    this.afterCommit(outbox, !options.notifiesEvents);
    return rows;
  }

  /** Runs a SQL function inside a write transaction; its events and notifications go to the transaction's outbox. */
  callIn(ctx: TxContext, statement: SQL): Promise<FunctionRow[]> {
    return this.run(ctx.tx, statement, ctx.outbox);
  }

  private async run(executor: Executor, statement: SQL, outbox: TransactionOutbox): Promise<FunctionRow[]> {
    const { rows } = await executor.execute<FunctionRow>(statement);
    for (const row of rows) {
      if (row.kind === "event") outbox.events.push(eventOfRow(row.body));
      else if (row.kind === "ready") {
        outbox.notifications.push({ channel: CHANNELS.ready, payload: String(row.body.workflow_id) });
      }
    }
    return rows;
  }

  /** Sends a committed transaction's notifications (without waiting for them) and hands its events to onEvents. */
  private afterCommit(outbox: TransactionOutbox, notifyEvents: boolean): void {
    const events = outbox.events.sort((a, b) =>
      a.workflowId === b.workflowId ? a.sequence - b.sequence : a.workflowId < b.workflowId ? -1 : 1,
    );
    const notifications = [...outbox.notifications];
    if (notifyEvents) {
      const last = new Map<string, number>();
      for (const e of events) last.set(e.workflowId, e.sequence);
      for (const [workflowId, sequence] of last) {
        notifications.push({ channel: CHANNELS.events, payload: `${workflowId}:${sequence}` });
      }
    }
    if (notifications.length > 0) this.notify(notifications);
    if (events.length > 0 && this.onEvents) {
      try {
        this.onEvents(events);
      } catch {
        // An observer's failure must not turn a committed change into an error.
      }
    }
  }

  /**
   * Queues notifications for sending, without making the committed change wait for them: they go out in one
   * autocommit statement, together with any that queue while one is in flight (one statement per burst, not per
   * transaction). NOTIFY inside a writing transaction would hold PostgreSQL's database-wide notify lock through the
   * commit's WAL flush, serialising every commit of every app. A failure (or a crash before sending) only delays
   * listeners until they poll (scheduler poll, event hub poll, worker heartbeat).
   */
  private notify(notifications: readonly Notification[]): void {
    this.unsent.push(...notifications);
    if (!this.notifying) this.notifying = this.sendNotifications().finally(() => (this.notifying = null));
  }

  private async sendNotifications(): Promise<void> {
    while (this.unsent.length > 0) {
      const unique = new Map(this.unsent.splice(0, 10_000).map((n) => [`${n.channel}\n${n.payload}`, n]));
      const batch = [...unique.values()];
      try {
        await this.db.execute(sql`
          select count(pg_notify(n.channel, n.payload))
            from unnest(${sql.param(batch.map((n) => n.channel))}::text[],
                        ${sql.param(batch.map((n) => n.payload))}::text[]) as n(channel, payload)`);
      } catch {
        // Listeners fall back to polling.
      }
    }
  }

  /** Resolves once every notification queued so far has been sent (or failed); for shutdown and tests. */
  async flushNotifications(): Promise<void> {
    while (this.notifying) await this.notifying;
  }
}

/** Queues a NOTIFY for after the transaction commits (see Transactions.notify for why not inside it). */
export function notifyAfterCommit(ctx: TxContext, channel: string, payload: string): void {
  ctx.outbox.notifications.push({ channel, payload });
}
