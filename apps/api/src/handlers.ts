import { create, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  InvalidArgumentError,
  AlreadyExistsError,
  NotFoundError,
  UnauthenticatedError,
  assertNodeId,
  assertWorkflowId,
  limitSpecFromProto,
  quoteForMessage,
  validateBudget,
  validateLimitKey,
  validateLimitKeys,
  validateNodeFlowControl,
  validatePriority,
  validateSignalRequest,
} from "@trellis/core";
import { type StateManager, type UpdateWorkflowInput, limitToProto, withActor } from "@trellis/db";
import {
  type CreateWorkflowRequest,
  type CreateWorkflowResponseSchema,
  type DeleteLimitRequest,
  type DeleteLimitResponseSchema,
  EditType,
  type EditWorkflowRequest,
  type EditWorkflowResponseSchema,
  type ForkWorkflowRequest,
  type SignalNodeRequest,
  type SignalNodeResponseSchema,
  type ForkWorkflowResponseSchema,
  type GetNodeRequest,
  type GetNodeResponseSchema,
  type GetWorkflowRequest,
  type GetWorkflowResponseSchema,
  type GrpcServiceHandlers,
  type ListLimitsRequest,
  type ListLimitsResponseSchema,
  type ListWorkflowsRequest,
  type ListWorkflowsResponseSchema,
  type Node,
  type NodeEdit,
  type SetLimitRequest,
  type SetLimitResponseSchema,
  type UpdateNodeRequest,
  type UpdateNodeResponseSchema,
  type UpdateWorkflowRequest,
  type UpdateWorkflowResponseSchema,
  type WatchWorkflowRequest,
  type WorkflowEvent,
  WorkflowAction,
  WorkflowService,
  WorkflowStatus,
} from "@trellis/proto";
import type { Logger } from "pino";
import { tokenOfMetadata } from "./auth.js";
import { deadlinePassed } from "./deadline.js";
import { toCallError } from "./errors.js";
import { scheduleServiceMethods } from "./schedule-handlers.js";
import { type TokenEntry, type TokenRegistry, isScoped } from "./tokens.js";
import { undecodableReason } from "./undecodable-requests.js";
import { startWorkflowSpan } from "./workflow-span.js";

/** ListWorkflows page size when the request leaves it 0. */
export const DEFAULT_PAGE_SIZE = 50;
/** Largest ListWorkflows page size. */
export const MAX_PAGE_SIZE = 500;

/** What the WorkflowService handlers need. */
export interface WorkflowServiceDeps {
  /** Where every read and write goes; it validates the domain rules and throws typed errors. */
  stateManager: StateManager;
  /** Unexpected errors are logged here with their correlation id. */
  logger: Logger;
  /**
   * Called after a change that may have made nodes ready (create, resume, retry, edits). The StateManager already
   * NOTIFYs the scheduler in the change's transaction; this lets an in-process scheduler (`npm start`) wake at once.
   */
  notifyScheduler?: ((workflowId: string) => void) | undefined;
  /** Source of WatchWorkflow streams; without it WatchWorkflow answers UNIMPLEMENTED. */
  events?: WorkflowEventSource | undefined;
  /** Source of WatchWorkflow streams with `include_chunks` (needs Redis); without it no chunks are sent. */
  chunks?: WorkflowEventSource | undefined;
  /**
   * The accepted tokens, when auth is on: each call's token names the actor of its events and scopes what it sees
   * (the interceptor has already checked its role). Unset: no auth, no actor, no scope.
   */
  tokens?: TokenRegistry | undefined;
}

/** Who makes a call: its token's name (the events' `actor`) and label scope. */
export type Caller = Pick<TokenEntry, "name" | "labels">;

/** Replays a workflow's committed events after a sequence, then follows live until its terminal event. */
export interface WorkflowEventSource {
  follow(workflowId: string, afterSequence: number, signal: AbortSignal): AsyncIterable<WorkflowEvent>;
}

