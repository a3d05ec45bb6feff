import type { IncomingMessage, ServerResponse } from "node:http";
import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { ExpressAdapter } from "@bull-board/express";
import express from "express";
import { PgStateManager, createDatabase, createPool } from "@trellis/db";
import { TrellisError } from "@trellis/core";
import { NodeQueues, checkRedis, createRedis } from "@trellis/queue";
import type { Logger } from "pino";
import { checkBasicAuth } from "./basic-auth.js";
import type { DashboardSettings } from "./config.js";
import { renderWorkflow, renderWorkflowList } from "./page.js";

/** A running dashboard: an HTTP handler plus what it holds. */
export interface DashboardApp {
  /** Handles every request the side server does not (/metrics, /healthz, /readyz). */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  isReady(): boolean;
  close(): Promise<void>;
}

/** Builds the dashboard: workflow pages from PostgreSQL and Bull Board at /queues over every capability queue. */
export async function startDashboardApp(settings: DashboardSettings, deps: { logger: Logger }): Promise<DashboardApp> {
  const { logger } = deps;
  const pool = createPool(settings.databaseUrl, { max: 4, applicationName: "trellis-dashboard" });
  await pool.query("select 1");
  await checkRedis(settings.redisUrl);
  const stateManager = new PgStateManager(createDatabase(pool));
  const redis = createRedis(settings.redisUrl);
  redis.on("error", (e) => logger.warn({ err: e }, "redis connection error"));
  const queues = new NodeQueues(redis, settings.queuePrefix);

  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath("/queues");
  const board = createBullBoard({ queues: [], serverAdapter });
  // New capability queues appear without a restart.
  const refreshQueues = async () => {
    const names = await queues.discover();
    board.replaceQueues(names.map((name) => new BullMQAdapter(queues.queue(name))));
  };
  await refreshQueues();
  const refresh = setInterval(
    () => void refreshQueues().catch((e) => logger.warn({ err: e }, "queue discovery failed")),
    5_000,
  );
  refresh.unref();

  const app = express();
  app.disable("x-powered-by");
  app.use("/queues", serverAdapter.getRouter());
  app.get("/", async (_req, res, next) => {
    try {
      const page = await stateManager.listWorkflows({ pageSize: 100 });
      res.type("html").send(renderWorkflowList(page.workflows));
    } catch (error) {
      next(error);
    }
  });
  app.get("/workflows/:id", async (req, res, next) => {
    try {
      res.type("html").send(renderWorkflow(await stateManager.getWorkflow(req.params.id)));
    } catch (error) {
      if (error instanceof TrellisError) {
        res
          .status(error.code === "NOT_FOUND" ? 404 : 400)
          .type("text")
          .send(error.message);
        return;
      }
      next(error);
    }
  });

  return {
    handle(req, res) {
      if (!checkBasicAuth(req, res, settings)) return true;
      app(req as express.Request, res as express.Response);
      return true;
    },
    isReady: () => redis.status === "ready",
    async close() {
      clearInterval(refresh);
      await queues.close();
      redis.disconnect();
      await pool.end();
    },
  };
}
