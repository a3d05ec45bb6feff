import * as grpc from "@grpc/grpc-js";
import { create, fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ExecuteNodeResponseSchema,
  ExecutionStatus,
  EditType,
  NodeService,
  WorkflowService,
  addGrpcService,
  createGrpcClient,
  grpcServiceDefinition,
  type GrpcClient,
} from "../src/index.js";

describe("grpcServiceDefinition", () => {
  it("maps every method to its full path with binary serializers that round-trip", () => {
    const def = grpcServiceDefinition(WorkflowService);
    expect(def.createWorkflow.path).toBe("/workflow.v1.WorkflowService/CreateWorkflow");
    expect(def.watchWorkflow.responseStream).toBe(true);
    expect(def.getWorkflow.responseStream).toBe(false);
    const bytes = def.getWorkflow.requestSerialize(create(def.getWorkflow.requestSchema, { workflowId: "abc" }));
    expect(def.getWorkflow.requestDeserialize(bytes).workflowId).toBe("abc");
  });
});

describe("a NodeService served and called through the adapter", () => {
  let server: grpc.Server;
  let client: GrpcClient<typeof NodeService>;
  let seenAttempt = 0;

  beforeAll(async () => {
    server = new grpc.Server();
    addGrpcService(server, NodeService, {
      executeNode(call, callback) {
        seenAttempt = call.request.context?.attempt ?? 0;
        if (call.request.node?.capability === "boom") {
          callback({ code: grpc.status.FAILED_PRECONDITION, details: "boom" });
          return;
        }
        callback(
          null,
          create(ExecuteNodeResponseSchema, {
            status: ExecutionStatus.SUCCESS,
            output: fromJson(ValueSchema, { echoed: call.request.node?.input ?? null }),
            edits: [{ type: EditType.DELETE, nodeId: "x" }],
          }),
        );
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    client = createGrpcClient(NodeService, `127.0.0.1:${port}`);
  });

  afterAll(() => {
    client.close();
    server.forceShutdown();
  });

  it("carries structs, enums and repeated messages both ways", async () => {
    const response = await client.executeNode(
      { node: { id: "n1", capability: "echo", input: { a: 1, b: ["x"] } }, context: { attempt: 2 } },
      { deadline: Date.now() + 5_000 },
    );
    expect(seenAttempt).toBe(2);
    expect(response.status).toBe(ExecutionStatus.SUCCESS);
    expect(response.output && toJson(ValueSchema, response.output)).toEqual({ echoed: { a: 1, b: ["x"] } });
    expect(response.edits[0]?.type).toBe(EditType.DELETE);
  });

  it("rejects with the server's status code", async () => {
    await expect(
      client.executeNode({ node: { id: "n1", capability: "boom" } }, { deadline: Date.now() + 5_000 }),
    ).rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION });
  });

  it("cancels the call when the signal aborts", async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(
      client.executeNode({ node: { id: "n1", capability: "echo" } }, { signal: controller.signal }),
    ).rejects.toMatchObject({ code: grpc.status.CANCELLED });
  });
});
