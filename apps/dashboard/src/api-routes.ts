import { type JsonValue, create, fromJson, toJson } from "@bufbuild/protobuf";
import {
  InvalidArgumentError,
  NotFoundError,
  assertNodeId,
  assertWorkflowId,
  limitSpecFromProto,
  validateLimitKey,
} from "@trellis/core";
import { type ActionEffects, type LimitState, type StateManager, type WorkerInfo, limitToProto } from "@trellis/db";
import {
  ForkWorkflowRequestSchema,
  ForkWorkflowResponseSchema,
  GetNodeResponseSchema,
  GetWorkflowResponseSchema,
  LimitSchema,
  ListWorkflowsResponseSchema,
  SetLimitRequestSchema,
  UpdateWorkflowResponseSchema,
  WorkflowAction,
  WorkflowEventSchema,
} from "@trellis/proto";
import express, { type NextFunction, type Request, type Response } from "express";
import type { Logger } from "pino";
import { type WorkflowEventSource, writeEventStream } from "./event-stream.js";
import { errorAnswer } from "./http-errors.js";
import { addScheduleRoutes } from "./schedule-routes.js";
import { addSignalRoute } from "./signal-route.js";
import { parseWorkflowSearch, searchWorkflows } from "./workflow-search.js";

/** Events per `GET /api/workflows/:id/events` page when the request does not say. */
export const DEFAULT_EVENTS_LIMIT = 500;
/** Largest `limit` of `GET /api/workflows/:id/events`. */
export const MAX_EVENTS_LIMIT = 1_000;

/** What the JSON API needs. */
export interface ApiRouterDeps {
  stateManager: StateManager;
  events: WorkflowEventSource;
  /** The events with running nodes' output chunks interleaved (`?chunks=1`); without it no chunks are sent. */
  chunks?: WorkflowEventSource | undefined;
  logger: Logger;
  /** Period of SSE heartbeat comments. */
  heartbeatMs: number;
  /** A worker whose heartbeat is older is not live (WORKER_STALE_MS). @default 5000 */
  workerStaleMs?: number | undefined;
  /** Aborts every open event stream (shutdown). */
  shutdownSignal: AbortSignal;
  /** Open event streams, so the app can report and end them. */
  streams: Set<AbortController>;
  /** Called after an action was applied, with what it changed (queues to clean, a scheduler to wake). */
  onAction?: ((action: WorkflowAction, effects: ActionEffects) => void) | undefined;
  /** Called with the id of a workflow a fork created (a scheduler to wake). */
  onFork?: ((workflowId: string) => void) | undefined;
  /** Called with the id of a workflow whose node a signal completed (a scheduler to wake). */
  onSignal?: ((workflowId: string) => void) | undefined;
}

const ACTIONS: Readonly<Record<string, WorkflowAction>> = {
  cancel: WorkflowAction.CANCEL,
  pause: WorkflowAction.PAUSE,
  resume: WorkflowAction.RESUME,
  retry: WorkflowAction.RETRY,
};

function workflowIdOf(req: Request): string {
  const id = String(req.params.id);
  assertWorkflowId(id, "workflow_id");
  return id;
}

/** A non-negative integer from the query string (or a header); `fallback` when absent. */
function sequenceOf(raw: unknown, field: string, fallback = 0): number {
  if (raw === undefined || raw === "") return fallback;
  const n = typeof raw === "string" && /^\d{1,15}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(n))
    throw new InvalidArgumentError(field, `must be a non-negative integer, got ${JSON.stringify(raw)}`);
  return n;
}

/**
 * Refuses state-changing requests sent by another site's page: a browser sends the basic-auth credentials it
 * holds for the dashboard with any request, so a cross-site form could otherwise cancel workflows.
 */
function sameOrigin(req: Request): boolean {
  if (req.get("sec-fetch-site") === "cross-site") return false;
  const origin = req.get("origin");
  if (origin === undefined || origin === "null") return origin === undefined;
  try {
    return new URL(origin).host === req.get("host");
  } catch {
    return false;
  }
}

/** Largest JSON body the API accepts (a SetLimit request is a few hundred bytes). */
const MAX_BODY_BYTES = 16 * 1024;

/**
 * A limit as the Limits page reads it: the protobuf JSON of the Limit that ListLimits answers, plus what only the
 * dashboard shows: whether SetLimit made it (false: only a THROTTLED answer's pause) and the THROTTLED answers so far.
 */
export function limitJson(state: LimitState): { [key: string]: JsonValue } {
  return {
    ...(toJson(LimitSchema, limitToProto(state)) as { [key: string]: JsonValue }),
    configured: state.configured,
    throttledTotal: state.throttledTotal,
  };
}

