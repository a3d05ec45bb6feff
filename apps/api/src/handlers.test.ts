import { type DescMessage, type MessageInitShape, create } from "@bufbuild/protobuf";
import { DurationSchema, durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import {
  AbortedError,
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  type TrellisError,
  UnauthenticatedError,
} from "@trellis/core";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import {
  EditType,
  type GrpcServiceHandlers,
  type Limit,
  NodeAttemptSchema,
  NodeSchema,
  WorkflowAction,
  WorkflowService,
  WorkflowStatus,
  createGrpcClient,
} from "@trellis/proto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { LogLines } from "../test/log-lines.js";
import { WORKFLOW_ID, limitState, mockStateManager } from "../test/mock-state-manager.js";
import { isAuthorized } from "./auth.js";
import { createWorkflowServiceHandlers } from "./handlers.js";
import { startApiServer } from "./server.js";

type Handlers = GrpcServiceHandlers<typeof WorkflowService>;
type UnaryName = Exclude<keyof Handlers, "watchWorkflow">;
type RequestOf<K extends UnaryName> = Parameters<Handlers[K]>[0]["request"];

interface Outcome {
  error: { code?: grpc.status; details?: string } | null;
  response: unknown;
}

function setup() {
  const sm = mockStateManager();
  const logs = new LogLines();
  const logger = createLogger({ app: "api", level: "info", destination: logs });
  const notifyScheduler = vi.fn<(workflowId: string) => void>();
  const handlers = createWorkflowServiceHandlers({ stateManager: sm, logger, notifyScheduler });

  /** Invokes a handler the way grpc-js does, with a fake call. */
  function call<K extends UnaryName>(
    name: K,
    init: MessageInitShape<(typeof schemas)[K]>,
    options: { deadline?: grpc.Deadline; cancelled?: boolean } = {},
  ): Promise<Outcome> {
    const request = create(schemas[name] as DescMessage, init) as RequestOf<K>;
    const fakeCall = {
      request,
      cancelled: options.cancelled ?? false,
      metadata: new grpc.Metadata(),
      getDeadline: () => options.deadline ?? Number.POSITIVE_INFINITY,
      getPath: () => `/workflow.v1.WorkflowService/${WorkflowService.method[name].name}`,
    };
    return new Promise((resolve) => {
      const handler = handlers[name] as grpc.handleUnaryCall<unknown, unknown>;
      handler(fakeCall as unknown as grpc.ServerUnaryCall<unknown, unknown>, (error, response) =>
        resolve({ error: error as Outcome["error"], response }),
      );
    });
  }
  return { sm, logs, notifyScheduler, handlers, call };
}

const schemas = {
  createWorkflow: WorkflowService.method.createWorkflow.input,
  getWorkflow: WorkflowService.method.getWorkflow.input,
  listWorkflows: WorkflowService.method.listWorkflows.input,
  updateWorkflow: WorkflowService.method.updateWorkflow.input,
  getNode: WorkflowService.method.getNode.input,
  updateNode: WorkflowService.method.updateNode.input,
  editWorkflow: WorkflowService.method.editWorkflow.input,
  setLimit: WorkflowService.method.setLimit.input,
  listLimits: WorkflowService.method.listLimits.input,
  deleteLimit: WorkflowService.method.deleteLimit.input,
  signalNode: WorkflowService.method.signalNode.input,
  createSchedule: WorkflowService.method.createSchedule.input,
  listSchedules: WorkflowService.method.listSchedules.input,
  updateSchedule: WorkflowService.method.updateSchedule.input,
  deleteSchedule: WorkflowService.method.deleteSchedule.input,
  forkWorkflow: WorkflowService.method.forkWorkflow.input,
} as const;

function expectRejected(outcome: Outcome, code: grpc.status, details?: string): void {
  expect(outcome.error, "the call should have failed").not.toBeNull();
  expect(grpc.status[outcome.error!.code!]).toBe(grpc.status[code]);
  if (details !== undefined) expect(outcome.error!.details).toBe(details);
}

describe("request mapping", () => {
  it("CreateWorkflow passes name, nodes, input, labels and request_id, and wakes the scheduler once created", async () => {
    const { sm, call, notifyScheduler } = setup();
    const outcome = await call("createWorkflow", {
      name: "wf",
      nodes: [{ id: "a", capability: "echo" }],
      input: { k: "v" },
      labels: { team: "core" },
      requestId: "req-1",
    });
    expect(outcome.error).toBeNull();
    const input = sm.createWorkflow.mock.calls[0]![0];
    expect(input).toMatchObject({ name: "wf", input: { k: "v" }, labels: { team: "core" }, requestId: "req-1" });
    expect(input.nodes.map((n) => n.id)).toEqual(["a"]);
    expect((outcome.response as { workflow: { id: string } }).workflow.id).toBe(WORKFLOW_ID);
    expect(notifyScheduler).toHaveBeenCalledWith(WORKFLOW_ID);
  });

  it("CreateWorkflow sends no request id for an empty one, and does not wake the scheduler for a replay", async () => {
    const { sm, call, notifyScheduler } = setup();
    sm.createWorkflow.mockResolvedValueOnce({ workflow: sm.workflow, created: false });
    await call("createWorkflow", { nodes: [{ id: "a", capability: "echo" }] });
    expect(sm.createWorkflow.mock.calls[0]![0].requestId).toBeUndefined();
    expect(notifyScheduler).not.toHaveBeenCalled();
  });

  it("GetWorkflow requires a UUID workflow_id before touching the StateManager", async () => {
    const { sm, call } = setup();
    expectRejected(await call("getWorkflow", {}), grpc.status.INVALID_ARGUMENT, "workflow_id: required");
    expectRejected(
      await call("getWorkflow", { workflowId: "nope" }),
      grpc.status.INVALID_ARGUMENT,
      'workflow_id: "nope" is not a UUID',
    );
    expect(sm.getWorkflow).not.toHaveBeenCalled();
    expect((await call("getWorkflow", { workflowId: WORKFLOW_ID })).error).toBeNull();
    expect(sm.getWorkflow).toHaveBeenCalledWith(WORKFLOW_ID);
  });

  it("ListWorkflows defaults the page size to 50, passes filters, and refuses sizes outside 1..500", async () => {
    const { sm, call } = setup();
    const outcome = await call("listWorkflows", {});
    expect(sm.listWorkflows).toHaveBeenLastCalledWith({
      pageSize: 50,
      pageToken: undefined,
      status: undefined,
      labelSelector: undefined,
    });
    expect(outcome.response).toMatchObject({ nextPageToken: "next" });

    await call("listWorkflows", {
      pageSize: 7,
      pageToken: "tok",
      status: WorkflowStatus.RUNNING,
      labelSelector: { team: "a" },
    });
    expect(sm.listWorkflows).toHaveBeenLastCalledWith({
      pageSize: 7,
      pageToken: "tok",
      status: WorkflowStatus.RUNNING,
      labelSelector: { team: "a" },
    });

    sm.listWorkflows.mockClear();
    expectRejected(
      await call("listWorkflows", { pageSize: 501 }),
      grpc.status.INVALID_ARGUMENT,
      "page_size: must be between 1 and 500 (0 means 50), got 501",
    );
    expectRejected(await call("listWorkflows", { pageSize: -3 }), grpc.status.INVALID_ARGUMENT);
    expectRejected(
      await call("listWorkflows", { status: 99 as WorkflowStatus }),
      grpc.status.INVALID_ARGUMENT,
      "status: unknown status 99",
    );
    expect(sm.listWorkflows).not.toHaveBeenCalled();
  });

  it("UpdateWorkflow maps update_mask paths and the action, and refuses anything else", async () => {
    const { sm, call, notifyScheduler } = setup();
    await call("updateWorkflow", {
      workflowId: WORKFLOW_ID,
      name: "new",
      labels: { a: "1" },
      updateMask: { paths: ["name", "labels"] },
    });
    expect(sm.updateWorkflow).toHaveBeenLastCalledWith(WORKFLOW_ID, { name: "new", labels: { a: "1" } });

    await call("updateWorkflow", { workflowId: WORKFLOW_ID, name: "ignored", action: WorkflowAction.PAUSE });
    expect(sm.updateWorkflow).toHaveBeenLastCalledWith(WORKFLOW_ID, { action: WorkflowAction.PAUSE });
    expect(notifyScheduler).not.toHaveBeenCalled();
    await call("updateWorkflow", { workflowId: WORKFLOW_ID, action: WorkflowAction.RESUME });
    expect(notifyScheduler).toHaveBeenCalledWith(WORKFLOW_ID);

    sm.updateWorkflow.mockClear();
    expectRejected(
      await call("updateWorkflow", { workflowId: WORKFLOW_ID, updateMask: { paths: ["name", "status"] } }),
      grpc.status.INVALID_ARGUMENT,
      'update_mask.paths[1]: "status" cannot be updated (allowed: name, labels, budget)',
    );
    expectRejected(
      await call("updateWorkflow", { workflowId: WORKFLOW_ID, updateMask: { paths: ["name", "name"] } }),
      grpc.status.INVALID_ARGUMENT,
      'update_mask.paths[1]: duplicate path "name"',
    );
    expectRejected(
      await call("updateWorkflow", { workflowId: WORKFLOW_ID }),
      grpc.status.INVALID_ARGUMENT,
      "update_mask: required when no action is given (paths: name, labels, budget)",
    );
    expectRejected(
      await call("updateWorkflow", { workflowId: WORKFLOW_ID, action: 9 as WorkflowAction }),
      grpc.status.INVALID_ARGUMENT,
      "action: unknown action 9",
    );
    expectRejected(
      await call("updateWorkflow", { action: WorkflowAction.CANCEL }),
      grpc.status.INVALID_ARGUMENT,
      "workflow_id: required",
    );
    expect(sm.updateWorkflow).not.toHaveBeenCalled();
  });

  it("GetNode requires node_id and passes both ids", async () => {
    const { sm, call } = setup();
    expectRejected(
      await call("getNode", { workflowId: WORKFLOW_ID }),
      grpc.status.INVALID_ARGUMENT,
      "node_id: required",
    );
    const outcome = await call("getNode", { workflowId: WORKFLOW_ID, nodeId: "b" });
    expect(sm.getNode).toHaveBeenCalledWith(WORKFLOW_ID, "b");
    expect(outcome.response).toMatchObject({ node: { id: "b" } });
  });

  it("UpdateNode requires the node and passes it with its update_mask", async () => {
    const { sm, call, notifyScheduler } = setup();
    expectRejected(
      await call("updateNode", { workflowId: WORKFLOW_ID }),
      grpc.status.INVALID_ARGUMENT,
      "node: required",
    );
    await call("updateNode", {
      workflowId: WORKFLOW_ID,
      node: { id: "b", capability: "summarize" },
      updateMask: { paths: ["capability"] },
    });
    const [workflowId, node, mask] = sm.updateNode.mock.calls[0]!;
    expect(workflowId).toBe(WORKFLOW_ID);
    expect(node).toMatchObject({ id: "b", capability: "summarize" });
    expect(mask?.paths).toEqual(["capability"]);
    expect(notifyScheduler).toHaveBeenCalledWith(WORKFLOW_ID);
  });

  it("EditWorkflow requires at least one edit and passes the batch as is", async () => {
    const { sm, call } = setup();
    expectRejected(
      await call("editWorkflow", { workflowId: WORKFLOW_ID }),
      grpc.status.INVALID_ARGUMENT,
      "edits: at least one edit is required",
    );
    await call("editWorkflow", {
      workflowId: WORKFLOW_ID,
      edits: [
        { type: EditType.INSERT, node: { id: "x", capability: "echo" } },
        { type: EditType.DELETE, nodeId: "y" },
      ],
    });
    const [, edits] = sm.applyNodeEdits.mock.calls[0]!;
    expect(edits.map((e) => e.type)).toEqual([EditType.INSERT, EditType.DELETE]);
    expect(edits[1]!.nodeId).toBe("y");
  });

  it("WatchWorkflow answers UNIMPLEMENTED when the server has no event source", () => {
    const { handlers } = setup();
    const emit = vi.fn();
    handlers.watchWorkflow({ emit } as unknown as Parameters<Handlers["watchWorkflow"]>[0]);
    expect(emit).toHaveBeenCalledWith("error", expect.objectContaining({ code: grpc.status.UNIMPLEMENTED }));
  });
});

describe("SignalNode", () => {
  it("passes the signal to the StateManager and wakes the scheduler once the node completed", async () => {
    const { sm, call, notifyScheduler } = setup();
    const outcome = await call("signalNode", {
      workflowId: WORKFLOW_ID,
      nodeId: "approve",
      output: { kind: { case: "boolValue", value: true } },
      requestId: "sig-1",
    });
    expect(outcome.error).toBeNull();
    expect(sm.signalNode).toHaveBeenCalledWith(
      expect.objectContaining({ workflowId: WORKFLOW_ID, nodeId: "approve", reject: false, requestId: "sig-1" }),
    );
    expect(notifyScheduler).toHaveBeenCalledWith(WORKFLOW_ID);
    sm.signalNode.mockResolvedValueOnce({ node: create(NodeSchema, { id: "approve" }), completed: false });
    notifyScheduler.mockClear();
    expect((await call("signalNode", { workflowId: WORKFLOW_ID, nodeId: "approve" })).error).toBeNull();
    expect(sm.signalNode.mock.calls[1]![0].requestId).toBeUndefined();
    expect(notifyScheduler).not.toHaveBeenCalled();
  });

  it("refuses malformed ids, an unstorable output, a long message and a rejection with edits, calling nothing", async () => {
    const { sm, call } = setup();
    expectRejected(await call("signalNode", { nodeId: "a" }), grpc.status.INVALID_ARGUMENT, "workflow_id: required");
    expectRejected(
      await call("signalNode", { workflowId: WORKFLOW_ID, nodeId: "a b" }),
      grpc.status.INVALID_ARGUMENT,
      'node_id: "a b" must match [A-Za-z0-9_.-]{1,128}',
    );
    expectRejected(
      await call("signalNode", {
        workflowId: WORKFLOW_ID,
        nodeId: "a",
        output: { kind: { case: "numberValue", value: Number.NaN } },
      }),
      grpc.status.INVALID_ARGUMENT,
    );
    expectRejected(
      await call("signalNode", { workflowId: WORKFLOW_ID, nodeId: "a", reject: true, message: "x".repeat(16_385) }),
      grpc.status.INVALID_ARGUMENT,
      "message: must be at most 16384 characters",
    );
    expectRejected(
      await call("signalNode", {
        workflowId: WORKFLOW_ID,
        nodeId: "a",
        reject: true,
        edits: [{ type: EditType.DELETE, nodeId: "b" }],
      }),
      grpc.status.INVALID_ARGUMENT,
      "edits: must be empty when the signal rejects the node",
    );
    expect(sm.signalNode).not.toHaveBeenCalled();
  });

  it("answers the StateManager's refusals with their codes", async () => {
    const { sm, call } = setup();
    sm.signalNode.mockRejectedValueOnce(
      new FailedPreconditionError('node "a" does not wait for a signal (it has no wait)'),
    );
    expectRejected(
      await call("signalNode", { workflowId: WORKFLOW_ID, nodeId: "a" }),
      grpc.status.FAILED_PRECONDITION,
      'node "a" does not wait for a signal (it has no wait)',
    );
  });
});

describe("ForkWorkflow", () => {
  it("passes the source, the nodes to run again, new inputs and request_id, and wakes the scheduler for the fork", async () => {
    const { sm, call, notifyScheduler } = setup();
    const source = "5d3c2b1a-0f9e-4d8c-8b7a-6f5e4d3c2b1a";
    const outcome = await call("forkWorkflow", {
      workflowId: source,
      fromNodeIds: ["b", "c"],
      inputs: { b: { prompt: "again" } },
      requestId: "fork-1",
    });
    expect(outcome.error).toBeNull();
    expect(sm.forkWorkflow).toHaveBeenCalledWith({
      workflowId: source,
      fromNodeIds: ["b", "c"],
      inputs: { b: { prompt: "again" } },
      requestId: "fork-1",
    });
    expect((outcome.response as { workflow: { id: string } }).workflow.id).toBe(WORKFLOW_ID);
    expect(notifyScheduler).toHaveBeenCalledWith(WORKFLOW_ID);
  });

  it("sends no request id for an empty one, and does not wake the scheduler for a replay", async () => {
    const { sm, call, notifyScheduler } = setup();
    sm.forkWorkflow.mockResolvedValueOnce({ workflow: sm.workflow, created: false });
    expect((await call("forkWorkflow", { workflowId: WORKFLOW_ID, fromNodeIds: ["a"] })).error).toBeNull();
    expect(sm.forkWorkflow.mock.calls[0]![0].requestId).toBeUndefined();
    expect(notifyScheduler).not.toHaveBeenCalled();
  });

  it("refuses a missing or malformed workflow_id and empty or malformed from_node_ids before the StateManager", async () => {
    const { sm, call } = setup();
    expectRejected(
      await call("forkWorkflow", { fromNodeIds: ["a"] }),
      grpc.status.INVALID_ARGUMENT,
      "workflow_id: required",
    );
    expectRejected(
      await call("forkWorkflow", { workflowId: WORKFLOW_ID }),
      grpc.status.INVALID_ARGUMENT,
      "from_node_ids: at least one node id is required",
    );
    expectRejected(
      await call("forkWorkflow", { workflowId: WORKFLOW_ID, fromNodeIds: ["a", "b c"] }),
      grpc.status.INVALID_ARGUMENT,
      'from_node_ids[1]: "b c" must match [A-Za-z0-9_.-]{1,128}',
    );
    expect(sm.forkWorkflow).not.toHaveBeenCalled();
  });

  it("answers the StateManager's refusals with their codes", async () => {
    const { sm, call, notifyScheduler } = setup();
    sm.forkWorkflow.mockRejectedValueOnce(new NotFoundError(`workflow ${WORKFLOW_ID} not found`));
    expectRejected(
      await call("forkWorkflow", { workflowId: WORKFLOW_ID, fromNodeIds: ["a"] }),
      grpc.status.NOT_FOUND,
      `workflow ${WORKFLOW_ID} not found`,
    );
    sm.forkWorkflow.mockRejectedValueOnce(new InvalidArgumentError('inputs["a"]', 'node "a" keeps its output'));
    expectRejected(
      await call("forkWorkflow", { workflowId: WORKFLOW_ID, fromNodeIds: ["b"], inputs: { a: {} } }),
      grpc.status.INVALID_ARGUMENT,
      'inputs["a"]: node "a" keeps its output',
    );
    expect(notifyScheduler).not.toHaveBeenCalled();
  });
});

describe("flow control", () => {
  const nodeCases: [Record<string, unknown>, string][] = [
    [{ priority: 11 }, "nodes[1].priority: must be between 0 and 10, got 11"],
    [{ priority: -1 }, "nodes[1].priority: must be between 0 and 10, got -1"],
    [
      { limitKeys: ["tenant:a", "capability:echo"] },
      'nodes[1].limit_keys[1]: the prefix "capability:" is reserved: every node counts under "capability:<its capability>"',
    ],
    [{ limitKeys: ["k", "k"] }, 'nodes[1].limit_keys[1]: duplicate key "k"'],
    [{ limitKeys: [""] }, "nodes[1].limit_keys[0]: required"],
    [{ limitKeys: ["x".repeat(201)] }, "nodes[1].limit_keys[0]: must be at most 200 characters"],
    [{ limitKeys: ["a\nb"] }, 'nodes[1].limit_keys[0]: "a\\nb" must not contain control characters'],
    [
      { limitKeys: Array.from({ length: 17 }, (_, i) => `k${i}`) },
      "nodes[1].limit_keys: at most 16 keys are allowed, got 17",
    ],
  ];

  it.each(nodeCases)(
    "CreateWorkflow refuses a node with %j before calling the StateManager",
    async (fields, message) => {
      const { sm, call } = setup();
      const outcome = await call("createWorkflow", {
        nodes: [
          { id: "a", capability: "echo" },
          { id: "b", capability: "echo", ...fields },
        ],
      });
      expectRejected(outcome, grpc.status.INVALID_ARGUMENT, message);
      expect(sm.createWorkflow).not.toHaveBeenCalled();
    },
  );

  const budgetCases: [Record<string, number>, string][] = [
    [{ tokens: 0 }, 'budget["tokens"]: must be a finite number above 0, got 0'],
    [{ tokens: -5 }, 'budget["tokens"]: must be a finite number above 0, got -5'],
    [{ tokens: Number.NaN }, 'budget["tokens"]: must be a finite number above 0, got NaN'],
    [{ tokens: Number.POSITIVE_INFINITY }, 'budget["tokens"]: must be a finite number above 0, got Infinity'],
    [{ "": 1 }, "budget: required"],
    [{ ["u".repeat(65)]: 1 }, "budget: must be at most 64 characters"],
    [{ "to\tkens": 1 }, 'budget: "to\\tkens" must not contain control characters'],
  ];

  it.each(budgetCases)("CreateWorkflow and UpdateWorkflow refuse the budget %j", async (budget, message) => {
    const { sm, call } = setup();
    expectRejected(
      await call("createWorkflow", { nodes: [{ id: "a", capability: "echo" }], budget }),
      grpc.status.INVALID_ARGUMENT,
      message,
    );
    expectRejected(
      await call("updateWorkflow", { workflowId: WORKFLOW_ID, budget, updateMask: { paths: ["budget"] } }),
      grpc.status.INVALID_ARGUMENT,
      message,
    );
    expect(sm.createWorkflow).not.toHaveBeenCalled();
    expect(sm.updateWorkflow).not.toHaveBeenCalled();
  });

  it("CreateWorkflow passes the budget and the nodes' priority and limit keys", async () => {
    const { sm, call } = setup();
    const outcome = await call("createWorkflow", {
      nodes: [{ id: "a", capability: "echo", priority: 10, limitKeys: ["model:x", "capability-ish"] }],
      budget: { tokens: 1000, cost_usd: 0.5 },
    });
    expect(outcome.error).toBeNull();
    const input = sm.createWorkflow.mock.calls[0]![0];
    expect(input.budget).toEqual({ tokens: 1000, cost_usd: 0.5 });
    expect([input.nodes[0]!.priority, input.nodes[0]!.limitKeys]).toEqual([10, ["model:x", "capability-ish"]]);
  });

  it("UpdateWorkflow maps update_mask budget (an empty map clears it), with or without an action", async () => {
    const { sm, call } = setup();
    await call("updateWorkflow", {
      workflowId: WORKFLOW_ID,
      budget: { tokens: 5 },
      updateMask: { paths: ["budget"] },
      action: WorkflowAction.RESUME,
    });
    expect(sm.updateWorkflow).toHaveBeenLastCalledWith(WORKFLOW_ID, {
      budget: { tokens: 5 },
      action: WorkflowAction.RESUME,
    });
    await call("updateWorkflow", { workflowId: WORKFLOW_ID, updateMask: { paths: ["budget"] } });
    expect(sm.updateWorkflow).toHaveBeenLastCalledWith(WORKFLOW_ID, { budget: {} });
    // Not in the mask: ignored, even when invalid.
    await call("updateWorkflow", { workflowId: WORKFLOW_ID, budget: { tokens: -1 }, action: WorkflowAction.PAUSE });
    expect(sm.updateWorkflow).toHaveBeenLastCalledWith(WORKFLOW_ID, { action: WorkflowAction.PAUSE });
  });

  it("UpdateNode and EditWorkflow refuse a bad priority or limit key when the node or mask carries it", async () => {
    const { sm, call } = setup();
    expectRejected(
      await call("updateNode", {
        workflowId: WORKFLOW_ID,
        node: { id: "b", priority: 42 },
        updateMask: { paths: ["priority"] },
      }),
      grpc.status.INVALID_ARGUMENT,
      "node.priority: must be between 0 and 10, got 42",
    );
    expectRejected(
      await call("updateNode", {
        workflowId: WORKFLOW_ID,
        node: { id: "b", limitKeys: ["capability:x"] },
        updateMask: { paths: ["limit_keys"] },
      }),
      grpc.status.INVALID_ARGUMENT,
    );
    expect(sm.updateNode).not.toHaveBeenCalled();
    expectRejected(
      await call("editWorkflow", {
        workflowId: WORKFLOW_ID,
        edits: [{ type: EditType.INSERT, node: { id: "x", capability: "echo", priority: 11 } }],
      }),
      grpc.status.INVALID_ARGUMENT,
      "edits[0].node.priority: must be between 0 and 10, got 11",
    );
    expectRejected(
      await call("editWorkflow", {
        workflowId: WORKFLOW_ID,
        edits: [
          { type: EditType.DELETE, nodeId: "y" },
          { type: EditType.UPDATE, node: { id: "b", limitKeys: ["k", "k"] }, updateMask: { paths: ["limit_keys"] } },
        ],
      }),
      grpc.status.INVALID_ARGUMENT,
      'edits[1].node.limit_keys[1]: duplicate key "k"',
    );
    expect(sm.applyNodeEdits).not.toHaveBeenCalled();

    // Fields the mask does not name are not looked at; valid ones go through.
    await call("updateNode", {
      workflowId: WORKFLOW_ID,
      node: { id: "b", priority: 42, limitKeys: ["model:x"] },
      updateMask: { paths: ["limit_keys"] },
    });
    expect(sm.updateNode).toHaveBeenCalledTimes(1);
  });

  it("GetNode answers the node with its attempts", async () => {
    const { sm, call } = setup();
    sm.listNodeAttempts.mockResolvedValueOnce([
      create(NodeAttemptSchema, { attempt: 1, status: "THROTTLED", workerId: "w1", usage: { tokens: 3 } }),
    ]);
    const outcome = await call("getNode", { workflowId: WORKFLOW_ID, nodeId: "b" });
    expect(sm.listNodeAttempts).toHaveBeenCalledWith(WORKFLOW_ID, "b");
    expect(outcome.response).toMatchObject({
      node: { id: "b" },
      attempts: [{ attempt: 1, status: "THROTTLED", workerId: "w1", usage: { tokens: 3 } }],
    });
  });

  it("SetLimit stores the limit with its defaults and answers it with its live state", async () => {
    const { sm, call } = setup();
    sm.setLimit.mockImplementationOnce(async (spec) =>
      limitState(spec, {
        running: 2,
        waiting: 7,
        available: 3.5,
        throttledUntil: new Date("2026-12-03T12:00:00.000Z"),
      }),
    );
    const outcome = await call("setLimit", {
      limit: { key: "model:gpt-4o", maxConcurrency: 3, rate: 10, unit: "tokens", running: 99, available: 1 },
    });
    expect(outcome.error).toBeNull();
    expect(sm.setLimit).toHaveBeenCalledWith({
      key: "model:gpt-4o",
      maxConcurrency: 3,
      rate: 10,
      periodMs: 1000,
      burst: 10,
      unit: "tokens",
    });
    const limit = (outcome.response as { limit: Limit }).limit;
    expect(limit).toMatchObject({ key: "model:gpt-4o", maxConcurrency: 3, rate: 10, burst: 10, unit: "tokens" });
    expect(limit).toMatchObject({ running: 2, waiting: 7n, available: 3.5 });
    expect(limit.period).toEqual(durationFromMs(1000));
    expect(timestampDate(limit.throttledUntil!).toISOString()).toBe("2026-12-03T12:00:00.000Z");

    await call("setLimit", { limit: { key: "capability:llm.chat", maxConcurrency: 1 } });
    expect(sm.setLimit).toHaveBeenLastCalledWith(expect.objectContaining({ key: "capability:llm.chat" }));
    const capOnly = (await call("setLimit", { limit: { key: "k", rate: 2, burst: 5, period: durationFromMs(60_000) } }))
      .response as { limit: Limit };
    expect(capOnly.limit).toMatchObject({ rate: 2, burst: 5, period: durationFromMs(60_000), available: 5 });
  });

  const limitCases: [MessageInitShape<typeof WorkflowService.method.setLimit.input>, string][] = [
    [{}, "limit: required"],
    [{ limit: { key: "", maxConcurrency: 1 } }, "limit.key: required"],
    [{ limit: { key: "k\u0001", maxConcurrency: 1 } }, 'limit.key: "k\\u0001" must not contain control characters'],
    [{ limit: { key: "x".repeat(201), maxConcurrency: 1 } }, "limit.key: must be at most 200 characters"],
    [{ limit: { key: "capability:", maxConcurrency: 1 } }, 'limit.key: "capability:" must name a capability'],
    [
      { limit: { key: "capability:Bad Name", maxConcurrency: 1 } },
      'limit.key: "Bad Name" must match [a-z0-9][a-z0-9._-]{0,63}',
    ],
    [{ limit: { key: "k", maxConcurrency: -1 } }, "limit.max_concurrency: must be an integer of at least 0, got -1"],
    [{ limit: { key: "k", rate: -1 } }, "limit.rate: must be a finite number of at least 0, got -1"],
    [{ limit: { key: "k", rate: Number.NaN } }, "limit.rate: must be a finite number of at least 0, got NaN"],
    [
      { limit: { key: "k", rate: Number.POSITIVE_INFINITY } },
      "limit.rate: must be a finite number of at least 0, got Infinity",
    ],
    [
      { limit: { key: "k", rate: 1, period: durationFromMs(0) } },
      "limit.period: must be greater than 0 and at most 24h",
    ],
    [
      { limit: { key: "k", rate: 1, period: durationFromMs(-1000) } },
      "limit.period: must be greater than 0 and at most 24h",
    ],
    [
      { limit: { key: "k", rate: 1, period: durationFromMs(86_400_001) } },
      "limit.period: must be greater than 0 and at most 24h",
    ],
    [
      { limit: { key: "k", rate: 1, period: create(DurationSchema, { seconds: 1n, nanos: 500 }) } },
      "limit.period: must be a whole number of milliseconds, got 1000.0005ms",
    ],
    [
      { limit: { key: "k", rate: 1, period: create(DurationSchema, { seconds: 1n, nanos: -1 }) } },
      "limit.period: must be a valid duration",
    ],
    [{ limit: { key: "k", rate: 1, burst: -1 } }, "limit.burst: must be a finite number of at least 0, got -1"],
    [
      { limit: { key: "k", rate: 1, burst: Number.NaN } },
      "limit.burst: must be a finite number of at least 0, got NaN",
    ],
    [{ limit: { key: "k", rate: 5, burst: 0.5 } }, "limit.burst: must be at least 1 with a rate, got 0.5"],
    [{ limit: { key: "k", rate: 0.5 } }, "limit.burst: must be at least 1 with a rate (it defaults to the rate, 0.5)"],
    [{ limit: { key: "k", rate: 1, unit: "u".repeat(65) } }, "limit.unit: must be at most 64 characters"],
    [{ limit: { key: "k", rate: 1, unit: "a\tb" } }, 'limit.unit: "a\\tb" must not contain control characters'],
    [{ limit: { key: "k" } }, "limit: set max_concurrency, rate or both (0 means no cap)"],
  ];

  for (const [request, message] of limitCases) {
    it(`SetLimit refuses with "${message}" without calling the StateManager`, async () => {
      const { sm, call } = setup();
      expectRejected(await call("setLimit", request), grpc.status.INVALID_ARGUMENT, message);
      expect(sm.setLimit).not.toHaveBeenCalled();
    });
  }

  it("DeleteLimit checks the key, and answers NOT_FOUND for a key without a limit", async () => {
    const { sm, call } = setup();
    expect((await call("deleteLimit", { key: "model:x" })).error).toBeNull();
    expect(sm.deleteLimit).toHaveBeenCalledWith("model:x");
    sm.deleteLimit.mockResolvedValueOnce(false);
    expectRejected(
      await call("deleteLimit", { key: "capability:echo" }),
      grpc.status.NOT_FOUND,
      'limit "capability:echo" not found',
    );
    sm.deleteLimit.mockClear();
    expectRejected(await call("deleteLimit", {}), grpc.status.INVALID_ARGUMENT, "key: required");
    expectRejected(
      await call("deleteLimit", { key: "k\u0000" }),
      grpc.status.INVALID_ARGUMENT,
      'key: "k\\u0000" must not contain control characters',
    );
    expect(sm.deleteLimit).not.toHaveBeenCalled();
  });
});

describe("deadlines", () => {
  it("does no work for a call whose deadline has already passed", async () => {
    const { sm, call } = setup();
    const outcome = await call("getWorkflow", { workflowId: WORKFLOW_ID }, { deadline: Date.now() - 1 });
    expectRejected(outcome, grpc.status.DEADLINE_EXCEEDED);
    expect(sm.getWorkflow).not.toHaveBeenCalled();
  });

  it("does no work for a call the client already cancelled", async () => {
    const { sm, call } = setup();
    expectRejected(await call("getWorkflow", { workflowId: WORKFLOW_ID }, { cancelled: true }), grpc.status.CANCELLED);
    expect(sm.getWorkflow).not.toHaveBeenCalled();
  });
});

describe("error mapping", () => {
  const cases: [TrellisError, grpc.status][] = [
    [new InvalidArgumentError("nodes[3].parent_ids[0]", 'unknown node "ghost"'), grpc.status.INVALID_ARGUMENT],
    [new NotFoundError("workflow x not found"), grpc.status.NOT_FOUND],
    [new FailedPreconditionError("cannot RESUME workflow in status RUNNING"), grpc.status.FAILED_PRECONDITION],
    [new ResourceExhaustedError("nodes", "at most 5 nodes are allowed, got 6"), grpc.status.RESOURCE_EXHAUSTED],
    [new AlreadyExistsError("exists"), grpc.status.ALREADY_EXISTS],
    [new UnauthenticatedError("who are you"), grpc.status.UNAUTHENTICATED],
    [new AbortedError("lost a race"), grpc.status.ABORTED],
  ];

  it.each(cases)("maps %s to its gRPC status with its message", async (error, code) => {
    const { sm, call } = setup();
    sm.getWorkflow.mockRejectedValueOnce(error);
    expectRejected(await call("getWorkflow", { workflowId: WORKFLOW_ID }), code, error.message);
  });

  it("answers an unexpected error with INTERNAL and a correlation id that is in the error log with the stack", async () => {
    const { sm, call, logs } = setup();
    sm.getWorkflow.mockRejectedValueOnce(new Error("cannot read properties of undefined at pg/secret-host"));
    const outcome = await call("getWorkflow", { workflowId: WORKFLOW_ID });
    expectRejected(outcome, grpc.status.INTERNAL);
    const match = /^internal error \(correlation id ([0-9a-f-]{36})\)$/.exec(outcome.error!.details!);
    expect(match, outcome.error!.details).not.toBeNull();
    expect(outcome.error!.details).not.toMatch(/secret-host|at |\n/);

    const line = logs.records().find((r) => r.correlation_id === match![1]);
    expect(line).toMatchObject({ level: "error", method: "workflow.v1.WorkflowService/GetWorkflow" });
    expect((line!.err as { stack: string }).stack).toContain("secret-host");
  });
});

describe("database outages", () => {
  it("answers UNAVAILABLE (retryable, nothing changed) when PostgreSQL is unreachable or drops the connection", async () => {
    const { sm, call, logs } = setup();
    const outages = [
      Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" }),
      new Error("Failed query: select 1", {
        cause: Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" }),
      }),
      new Error("Connection terminated unexpectedly"),
    ];
    for (const outage of outages) {
      sm.getWorkflow.mockRejectedValueOnce(outage);
      const outcome = await call("getWorkflow", { workflowId: WORKFLOW_ID });
      expectRejected(outcome, grpc.status.UNAVAILABLE);
      expect(outcome.error!.details).toBe("the database is unavailable; retry later");
    }
    expect(logs.records().filter((r) => r.level === "warn")).toHaveLength(outages.length);
  });
});

describe("auth", () => {
  it("accepts exactly `Bearer <token>`", () => {
    expect(isAuthorized("Bearer t0ken", "t0ken")).toBe(true);
    expect(isAuthorized("bearer t0ken", "t0ken")).toBe(true);
    expect(isAuthorized("Bearer  t0ken ", "t0ken")).toBe(true);
    expect(isAuthorized(undefined, "t0ken")).toBe(false);
    expect(isAuthorized("", "t0ken")).toBe(false);
    expect(isAuthorized("t0ken", "t0ken")).toBe(false);
    expect(isAuthorized("Basic t0ken", "t0ken")).toBe(false);
    expect(isAuthorized("Bearer t0ke", "t0ken")).toBe(false);
    expect(isAuthorized("Bearer t0kenn", "t0ken")).toBe(false);
    expect(isAuthorized("Bearer ", "t0ken")).toBe(false);
  });

  describe("on a server with a token (mocked StateManager)", () => {
    const closers: (() => Promise<void> | void)[] = [];
    afterEach(async () => {
      for (const close of closers.splice(0)) await close();
    });

    it("refuses calls without the token before any handler runs, and serves them with it", async () => {
      const sm = mockStateManager();
      const registry = createMetricsRegistry({ app: "api", collectDefault: false });
      const server = await startApiServer({
        stateManager: sm,
        logger: createLogger({ app: "api", level: "silent" }),
        registry,
        settings: {
          grpcAddr: { host: "127.0.0.1", port: 0, address: "127.0.0.1:0" },
          apiToken: "t0ken",
          tls: undefined,
          maxReceiveBytes: 1024 * 1024,
        },
      });
      closers.push(() => server.close(500));
      const client = createGrpcClient(WorkflowService, `127.0.0.1:${server.port}`);
      closers.push(() => client.close());

      const deadline = () => Date.now() + 5_000;
      const error = await client.getWorkflow({ workflowId: WORKFLOW_ID }, { deadline: deadline() }).catch((e) => e);
      expect(error.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(sm.getWorkflow).not.toHaveBeenCalled();

      const metadata = new grpc.Metadata();
      metadata.set("authorization", "Bearer t0ken");
      const { workflow } = await client.getWorkflow({ workflowId: WORKFLOW_ID }, { deadline: deadline(), metadata });
      expect(workflow!.id).toBe(WORKFLOW_ID);
      expect(sm.getWorkflow).toHaveBeenCalledTimes(1);
      expect(await registry.metrics()).toMatch(/code="UNAUTHENTICATED"/);
    });
  });
});
