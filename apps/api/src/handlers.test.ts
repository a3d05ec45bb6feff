import { type DescMessage, type MessageInitShape, create } from "@bufbuild/protobuf";
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
  WorkflowAction,
  WorkflowService,
  WorkflowStatus,
  createGrpcClient,
} from "@trellis/proto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { LogLines } from "../test/log-lines.js";
import { WORKFLOW_ID, mockStateManager } from "../test/mock-state-manager.js";
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
      'update_mask.paths[1]: "status" cannot be updated (allowed: name, labels)',
    );
    expectRejected(
      await call("updateWorkflow", { workflowId: WORKFLOW_ID, updateMask: { paths: ["name", "name"] } }),
      grpc.status.INVALID_ARGUMENT,
      'update_mask.paths[1]: duplicate path "name"',
    );
    expectRejected(
      await call("updateWorkflow", { workflowId: WORKFLOW_ID }),
      grpc.status.INVALID_ARGUMENT,
      "update_mask: required when no action is given (paths: name, labels)",
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
