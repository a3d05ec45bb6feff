import pg from "pg";
import { CHANNELS } from "@trellis/db";
import { nowMs } from "./clock.js";

/** One `trellis_events` notification: a transaction committed events up to `sequence` for a workflow. */
interface Commit {
  workflowId: string;
  sequence: number;
  at: number;
}

/**
 * LISTENs on the engine's events channel (payload `<workflow id>:<last sequence>`, sent by every transaction
 * that writes events, delivered at its commit) and stamps each notification with nowMs. The time the
 * transaction holding event N committed is then the stamp of the first notification of that workflow with a
 * sequence >= N: a commit time on the same clock as the no-op NodeService's, to well under a millisecond,
 * which `nodes.finished_at` (`now()`, the transaction's start, rounded to the millisecond) is not.
 */
export class CommitListener {
  private readonly commits = new Map<string, Commit[]>();

  private constructor(private readonly client: pg.Client) {
    client.on("notification", (message) => {
      const at = nowMs();
      const payload = message.payload ?? "";
      const colon = payload.lastIndexOf(":");
      if (colon < 0) return;
      const workflowId = payload.slice(0, colon);
      const sequence = Number(payload.slice(colon + 1));
      let list = this.commits.get(workflowId);
      if (!list) {
        list = [];
        this.commits.set(workflowId, list);
      }
      list.push({ workflowId, sequence, at });
    });
  }

  /** Connects to `databaseUrl` and starts listening. */
  static async start(databaseUrl: string): Promise<CommitListener> {
    const client = new pg.Client({ connectionString: databaseUrl, application_name: "trellis-bench-listener" });
    await client.connect();
    client.on("error", () => undefined);
    await client.query(`listen ${pg.escapeIdentifier(CHANNELS.events)}`);
    return new CommitListener(client);
  }

  /** When the transaction that wrote event `sequence` of `workflowId` was seen to commit; undefined if never. */
  commitTime(workflowId: string, sequence: number): number | undefined {
    const list = this.commits.get(workflowId) ?? [];
    return list.find((c) => c.sequence >= sequence)?.at;
  }

  /** Stops listening. */
  async close(): Promise<void> {
    await this.client.end().catch(() => undefined);
  }
}
