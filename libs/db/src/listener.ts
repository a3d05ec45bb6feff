import { EventEmitter } from "node:events";
import pg from "pg";

/** Options of a PgListener. */
export interface PgListenerOptions {
  databaseUrl: string;
  channels: readonly string[];
  /** Called on connection errors; the listener reconnects by itself. */
  onError?: (error: Error) => void;
  /** Called after every (re)connect, so callers can catch up on what they may have missed. */
  onConnect?: () => void;
}

/**
 * A dedicated connection that LISTENs on channels and emits `notification` (channel, payload).
 * Reconnects with backoff (100 ms doubling to 5 s) when the connection drops.
 */
export class PgListener extends EventEmitter<{ notification: [channel: string, payload: string] }> {
  private client: pg.Client | null = null;
  private closed = false;
  private retryMs = 100;
  private reconnectTimer: NodeJS.Timeout | null = null;

  constructor(private readonly options: PgListenerOptions) {
    super();
  }

  /** Connects and LISTENs; rejects when the first connection fails. */
  async start(): Promise<void> {
    await this.connect();
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.options.databaseUrl, application_name: "trellis-listener" });
    client.on("notification", (msg) => this.emit("notification", msg.channel, msg.payload ?? ""));
    client.on("error", (error) => this.lost(client, error));
    client.on("end", () => this.lost(client, new Error("listener connection ended")));
    await client.connect();
    for (const channel of this.options.channels) await client.query(`listen ${pg.escapeIdentifier(channel)}`);
    this.client = client;
    this.retryMs = 100;
    this.options.onConnect?.();
  }

  private lost(client: pg.Client, error: Error): void {
    if (this.closed || this.client !== client) return;
    this.client = null;
    this.options.onError?.(error);
    client.end().catch(() => undefined);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, 5_000);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect().catch((error: Error) => {
        this.options.onError?.(error);
        this.scheduleReconnect();
      });
    }, delay);
  }

  /** Whether the LISTEN connection is up. */
  get connected(): boolean {
    return this.client !== null;
  }

  /** Stops listening and closes the connection. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }
}