/** The unary RPCs of WorkflowService as plain functions: request shape check -> StateManager -> response. */
export interface WorkflowServiceMethods {
  /** `metadata`: the call's, whose `traceparent` (tracing on) is the parent of the workflow's span. */
  createWorkflow(
    request: CreateWorkflowRequest,
    caller?: Caller,
    metadata?: grpc.Metadata,
  ): Promise<MessageInitShape<typeof CreateWorkflowResponseSchema>>;
  getWorkflow(
    request: GetWorkflowRequest,
    caller?: Caller,
  ): Promise<MessageInitShape<typeof GetWorkflowResponseSchema>>;
  listWorkflows(
    request: ListWorkflowsRequest,
    caller?: Caller,
  ): Promise<MessageInitShape<typeof ListWorkflowsResponseSchema>>;
  updateWorkflow(
    request: UpdateWorkflowRequest,
    caller?: Caller,
  ): Promise<MessageInitShape<typeof UpdateWorkflowResponseSchema>>;
  getNode(request: GetNodeRequest, caller?: Caller): Promise<MessageInitShape<typeof GetNodeResponseSchema>>;
  updateNode(request: UpdateNodeRequest, caller?: Caller): Promise<MessageInitShape<typeof UpdateNodeResponseSchema>>;
  editWorkflow(
    request: EditWorkflowRequest,
    caller?: Caller,
  ): Promise<MessageInitShape<typeof EditWorkflowResponseSchema>>;
  setLimit(request: SetLimitRequest): Promise<MessageInitShape<typeof SetLimitResponseSchema>>;
  listLimits(request: ListLimitsRequest): Promise<MessageInitShape<typeof ListLimitsResponseSchema>>;
  deleteLimit(request: DeleteLimitRequest): Promise<MessageInitShape<typeof DeleteLimitResponseSchema>>;
  forkWorkflow(
    request: ForkWorkflowRequest,
    caller?: Caller,
    metadata?: grpc.Metadata,
  ): Promise<MessageInitShape<typeof ForkWorkflowResponseSchema>>;
  signalNode(request: SignalNodeRequest, caller?: Caller): Promise<MessageInitShape<typeof SignalNodeResponseSchema>>;
}

/** A workflow id that is present and a UUID; an unknown one is the StateManager's NOT_FOUND. */
function requireWorkflowId(workflowId: string): string {
  if (workflowId === "") throw new InvalidArgumentError("workflow_id", "required");
  assertWorkflowId(workflowId, "workflow_id");
  return workflowId;
}

/** The page size a ListWorkflows request asks for: 0 is the default, anything outside 1..500 is refused. */
export function pageSizeOf(requested: number): number {
  if (requested === 0) return DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(requested) || requested < 1 || requested > MAX_PAGE_SIZE) {
    throw new InvalidArgumentError(
      "page_size",
      `must be between 1 and ${MAX_PAGE_SIZE} (0 means ${DEFAULT_PAGE_SIZE}), got ${requested}`,
    );
  }
  return requested;
}

function assertKnownStatus(status: WorkflowStatus): void {
  if (WorkflowStatus[status] === undefined) throw new InvalidArgumentError("status", `unknown status ${status}`);
}

function assertKnownAction(action: WorkflowAction): void {
  if (WorkflowAction[action] === undefined) throw new InvalidArgumentError("action", `unknown action ${action}`);
}

/**
 * Checks the flow-control fields of a batch's INSERTed nodes, and of its UPDATEs when their mask names them, before
 * the StateManager sees the batch (which checks them again with everything else).
 */
function validateEditsFlowControl(edits: readonly NodeEdit[]): void {
  edits.forEach((edit, i) => {
    if (edit.node === undefined) return;
    if (edit.type === EditType.INSERT) validateNodeFlowControl(edit.node, `edits[${i}].node`);
    if (edit.type === EditType.UPDATE)
      validateMaskedFlowControl(edit.node, edit.updateMask?.paths ?? [], `edits[${i}].node`);
  });
}

/** Checks `priority` and `limit_keys` of an UPDATE's node when `paths` names them. */
function validateMaskedFlowControl(node: Node, paths: readonly string[], field: string): void {
  if (paths.includes("priority")) validatePriority(node.priority, `${field}.priority`);
  if (paths.includes("limit_keys")) validateLimitKeys(node.limitKeys, `${field}.limit_keys`);
}

