import * as grpc from "@grpc/grpc-js";
import type { Workflow } from "@trellis/proto";
import { WorkflowService, createGrpcClient } from "@trellis/proto";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import { waitFor } from "@trellis/testing";
import { describe, expect, it } from "vitest";
import { startApiServer } from "../src/index.js";
import { WORKFLOW_ID, mockStateManager } from "./mock-state-manager.js";

/** An api server over a mocked StateManager whose getWorkflow waits until the test releases it. */
async function serverWithStuckCall() {
  const sm = mockStateManager();
  let release: (workflow: Workflow) => void = () => {};
  sm.getWorkflow.mockImplementationOnce(
    () =>
      new Promise<Workflow>((resolve) => {
        release = resolve;
      }),
  );
  const server = await startApiServer({
    stateManager: sm,
    logger: createLogger({ app: "api", level: "silent" }),
    registry: createMetricsRegistry({ app: "api", collectDefault: false }),
    settings: {
      grpcAddr: { host: "127.0.0.1", port: 0, address: "127.0.0.1:0" },
      apiToken: undefined,
      tls: undefined,
      maxReceiveBytes: 1024 * 1024,
    },
  });
  const client = createGrpcClient(WorkflowService, `127.0.0.1:${server.port}`);
  const inFlight = client.getWorkflow({ workflowId: WORKFLOW_ID }, { deadline: Date.now() + 10_000 }).then(
    (response) => ({ code: grpc.status.OK, id: response.workflow?.id }),
    (error: grpc.ServiceError) => ({ code: error.code, id: undefined }),
  );
  await waitFor(() => sm.getWorkflow.mock.calls.length === 1, { description: "the call to reach the handler" });
  return { sm, server, client, inFlight, release: (w: Workflow) => release(w) };
}

describe("draining the api server", () => {
  it("goes NOT_SERVING, refuses new calls and lets an in-flight call finish within the grace period", async () => {
    const { sm, server, client, inFlight, release } = await serverWithStuckCall();
    const closed = server.close(5_000);
    expect(server.isServing()).toBe(false);

    const late = createGrpcClient(WorkflowService, `127.0.0.1:${server.port}`);
    const refused = await late
      .getWorkflow({ workflowId: WORKFLOW_ID }, { deadline: Date.now() + 5_000 })
      .catch((e) => e);
    expect(grpc.status[(refused as grpc.ServiceError).code]).toBe("UNAVAILABLE");
    late.close();

    release(sm.workflow);
    expect(await inFlight).toEqual({ code: grpc.status.OK, id: WORKFLOW_ID });
    await closed;
    client.close();
  });

  it("cuts calls still running when the grace period ends", async () => {
    const { server, client, inFlight } = await serverWithStuckCall();
    const started = performance.now();
    await server.close(200);
    expect(performance.now() - started).toBeLessThan(3_000);
    const { code } = await inFlight;
    expect(code).not.toBe(grpc.status.OK);
    client.close();
  });
});
