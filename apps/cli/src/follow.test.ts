import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { type WorkflowEvent, WorkflowEventSchema, WorkflowStatus } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { type Reconnect, type WorkflowEventSource, followWorkflow } from "./follow.js";

function event(sequence: number, workflowStatus = WorkflowStatus.RUNNING): WorkflowEvent {
  return create(WorkflowEventSchema, { sequence: BigInt(sequence), workflowId: "w", type: "x", workflowStatus });
}

function grpcError(code: grpc.status, details = ""): Error {
  return Object.assign(new Error(details), { code, details });
}

/** One scripted stream per watch call: the events it yields, then how it ends (undefined: normally). */
type Script = { events: WorkflowEvent[]; end?: Error };

function source(scripts: Script[], status: WorkflowStatus[] = []) {
  const calls: bigint[] = [];
  const src: WorkflowEventSource = {
    async *watch(_id, after) {
      calls.push(after);
      const script = scripts.shift();
      if (script === undefined) throw new Error("no more scripted streams");
      for (const e of script.events) if (e.sequence > after) yield e;
      if (script.end) throw script.end;
    },
    async status() {
      return status.shift() ?? WorkflowStatus.RUNNING;
    },
  };
  return { src, calls };
}

async function follow(src: WorkflowEventSource, extra: { giveUpAfterMs?: number; now?: () => number } = {}) {
  const seen: bigint[] = [];
  const reconnects: Reconnect[] = [];
  const status = await followWorkflow(src, "w", {
    signal: new AbortController().signal,
    onEvent: (e) => seen.push(e.sequence),
    onReconnect: (r) => reconnects.push(r),
    initialDelayMs: 1,
    maxDelayMs: 4,
    ...extra,
  });
  return { status, seen, reconnects };
}

describe("followWorkflow", () => {
  it("returns the terminal status of a stream that ends normally", async () => {
    const { src, calls } = source([{ events: [event(1), event(2), event(3, WorkflowStatus.SUCCEEDED)] }]);
    const result = await follow(src);
    expect(result).toMatchObject({ status: WorkflowStatus.SUCCEEDED, seen: [1n, 2n, 3n], reconnects: [] });
    expect(calls).toEqual([0n]);
  });

  it("resumes after the last sequence when the stream breaks, handing each event over once", async () => {
    const { src, calls } = source([
      { events: [event(1), event(2)], end: grpcError(grpc.status.UNAVAILABLE, "Connection dropped") },
      { events: [], end: grpcError(grpc.status.UNAVAILABLE, "No connection established") },
      { events: [event(2), event(3), event(4, WorkflowStatus.FAILED)] },
    ]);
    const result = await follow(src);
    expect(result.status).toBe(WorkflowStatus.FAILED);
    expect(result.seen).toEqual([1n, 2n, 3n, 4n]);
    expect(calls).toEqual([0n, 2n, 2n]);
    expect(result.reconnects).toEqual([
      { reason: "UNAVAILABLE: Connection dropped", afterSequence: 2n, delayMs: 1 },
      { reason: "UNAVAILABLE: No connection established", afterSequence: 2n, delayMs: 2 },
    ]);
  });

  it("asks for the status when a stream ends without a terminal event, and stops when it is final", async () => {
    const { src } = source([{ events: [] }], [WorkflowStatus.CANCELLED]);
    expect((await follow(src)).status).toBe(WorkflowStatus.CANCELLED);
  });

  it("reopens a stream that ended while the workflow still runs (e.g. a FAILED workflow retried)", async () => {
    const { src, calls } = source(
      [{ events: [event(1, WorkflowStatus.FAILED), event(2)] }, { events: [event(3, WorkflowStatus.SUCCEEDED)] }],
      [WorkflowStatus.RUNNING],
    );
    const result = await follow(src);
    expect(result.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(calls).toEqual([0n, 2n]);
    expect(result.reconnects[0]?.reason).toBe("the stream ended while the workflow is RUNNING");
  });

  it("fails at once on a permanent status", async () => {
    const { src } = source([{ events: [], end: grpcError(grpc.status.NOT_FOUND, "workflow w not found") }]);
    await expect(follow(src)).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    const { src: unauthenticated } = source([{ events: [], end: grpcError(grpc.status.UNAUTHENTICATED) }]);
    await expect(follow(unauthenticated)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
  });

  it("gives up when reconnects keep failing without an event for longer than allowed", async () => {
    let clock = 0;
    const broken = { events: [], end: grpcError(grpc.status.UNAVAILABLE, "down") };
    const { src } = source([broken, broken, broken, broken]);
    const now = () => {
      clock += 400;
      return clock;
    };
    await expect(follow(src, { giveUpAfterMs: 1000, now })).rejects.toThrow(
      "lost the event stream of workflow w (UNAVAILABLE: down) and could not resume it",
    );
  });

  it("stops when its signal aborts", async () => {
    const controller = new AbortController();
    const src: WorkflowEventSource = {
      async *watch(_id, _after, signal) {
        yield event(1);
        if (!signal.aborted) await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        throw grpcError(grpc.status.CANCELLED, "Cancelled on client");
      },
      status: async () => WorkflowStatus.RUNNING,
    };
    const following = followWorkflow(src, "w", {
      signal: controller.signal,
      onEvent: () => controller.abort(new Error("interrupted")),
    });
    await expect(following).rejects.toThrow("interrupted");
  });
});