/**
 * The changes an UpdateWorkflow request asks for. `update_mask` may name `name`, `labels` and `budget`; the action is
 * applied after them. A request with neither is refused rather than silently doing nothing.
 */
export function workflowUpdateOf(request: UpdateWorkflowRequest): UpdateWorkflowInput {
  assertKnownAction(request.action);
  const paths = request.updateMask?.paths ?? [];
  const update: UpdateWorkflowInput = {};
  const seen = new Set<string>();
  paths.forEach((path, i) => {
    const field = `update_mask.paths[${i}]`;
    if (seen.has(path)) throw new InvalidArgumentError(field, `duplicate path ${quoteForMessage(path)}`);
    seen.add(path);
    switch (path) {
      case "name":
        update.name = request.name;
        break;
      case "labels":
        update.labels = { ...request.labels };
        break;
      case "budget":
        validateBudget(request.budget, "budget");
        update.budget = { ...request.budget };
        break;
      default:
        throw new InvalidArgumentError(
          field,
          `${quoteForMessage(path)} cannot be updated (allowed: name, labels, budget)`,
        );
    }
  });
  if (request.action !== WorkflowAction.UNSPECIFIED) update.action = request.action;
  if (paths.length === 0 && request.action === WorkflowAction.UNSPECIFIED) {
    throw new InvalidArgumentError("update_mask", "required when no action is given (paths: name, labels, budget)");
  }
  return update;
}

/** Whether an action may have made nodes ready, so the scheduler should look. */
function wakesScheduler(action: WorkflowAction | undefined): boolean {
  return action === WorkflowAction.RESUME || action === WorkflowAction.RETRY;
}

/** Whether `labels` carry every label of `scope`. */
export function carriesLabels(
  labels: Readonly<Record<string, string>>,
  scope: Readonly<Record<string, string>>,
): boolean {
  return Object.entries(scope).every(([key, value]) => labels[key] === value);
}

/** The NOT_FOUND a missing workflow gets: a workflow out of a token's scope gets exactly the same. */
function workflowNotFound(workflowId: string): NotFoundError {
  return new NotFoundError(`workflow ${workflowId} not found`);
}

/**
 * The WorkflowService's unary RPCs over a StateManager; they throw TrellisErrors for the caller's mistakes. A
 * label-scoped caller sees only workflows carrying its labels: any other answers NOT_FOUND as a missing one.
 */
