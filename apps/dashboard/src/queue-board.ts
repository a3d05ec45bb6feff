import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { ExpressAdapter } from "@bull-board/express";
import type { NodeQueues } from "@trellis/queue";
import type { Router } from "express";
import type { Logger } from "pino";

/** Bull Board over every capability queue, mounted at `basePath`. */
export interface QueueBoard {
  router: Router;
  /** Re-reads the queue list from Redis now. */
  refresh(): Promise<void>;
  close(): void;
}

/**
 * Starts Bull Board over the queues of `queues.prefix`, re-discovering them every `refreshMs` so that a new
 * capability's queue appears without a restart.
 */
export async function startQueueBoard(opts: {
  queues: NodeQueues;
  basePath: string;
  refreshMs: number;
  logger: Logger;
}): Promise<QueueBoard> {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(opts.basePath);
  const board = createBullBoard({
    queues: [],
    serverAdapter,
    options: { uiConfig: { boardTitle: "Trellis queues" } },
  });
  let shown = "";
  const refresh = async () => {
    const names = await opts.queues.discover();
    // Replacing the adapters resets Bull Board's view state: only do it when the list changed.
    if (names.join("\n") === shown) return;
    shown = names.join("\n");
    board.replaceQueues(names.map((name) => new BullMQAdapter(opts.queues.queue(name), { readOnlyMode: false })));
  };
  await refresh();
  const timer = setInterval(
    () => void refresh().catch((e) => opts.logger.warn({ err: e }, "queue discovery failed")),
    opts.refreshMs,
  );
  timer.unref();
  return { router: serverAdapter.getRouter() as Router, refresh, close: () => clearInterval(timer) };
}