/** A worker as `GET /api/workers` answers it (camelCase JSON, timestamps as RFC 3339). */
export function workerJson(worker: WorkerInfo): { [key: string]: JsonValue } {
  return {
    id: worker.id,
    hostname: worker.hostname,
    capabilities: worker.capabilities,
    startedAt: worker.startedAt.toISOString(),
    heartbeatAt: worker.heartbeatAt.toISOString(),
    heartbeatAgeMs: worker.heartbeatAgeMs,
    live: worker.live,
    running: worker.running,
  };
}

/** A SetLimitRequest in protobuf JSON (`{"limit": {...}}`), checked: unknown fields and bad values name the field. */
function setLimitRequestOf(body: unknown) {
  let request: ReturnType<typeof fromJson<typeof SetLimitRequestSchema>>;
  try {
    request = fromJson(SetLimitRequestSchema, (body ?? {}) as JsonValue);
  } catch (error) {
    throw new InvalidArgumentError("limit", (error as Error).message);
  }
  return limitSpecFromProto(request.limit);
}

/**
 * What `POST /api/workflows/:id/fork` asks for: a ForkWorkflowRequest in protobuf JSON without its workflow_id (the
 * path's), e.g. `{"fromNodeIds": ["b"], "inputs": {"b": {"prompt": "..."}}}`.
 */
function forkRequestOf(workflowId: string, body: unknown) {
  let request: ReturnType<typeof fromJson<typeof ForkWorkflowRequestSchema>>;
  try {
    request = fromJson(ForkWorkflowRequestSchema, (body ?? {}) as JsonValue);
  } catch (error) {
    throw new InvalidArgumentError("body", (error as Error).message);
  }
  if (request.fromNodeIds.length === 0) {
    throw new InvalidArgumentError("from_node_ids", "at least one node id is required");
  }
  for (const [i, id] of request.fromNodeIds.entries()) assertNodeId(id, `from_node_ids[${i}]`);
  return {
    workflowId,
    fromNodeIds: request.fromNodeIds,
    inputs: request.inputs,
    requestId: request.requestId === "" ? undefined : request.requestId,
  };
}

/** A body express.json() refused (malformed JSON, too large) as the typed error it is; undefined for others. */
function bodyError(error: unknown): InvalidArgumentError | undefined {
  const type = (error as { type?: unknown } | null)?.type;
  if (type === "entity.parse.failed") return new InvalidArgumentError("body", "is not valid JSON");
  if (type === "entity.too.large") return new InvalidArgumentError("body", `must be at most ${MAX_BODY_BYTES} bytes`);
  return undefined;
}