export function workflowServiceMethods(deps: WorkflowServiceDeps): WorkflowServiceMethods {
  const { stateManager } = deps;
  const wake = (workflowId: string): void => deps.notifyScheduler?.(workflowId);
  /** Throws NOT_FOUND unless the caller may see the workflow (it exists, and carries the caller's labels). */
  const assertVisible = async (workflowId: string, caller: Caller | undefined): Promise<void> => {
    if (caller === undefined || !isScoped(caller)) return;
    const workflow = await stateManager.getWorkflow(workflowId);
    if (!carriesLabels(workflow.labels, caller.labels)) throw workflowNotFound(workflowId);
  };
  /** A request_id that names a workflow out of the caller's scope: refused without saying what it names. */
  const assertOwnReplay = (workflow: { labels: Record<string, string> }, caller: Caller | undefined): void => {
    if (caller !== undefined && isScoped(caller) && !carriesLabels(workflow.labels, caller.labels)) {
      throw new AlreadyExistsError("request_id: already used; choose another");
    }
  };
  return {
    async createWorkflow(request, caller, metadata) {
      // Tracing on: the workflow's span (the caller's traceparent its parent), stored with it for the workers.
      const span = startWorkflowSpan("CreateWorkflow", request.name, metadata);
      try {
        for (const [i, node] of request.nodes.entries()) validateNodeFlowControl(node, `nodes[${i}]`);
        validateBudget(request.budget, "budget");
        const { workflow, created } = await stateManager.createWorkflow({
          name: request.name,
          nodes: request.nodes,
          input: request.input,
          // A scoped token's labels win over the request's.
          labels: caller === undefined ? request.labels : { ...request.labels, ...caller.labels },
          requestId: request.requestId === "" ? undefined : request.requestId,
          budget: request.budget,
          traceParent: span?.traceParent,
        });
        if (!created) assertOwnReplay(workflow, caller);
        if (created) wake(workflow.id);
        span?.end({ workflowId: workflow.id, created });
        return { workflow };
      } catch (error) {
        span?.end({ error });
        throw error;
      }
    },

    async getWorkflow(request, caller) {
      const workflowId = requireWorkflowId(request.workflowId);
      const workflow = await stateManager.getWorkflow(workflowId);
      if (caller !== undefined && !carriesLabels(workflow.labels, caller.labels)) throw workflowNotFound(workflowId);
      return { workflow };
    },

    async listWorkflows(request, caller) {
      const pageSize = pageSizeOf(request.pageSize);
      assertKnownStatus(request.status);
      let labelSelector: Record<string, string> = { ...request.labelSelector };
      if (caller !== undefined && isScoped(caller)) {
        // A selector asking for another value of a scope label can match nothing the caller may see.
        const conflict = Object.entries(caller.labels).some(
          ([key, value]) => labelSelector[key] !== undefined && labelSelector[key] !== value,
        );
        if (conflict) return { workflows: [], nextPageToken: "" };
        labelSelector = { ...labelSelector, ...caller.labels };
      }
      const page = await stateManager.listWorkflows({
        pageSize,
        pageToken: request.pageToken === "" ? undefined : request.pageToken,
        status: request.status === WorkflowStatus.UNSPECIFIED ? undefined : request.status,
        labelSelector: Object.keys(labelSelector).length === 0 ? undefined : labelSelector,
      });
      return { workflows: page.workflows, nextPageToken: page.nextPageToken };
    },

    async updateWorkflow(request, caller) {
      const workflowId = requireWorkflowId(request.workflowId);
      const update = workflowUpdateOf(request);
      await assertVisible(workflowId, caller);
      // A scoped token cannot relabel a workflow out of its scope (or into another tenant's).
      if (update.labels !== undefined && caller !== undefined) update.labels = { ...update.labels, ...caller.labels };
      const effects = await stateManager.updateWorkflow(workflowId, update);
      if (wakesScheduler(update.action)) wake(workflowId);
      return { workflow: effects.workflow };
    },

    async getNode(request, caller) {
      const workflowId = requireWorkflowId(request.workflowId);
      assertNodeId(request.nodeId, "node_id");
      await assertVisible(workflowId, caller);
      const node = await stateManager.getNode(workflowId, request.nodeId);
      return { node, attempts: await stateManager.listNodeAttempts(workflowId, request.nodeId) };
    },

    async updateNode(request, caller) {
      const workflowId = requireWorkflowId(request.workflowId);
      if (request.node === undefined) throw new InvalidArgumentError("node", "required");
      validateMaskedFlowControl(request.node, request.updateMask?.paths ?? [], "node");
      await assertVisible(workflowId, caller);
      const node = await stateManager.updateNode(workflowId, request.node, request.updateMask);
      wake(workflowId);
      return { node };
    },

    async editWorkflow(request, caller) {
      const workflowId = requireWorkflowId(request.workflowId);
      if (request.edits.length === 0) throw new InvalidArgumentError("edits", "at least one edit is required");
      validateEditsFlowControl(request.edits);
      await assertVisible(workflowId, caller);
      const workflow = await stateManager.applyNodeEdits(workflowId, request.edits);
      wake(workflowId);
      return { workflow };
    },

    async setLimit(request) {
      // The StateManager notifies the scheduler: a raised limit lets held nodes start.
      return { limit: limitToProto(await stateManager.setLimit(limitSpecFromProto(request.limit, "limit"))) };
    },

    async listLimits() {
      return { limits: (await stateManager.listLimits()).map(limitToProto) };
    },

    async deleteLimit(request) {
      validateLimitKey(request.key, "key", "allowed");
      if (!(await stateManager.deleteLimit(request.key))) {
        throw new NotFoundError(`limit ${quoteForMessage(request.key)} not found`);
      }
      return {};
    },

    async forkWorkflow(request, caller, metadata) {
      // Tracing on: the fork's span, as CreateWorkflow's (the fork is a new workflow, with a trace of its own).
      const span = startWorkflowSpan("ForkWorkflow", undefined, metadata);
      try {
        const workflowId = requireWorkflowId(request.workflowId);
        if (request.fromNodeIds.length === 0) {
          throw new InvalidArgumentError("from_node_ids", "at least one node id is required");
        }
        for (const [i, id] of request.fromNodeIds.entries()) assertNodeId(id, `from_node_ids[${i}]`);
        // The fork copies the source's labels, so a visible source gives a fork that carries the caller's labels.
        await assertVisible(workflowId, caller);
        const { workflow, created } = await stateManager.forkWorkflow({
          workflowId,
          fromNodeIds: request.fromNodeIds,
          inputs: request.inputs,
          requestId: request.requestId === "" ? undefined : request.requestId,
          traceParent: span?.traceParent,
        });
        if (!created) assertOwnReplay(workflow, caller);
        if (created) wake(workflow.id);
        span?.end({ workflowId: workflow.id, created, name: workflow.name, forkedFrom: workflowId });
        return { workflow };
      } catch (error) {
        span?.end({ error });
        throw error;
      }
    },

    async signalNode(request, caller) {
      const workflowId = requireWorkflowId(request.workflowId);
      assertNodeId(request.nodeId, "node_id");
      validateSignalRequest(request);
      await assertVisible(workflowId, caller);
      const { node, completed } = await stateManager.signalNode({
        workflowId,
        nodeId: request.nodeId,
        output: request.output,
        reject: request.reject,
        message: request.message,
        edits: request.edits,
        requestId: request.requestId === "" ? undefined : request.requestId,
      });
      // A PASS leaves its ready children to the scheduler.
      if (completed) wake(workflowId);
      return { node };
    },
  };
}

