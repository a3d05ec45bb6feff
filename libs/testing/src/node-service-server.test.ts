import * as grpc from "@grpc/grpc-js";
import { fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { createGrpcClient, ExecutionStatus, type GrpcClient, NodeService } from "@trellis/proto";
import { afterEach, describe, expect, it } from "vitest";
import { type NodeServiceServer, startNodeServiceServer } from "./node-service-server.js";
import { waitFor } from "./wait-for.js";

const servers: NodeServiceServer[] = [];
const clients: GrpcClient<typeof NodeService>[] = [];

async function start(...args: Parameters<typeof startNodeServiceServer>): Promise<NodeServiceServer> {
  const server = await startNodeServiceServer(...args);
  servers.push(server);
  return server;
}

function clientOf(server: NodeServiceServer): GrpcClient<typeof NodeService> {
  const client = createGrpcClient(NodeService, server.address);
  clients.push(client);
  return client;
}

function deadline(ms = 5000): number {
  return Date.now() + ms;
}

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  for (const server of servers.splice(0)) await server.close();
});

describe("startNodeServiceServer", () => {
  it("answers with the handler's response and records the request", async () => {
    const server = await start((request) => ({
      status: ExecutionStatus.SUCCESS,
      output: fromJson(ValueSchema, { seen: request.node?.id ?? null }),
    }));
    expect(server.address).toBe(`127.0.0.1:${server.port}`);
    const client = clientOf(server);

    const response = await client.executeNode(
      { node: { id: "a", capability: "echo", input: { x: 1 } }, context: { workflowId: "wf", attempt: 1 } },
      { deadline: deadline() },
    );

    expect(response.status).toBe(ExecutionStatus.SUCCESS);
    expect(toJson(ValueSchema, response.output!)).toEqual({ seen: "a" });
    expect(server.calls).toHaveLength(1);
    // grpc-js reports the stream's close after a normal answer as "cancelled"; give it time to (wrongly) count.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const [call] = server.calls;
    expect(call?.request.node?.input).toEqual({ x: 1 });
    expect(call?.request.context?.workflowId).toBe("wf");
    expect(call?.cancelled).toBe(false);
    expect(call?.receivedAt).toBeGreaterThan(0);
  });

  it("answers with the status of a thrown gRPC error object", async () => {
    const server = await start(() => {
      throw { code: grpc.status.UNAVAILABLE, details: "agent runtime overloaded" };
    });
    const client = clientOf(server);

    await expect(client.executeNode({}, { deadline: deadline() })).rejects.toMatchObject({
      code: grpc.status.UNAVAILABLE,
      details: "agent runtime overloaded",
    });
  });

  it("answers INTERNAL when the handler throws anything else", async () => {
    const server = await start(async () => {
      throw new Error("handler bug");
    });
    const client = clientOf(server);

    await expect(client.executeNode({}, { deadline: deadline() })).rejects.toMatchObject({
      code: grpc.status.INTERNAL,
      details: "handler bug",
    });
  });

  it("marks a call cancelled and aborts the handler's signal when the client cancels", async () => {
    let aborted = false;
    const server = await start(
      (_request, _call, signal) =>
        new Promise((resolve) => {
          signal.addEventListener("abort", () => {
            aborted = true;
            resolve({ status: ExecutionStatus.SUCCESS });
          });
        }),
    );
    const client = clientOf(server);
    const controller = new AbortController();

    const pending = client.executeNode({}, { deadline: deadline(), signal: controller.signal });
    await waitFor(() => server.calls.length === 1, { description: "the call to arrive" });
    controller.abort();

    await expect(pending).rejects.toMatchObject({ code: grpc.status.CANCELLED });
    await waitFor(() => server.calls[0]?.cancelled, { description: "the call to be marked cancelled" });
    expect(aborted).toBe(true);
  });

  it("marks a call cancelled when its deadline passes", async () => {
    const server = await start(() => new Promise(() => {}));
    const client = clientOf(server);

    await expect(client.executeNode({}, { deadline: deadline(100) })).rejects.toMatchObject({
      code: grpc.status.DEADLINE_EXCEEDED,
    });
    await waitFor(() => server.calls[0]?.cancelled, { description: "the call to be marked cancelled" });
  });

  it("uses the handler set by setHandler for later calls", async () => {
    const server = await start(() => ({ status: ExecutionStatus.SUCCESS }));
    const client = clientOf(server);
    server.setHandler(() => ({ status: ExecutionStatus.TASK_ERROR, errorMessage: "changed" }));

    const response = await client.executeNode({}, { deadline: deadline() });

    expect(response.status).toBe(ExecutionStatus.TASK_ERROR);
    expect(response.errorMessage).toBe("changed");
  });

  it("can be started again on the port of a closed server", async () => {
    const first = await start(() => ({ status: ExecutionStatus.SUCCESS }));
    await first.close();
    await first.close();

    const second = await start(() => ({ status: ExecutionStatus.INFRA_ERROR }), { port: first.port });
    const response = await clientOf(second).executeNode({}, { deadline: deadline() });

    expect(second.port).toBe(first.port);
    expect(response.status).toBe(ExecutionStatus.INFRA_ERROR);
  });
});