/** The dashboard's JSON API and event stream under `/api` (protobuf JSON bodies, typed errors as 400/404/409). */
export function createApiRouter(deps: ApiRouterDeps): express.Router {
  const { stateManager, logger } = deps;
  const router = express.Router();

  router.get("/workflows", async (req, res) => {
    const page = await searchWorkflows(stateManager, parseWorkflowSearch(req.query));
    res.json(toJson(ListWorkflowsResponseSchema, create(ListWorkflowsResponseSchema, page)));
  });

  router.get("/workflows/:id", async (req, res) => {
    const workflow = await stateManager.getWorkflow(workflowIdOf(req));
    res.json(toJson(GetWorkflowResponseSchema, create(GetWorkflowResponseSchema, { workflow })));
  });

  router.get("/workflows/:id/nodes/:nodeId", async (req, res) => {
    const workflowId = workflowIdOf(req);
    const nodeId = String(req.params.nodeId);
    assertNodeId(nodeId, "node_id");
    const [node, attempts] = await Promise.all([
      stateManager.getNode(workflowId, nodeId),
      stateManager.listNodeAttempts(workflowId, nodeId),
    ]);
    res.json(toJson(GetNodeResponseSchema, create(GetNodeResponseSchema, { node, attempts })));
  });

  router.get("/workflows/:id/events", async (req, res) => {
    const workflowId = workflowIdOf(req);
    const after = sequenceOf(req.query.after, "after");
    const limit = sequenceOf(req.query.limit, "limit", DEFAULT_EVENTS_LIMIT);
    if (limit < 1 || limit > MAX_EVENTS_LIMIT) {
      throw new InvalidArgumentError("limit", `must be between 1 and ${MAX_EVENTS_LIMIT}, got ${limit}`);
    }
    // Unknown workflows are a 404, not an empty list.
    await stateManager.getWorkflowStatus(workflowId);
    const events = await stateManager.listEvents(workflowId, after, limit);
    res.json({ events: events.map((e) => toJson(WorkflowEventSchema, e)) });
  });

  router.post("/workflows/:id/actions/:action", async (req, res) => {
    if (!sameOrigin(req)) {
      res.status(403).json({ error: { code: "PERMISSION_DENIED", message: "cross-origin request refused" } });
      return;
    }
    const workflowId = workflowIdOf(req);
    const name = String(req.params.action);
    const action = ACTIONS[name];
    if (action === undefined) {
      throw new InvalidArgumentError("action", `unknown action ${JSON.stringify(name)} (cancel, pause, resume, retry)`);
    }
    const effects = await stateManager.updateWorkflow(workflowId, { action });
    logger.info({ workflow_id: workflowId, action: name }, "workflow action from the dashboard");
    deps.onAction?.(action, effects);
    res.json(
      toJson(UpdateWorkflowResponseSchema, create(UpdateWorkflowResponseSchema, { workflow: effects.workflow })),
    );
  });

  router.post("/workflows/:id/fork", express.json({ limit: MAX_BODY_BYTES, strict: false }), async (req, res) => {
    if (!sameOrigin(req)) {
      res.status(403).json({ error: { code: "PERMISSION_DENIED", message: "cross-origin request refused" } });
      return;
    }
    const request = forkRequestOf(workflowIdOf(req), req.body);
    const { workflow, created } = await stateManager.forkWorkflow(request);
    logger.info(
      { workflow_id: workflow.id, forked_from: request.workflowId, from_node_ids: request.fromNodeIds },
      "workflow forked from the dashboard",
    );
    if (created) deps.onFork?.(workflow.id);
    res.json(toJson(ForkWorkflowResponseSchema, create(ForkWorkflowResponseSchema, { workflow })));
  });

  addSignalRoute(router, { stateManager, logger, sameOrigin, onSignal: deps.onSignal });

  router.get("/limits", async (_req, res) => {
    const limits = await stateManager.listLimits();
    res.json({ limits: limits.map(limitJson) });
  });

  router.post("/limits", express.json({ limit: MAX_BODY_BYTES, strict: false }), async (req, res) => {
    if (!sameOrigin(req)) {
      res.status(403).json({ error: { code: "PERMISSION_DENIED", message: "cross-origin request refused" } });
      return;
    }
    const limit = await stateManager.setLimit(setLimitRequestOf(req.body));
    logger.info({ key: limit.key }, "limit set from the dashboard");
    res.json({ limit: limitJson(limit) });
  });

  router.delete("/limits/:key", async (req, res) => {
    if (!sameOrigin(req)) {
      res.status(403).json({ error: { code: "PERMISSION_DENIED", message: "cross-origin request refused" } });
      return;
    }
    const key = String(req.params.key);
    validateLimitKey(key, "key", "allowed");
    if (!(await stateManager.deleteLimit(key))) throw new NotFoundError(`no limit on key ${JSON.stringify(key)}`);
    logger.info({ key }, "limit deleted from the dashboard");
    res.json({});
  });

  router.get("/workers", async (_req, res) => {
    const staleAfterMs = deps.workerStaleMs ?? 5_000;
    const workers = await stateManager.listWorkers(staleAfterMs);
    res.json({ staleAfterMs, workers: workers.map(workerJson) });
  });

  addScheduleRoutes(router, { stateManager, logger, sameOrigin, maxBodyBytes: MAX_BODY_BYTES });

  router.get("/workflows/:id/stream", async (req, res) => {
    const workflowId = workflowIdOf(req);
    // A reconnecting EventSource sends the id of the last event it received.
    const after = Math.max(sequenceOf(req.query.after, "after"), sequenceOf(req.get("last-event-id"), "Last-Event-ID"));
    // Answered as a 404 before the stream starts.
    await stateManager.getWorkflowStatus(workflowId);
    const controller = new AbortController();
    const stop = () => controller.abort();
    res.on("close", stop);
    deps.shutdownSignal.addEventListener("abort", stop, { once: true });
    deps.streams.add(controller);
    try {
      await writeEventStream(res, {
        events: req.query.chunks === "1" && deps.chunks ? deps.chunks : deps.events,
        workflowId,
        afterSequence: after,
        heartbeatMs: deps.heartbeatMs,
        signal: controller.signal,
        onError: (error) => logger.warn({ err: error, workflow_id: workflowId }, "event stream failed"),
      });
    } finally {
      deps.streams.delete(controller);
      res.off("close", stop);
      deps.shutdownSignal.removeEventListener("abort", stop);
    }
  });

  router.use((_req, res) => {
    res.status(404).json({ error: { code: "NOT_FOUND", message: "no such endpoint" } });
  });

  router.use((error: unknown, req: Request, res: Response, _next: NextFunction) => {
    const answer = errorAnswer(bodyError(error) ?? error);
    if (answer.status >= 500)
      logger.error({ err: error, method: req.method, url: req.originalUrl }, "api request failed");
    if (res.headersSent) {
      res.end();
      return;
    }
    res.status(answer.status).json(answer.body);
  });

  return router;
}