/**
 * Adapts one method to grpc-js: a call that is already cancelled or past its deadline does no work; a result
 * becomes the response message, a thrown error the status chosen by {@link toCallError}.
 */
function unary<I extends DescMessage, O extends DescMessage>(
  deps: Pick<WorkflowServiceDeps, "logger" | "tokens">,
  method: { input: I; output: O },
  run: (request: MessageShape<I>, caller?: Caller, metadata?: grpc.Metadata) => Promise<MessageInitShape<O>>,
): grpc.handleUnaryCall<MessageShape<I>, MessageShape<O>> {
  const { logger } = deps;
  return (call, callback) => {
    if (deadlinePassed(call.getDeadline())) {
      callback({ code: grpc.status.DEADLINE_EXCEEDED, details: "deadline exceeded before the call started" });
      return;
    }
    if (call.cancelled) {
      callback({ code: grpc.status.CANCELLED, details: "cancelled before the call started" });
      return;
    }
    const undecodable = undecodableReason(call.request);
    if (undecodable !== undefined) {
      callback({ code: grpc.status.INVALID_ARGUMENT, details: `request: cannot be decoded: ${undecodable}` });
      return;
    }
    let caller: Caller | undefined;
    try {
      caller = callerOf(deps, call.metadata);
    } catch (error) {
      callback(toCallError(error, logger, call.getPath().replace(/^\//, "")));
      return;
    }
    // Every write transaction of the call sets `trellis.actor`: its events name the token.
    withActor(caller?.name, () => run(call.request, caller, call.metadata)).then(
      (response) => callback(null, create(method.output, response)),
      // Named as in the per-call log line: `workflow.v1.WorkflowService/GetWorkflow`.
      (error: unknown) => callback(toCallError(error, logger, call.getPath().replace(/^\//, ""))),
    );
  };
}

/**
 * The caller of a call when auth is on (its token, looked up again: the interceptor has checked its role); a token
 * removed by a reload in between is UNAUTHENTICATED.
 */
function callerOf(deps: Pick<WorkflowServiceDeps, "tokens">, metadata: grpc.Metadata): Caller | undefined {
  if (deps.tokens === undefined) return undefined;
  const entry = tokenOfMetadata(deps.tokens, metadata);
  if (entry === undefined) throw new UnauthenticatedError("authorization: invalid bearer token");
  return entry;
}

/**
 * WatchWorkflow: replays committed events after `after_sequence`, then follows live, ending after the terminal
 * event. A slow reader holds the producer back (write() backpressure); nothing is buffered beyond one page.
 */
function watch(deps: WorkflowServiceDeps, call: grpc.ServerWritableStream<WatchWorkflowRequest, WorkflowEvent>): void {
  const { events, logger } = deps;
  if (!events) {
    call.emit("error", { code: grpc.status.UNIMPLEMENTED, details: "WatchWorkflow is not enabled on this server" });
    return;
  }
  const method = call.getPath().replace(/^\//, "");
  const controller = new AbortController();
  call.on("cancelled", () => controller.abort());
  call.on("close", () => controller.abort());
  void (async () => {
    try {
      const undecodable = undecodableReason(call.request);
      if (undecodable !== undefined) throw new InvalidArgumentError("request", `cannot be decoded: ${undecodable}`);
      const workflowId = requireWorkflowId(call.request.workflowId);
      const caller = callerOf(deps, call.metadata);
      if (caller !== undefined && isScoped(caller)) {
        const workflow = await deps.stateManager.getWorkflow(workflowId);
        if (!carriesLabels(workflow.labels, caller.labels)) throw workflowNotFound(workflowId);
      }
      if (call.request.afterSequence < 0n) throw new InvalidArgumentError("after_sequence", "must not be negative");
      // include_chunks interleaves the running attempts' output chunks (sequence 0) with the durable events.
      const source = call.request.includeChunks && deps.chunks ? deps.chunks : events;
      for await (const event of source.follow(workflowId, Number(call.request.afterSequence), controller.signal)) {
        if (!call.write(event)) await drained(call, controller.signal);
        if (controller.signal.aborted) return;
      }
      if (!controller.signal.aborted) call.end();
    } catch (error) {
      if (!controller.signal.aborted) call.emit("error", toCallError(error, logger, method));
    }
  })();
}

function drained(stream: NodeJS.EventEmitter, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    stream.once("drain", done);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** The grpc-js handlers of `workflow.v1.WorkflowService`. */
export function createWorkflowServiceHandlers(deps: WorkflowServiceDeps): GrpcServiceHandlers<typeof WorkflowService> {
  const methods = workflowServiceMethods(deps);
  const schedules = scheduleServiceMethods(deps.stateManager);
  return {
    createWorkflow: unary(deps, WorkflowService.method.createWorkflow, methods.createWorkflow),
    getWorkflow: unary(deps, WorkflowService.method.getWorkflow, methods.getWorkflow),
    listWorkflows: unary(deps, WorkflowService.method.listWorkflows, methods.listWorkflows),
    updateWorkflow: unary(deps, WorkflowService.method.updateWorkflow, methods.updateWorkflow),
    getNode: unary(deps, WorkflowService.method.getNode, methods.getNode),
    updateNode: unary(deps, WorkflowService.method.updateNode, methods.updateNode),
    editWorkflow: unary(deps, WorkflowService.method.editWorkflow, methods.editWorkflow),
    setLimit: unary(deps, WorkflowService.method.setLimit, methods.setLimit),
    listLimits: unary(deps, WorkflowService.method.listLimits, methods.listLimits),
    deleteLimit: unary(deps, WorkflowService.method.deleteLimit, methods.deleteLimit),
    signalNode: unary(deps, WorkflowService.method.signalNode, methods.signalNode),
    createSchedule: unary(deps, WorkflowService.method.createSchedule, schedules.createSchedule),
    listSchedules: unary(deps, WorkflowService.method.listSchedules, schedules.listSchedules),
    updateSchedule: unary(deps, WorkflowService.method.updateSchedule, schedules.updateSchedule),
    deleteSchedule: unary(deps, WorkflowService.method.deleteSchedule, schedules.deleteSchedule),
    forkWorkflow: unary(deps, WorkflowService.method.forkWorkflow, methods.forkWorkflow),
    watchWorkflow: (call) => watch(deps, call),
  };
}
