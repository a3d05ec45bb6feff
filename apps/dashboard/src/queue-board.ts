import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { ExpressAdapter } from "@bull-board/express";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
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
 * Bull Board's page template without what it loads from other hosts (its web fonts come from a font CDN): the
 * dashboard loads nothing from outside the server (it falls back to system fonts). Written to a new temporary folder,
 * returned with a function that removes it.
 */
function selfHostedViews(): { path: string; remove: () => void } {
  const ui = dirname(createRequire(import.meta.url).resolve("@bull-board/ui/package.json"));
  const template = readFileSync(join(ui, "dist", "index.ejs"), "utf8").replace(
    /<link\b[^>]*\bhref="(?:https?:)?\/\/[^"]*"[^>]*>\s*/g,
    "",
  );
  const path = mkdtempSync(join(tmpdir(), "trellis-queue-board-"));
  writeFileSync(join(path, "index.ejs"), template);
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/**
 * Starts Bull Board over the queues of `queues.prefix`, re-discovering them every `refreshMs` so that a new
 * capability's queue appears without a restart. Read-only unless `actions` (DASHBOARD_QUEUE_ACTIONS): a job retried,
 * promoted or removed here changes a queue behind the StateManager's back.
 */
export async function startQueueBoard(opts: {
  queues: NodeQueues;
  basePath: string;
  refreshMs: number;
  logger: Logger;
  /** Bull Board's write actions. @default false */
  actions?: boolean | undefined;
}): Promise<QueueBoard> {
  const readOnlyMode = opts.actions !== true;
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(opts.basePath);
  const board = createBullBoard({
    queues: [],
    serverAdapter,
    options: { uiConfig: { boardTitle: "Trellis queues" } },
  });
  const views = selfHostedViews();
  serverAdapter.setViewsPath(views.path);
  let shown = "";
  const refresh = async () => {
    const names = await opts.queues.discover();
    // Replacing the adapters resets Bull Board's view state: only do it when the list changed.
    if (names.join("\n") === shown) return;
    shown = names.join("\n");
    board.replaceQueues(names.map((name) => new BullMQAdapter(opts.queues.queue(name), { readOnlyMode })));
  };
  await refresh();
  const timer = setInterval(
    () => void refresh().catch((e) => opts.logger.warn({ err: e }, "queue discovery failed")),
    opts.refreshMs,
  );
  timer.unref();
  return {
    router: serverAdapter.getRouter() as Router,
    refresh,
    close: () => {
      clearInterval(timer);
      views.remove();
    },
  };
}
