import { type JsonValue, fromJson, toJson } from "@bufbuild/protobuf";
import { InvalidArgumentError, assertNodeId, assertWorkflowId, validateSignalRequest } from "@trellis/core";
import type { SignalInput, StateManager } from "@trellis/db";
import { NodeSchema, SignalNodeRequestSchema } from "@trellis/proto";
import express, { type Request } from "express";
import type { Logger } from "pino";

/** What the signal endpoint needs from the JSON API's router. */
export interface SignalRouteDeps {
  stateManager: StateManager;
  logger: Logger;
  /** Whether a state-changing request comes from the dashboard's own pages. */
  sameOrigin: (req: Request) => boolean;
  /** Called with the workflow id when a signal completed its node (a scheduler to wake for the node's children). */
  onSignal?: ((workflowId: string) => void) | undefined;
}

/** Largest signal body: an approval's output JSON can be larger than the other write routes' bodies. */
const MAX_SIGNAL_BODY_BYTES = 256 * 1024;

/**
 * What `POST /api/workflows/:id/nodes/:nodeId/signal` asks for: a SignalNodeRequest in protobuf JSON without its ids
 * (the path's), e.g. `{"output": {"approved": true}}` or `{"reject": true, "message": "too costly"}`; checked as the
 * api's SignalNode checks it, before the StateManager is called.
 */
export function signalInputOf(workflowId: string, nodeId: string, body: unknown): SignalInput {
  assertWorkflowId(workflowId, "workflow_id");
  assertNodeId(nodeId, "node_id");
  let request: ReturnType<typeof fromJson<typeof SignalNodeRequestSchema>>;
  try {
    request = fromJson(SignalNodeRequestSchema, (body ?? {}) as JsonValue);
  } catch (error) {
    throw new InvalidArgumentError("body", (error as Error).message);
  }
  if (request.workflowId !== "" || request.nodeId !== "") {
    throw new InvalidArgumentError("body", "the workflow and node ids are the path's, not the body's");
  }
  validateSignalRequest(request);
  return {
    workflowId,
    nodeId,
    output: request.output,
    reject: request.reject,
    message: request.message,
    edits: request.edits,
    requestId: request.requestId === "" ? undefined : request.requestId,
  };
}

/**
 * `POST /workflows/:id/nodes/:nodeId/signal`: the node panel's Approve and Reject, through the StateManager's
 * signalNode as the api's SignalNode. Answers `{node, completed}`: completed is false while the signal is kept for a
 * node not ready yet.
 */
export function addSignalRoute(router: express.Router, deps: SignalRouteDeps): void {
  router.post(
    "/workflows/:id/nodes/:nodeId/signal",
    express.json({ limit: MAX_SIGNAL_BODY_BYTES, strict: false }),
    async (req, res) => {
      if (!deps.sameOrigin(req)) {
        res.status(403).json({ error: { code: "PERMISSION_DENIED", message: "cross-origin request refused" } });
        return;
      }
      const input = signalInputOf(String(req.params.id), String(req.params.nodeId), req.body);
      const { node, completed } = await deps.stateManager.signalNode(input);
      deps.logger.info(
        { workflow_id: input.workflowId, node_id: input.nodeId, reject: input.reject, completed },
        "node signaled from the dashboard",
      );
      if (completed) deps.onSignal?.(input.workflowId);
      res.json({ node: toJson(NodeSchema, node), completed });
    },
  );
}
