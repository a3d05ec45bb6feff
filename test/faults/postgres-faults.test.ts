// Fault suite: PostgreSQL drops every connection of the apps (pg_terminate_backend) while workflows run.
import * as grpc from "@grpc/grpc-js";
import { ExecutionStatus, type WorkflowService, WorkflowStatus, type GrpcClient } from "@trellis/proto";
import { type FaultStack, fanInNodes, recordMeasurement, startFaultStack, testNode, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let stack: FaultStack;
let api: GrpcClient<typeof WorkflowService>;

beforeAll(async () => {
  stack = await startFaultStack({
    name: "fault_pg_terminate",
    handler: async (request) => {
      if (request.node!.capability === "work") await new Promise((resolve) => setTimeout(resolve, 200));
      return { status: ExecutionStatus.SUCCESS };
    },
  });
  const [started] = await Promise.all([
    stack.startApi(),
    stack.startScheduler(),
    stack.startWorker(["work", "echo"]),
    stack.startWorker(["work", "echo"]),
  ]);
  api = started.client;
}, 120_000);

afterAll(async () => {
  await stack?.close();
});

/** Terminates every backend the apps hold on this test's database (and only those). */
async function terminateAppBackends(): Promise<number> {
  const { rows } = await stack.db.pool.query<{ n: number }>(
    `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
      where datname = $1 and pid <> pg_backend_pid() and application_name like 'trellis-%'`,
    [stack.db.name],
  );
  return rows[0]!.n;
}

describe("PostgreSQL drops the apps' connections", () => {
  it("pg_terminate_backend mid-run, three times: the apps reconnect, the api never answers INTERNAL, work finishes", async () => {
    const workflows = await Promise.all(
      Array.from({ length: 4 }, () =>
        stack.createWorkflow(fanInNodes(12, [testNode("c1", "work", ["join"]), testNode("c2", "work", ["c1"])])),
      ),
    );
    const ids = workflows.map((w) => w.id);
    // Callers keep calling throughout: each answer must be OK, or UNAVAILABLE (retry), never INTERNAL.
    const codes = new Map<string, number>();
    let calling = true;
    const caller = (async () => {
      while (calling) {
        try {
          await api.getWorkflow({ workflowId: ids[0]! }, { deadline: Date.now() + 5_000 });
          codes.set("OK", (codes.get("OK") ?? 0) + 1);
        } catch (error) {
          const code = grpc.status[(error as grpc.ServiceError).code] ?? "UNKNOWN";
          codes.set(code, (codes.get(code) ?? 0) + 1);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    let terminated = 0;
    for (let round = 0; round < 3; round++) {
      await waitFor(async () => round > 0 || (await stack.countNodes(ids, "RUNNING")) > 0, {
        description: "nodes to be running",
      });
      terminated += await terminateAppBackends();
      await new Promise((resolve) => setTimeout(resolve, 400));
    }
    const lastFaultAt = Date.now();
    const done = await stack.waitFinished(ids, 60_000);
    calling = false;
    await caller;
    expect(done.map((w) => w.status)).toEqual(ids.map(() => WorkflowStatus.SUCCEEDED));
    expect(terminated).toBeGreaterThan(5);
    expect([...codes.keys()].filter((code) => code !== "OK" && code !== "UNAVAILABLE")).toEqual([]);
    expect(codes.get("OK")).toBeGreaterThan(0);
    for (const app of stack.apps.processes) expect(app.exitStatus, `${app.name}:\n${app.tail()}`).toBeNull();
    recordMeasurement("postgres pg_terminate_backend x3", {
      terminatedBackends: terminated,
      finishedAfterLastFaultMs: Date.now() - lastFaultAt,
      apiOk: codes.get("OK") ?? 0,
      apiUnavailable: codes.get("UNAVAILABLE") ?? 0,
    });
    await stack.expectInvariants({ workflowIds: ids });
  }, 120_000);
});
