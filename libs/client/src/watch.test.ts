import * as grpc from "@grpc/grpc-js";
import { type MessageInitShape, create } from "@bufbuild/protobuf";
import { type WorkflowEvent, WorkflowEventSchema, WorkflowStatus } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { TrellisClientError } from "./client-error.js";
import { type Reconnect, type WatchOptions, type WorkflowEventSource, resumingWatch } from "./watch.js";

function event(sequence: number, workflowStatus = WorkflowStatus.RUNNING): WorkflowEvent {
  return create(WorkflowEventSchema, { sequence: BigInt(sequence), workflowId: "w", type: "x", workflowStatus });
}

function chunk(attempt: number, chunkIndex: number): WorkflowEvent {
  const init: MessageInitShape<typeof WorkflowEventSchema> = {
    workflowId: "w",
    nodeId: "n",
    type: "node.output_chunk",
    attempt,
    chunkIndex: BigInt(chunkIndex),
    chunk: { channel: "tokens", text: `t${chunkIndex}` },
  };
  return create(WorkflowEventSchema, init);
}

function grpcError(code: grpc.status, details = ""): Error {
  return Object.assign(new Error(details), { code, details });
}

/** One scripted stream per watch call: the events it yields, then how it ends (undefined: normally). */
type Script = { events: WorkflowEvent[]; end?: Error };

function source(scripts: Script[], status: WorkflowStatus[] = []) {
  const calls: bigint[] = [];
  let closed = 0;
  const src: WorkflowEventSource = {
    async *watch(_id, after) {
      calls.push(after);
      const script = scripts.shift();
      if (script === undefined) throw new Error("no more scripted streams");
      try {
        for (const e of script.events) if (e.sequence === 0n || e.sequence > after) yield e;
        if (script.end) throw script.end;
      } finally {
        closed++;
      }
    },
    async status() {
      return status.shift() ?? WorkflowStatus.RUNNING;
    },
  };
  return { src, calls, closed: () => closed };
}

/** Runs a watch to its end: what it yielded (sequences; chunks as `c<attempt>.<index>`), its return value. */
async function drain(src: WorkflowEventSource, extra: WatchOptions = {}) {
  const seen: string[] = [];
  const reconnects: Reconnect[] = [];
  const watch = resumingWatch(src, "w", {
    onReconnect: (r) => reconnects.push(r),
    initialDelayMs: 1,
    maxDelayMs: 4,
    ...extra,
  });
  for (;;) {
    const next = await watch.next();
    if (next.done) return { status: next.value, seen, reconnects };
    const e = next.value;
    seen.push(e.sequence === 0n ? `c${e.attempt}.${e.chunkIndex}` : String(e.sequence));
  }
}

describe("resumingWatch", () => {
  it("yields every event of a stream that ends normally and returns the terminal status", async () => {
    const { src, calls } = source([{ events: [event(1), event(2), event(3, WorkflowStatus.SUCCEEDED)] }]);
    expect(await drain(src)).toEqual({ status: WorkflowStatus.SUCCEEDED, seen: ["1", "2", "3"], reconnects: [] });
    expect(calls).toEqual([0n]);
  });

  it("starts after afterSequence", async () => {
    const { src, calls } = source([{ events: [event(1), event(2), event(3, WorkflowStatus.FAILED)] }]);
    expect((await drain(src, { afterSequence: 2n })).seen).toEqual(["3"]);
    expect(calls).toEqual([2n]);
  });

  it("resumes after the last sequence yielded when the stream breaks, never yielding one twice", async () => {
    const { src, calls } = source([
      { events: [event(1), event(2)], end: grpcError(grpc.status.UNAVAILABLE, "Connection dropped") },
      { events: [], end: new TrellisClientError(grpc.status.UNAVAILABLE, "No connection established") },
      { events: [event(2), event(3), event(4, WorkflowStatus.FAILED)] },
    ]);
    const result = await drain(src);
    expect(result.status).toBe(WorkflowStatus.FAILED);
    expect(result.seen).toEqual(["1", "2", "3", "4"]);
    expect(calls).toEqual([0n, 2n, 2n]);
    expect(result.reconnects).toEqual([
      { reason: "UNAVAILABLE: Connection dropped", afterSequence: 2n, delayMs: 1 },
      { reason: "UNAVAILABLE: No connection established", afterSequence: 2n, delayMs: 2 },
    ]);
  });

  it("passes chunk events through without resuming from them (sequence 0), a resumed attempt's chunks again", async () => {
    const { src, calls } = source([
      { events: [event(1), chunk(1, 0), chunk(1, 1)], end: grpcError(grpc.status.UNAVAILABLE) },
      { events: [chunk(1, 0), chunk(1, 1), chunk(1, 2), event(2, WorkflowStatus.SUCCEEDED)] },
    ]);
    const result = await drain(src, { includeChunks: true });
    expect(result.seen).toEqual(["1", "c1.0", "c1.1", "c1.0", "c1.1", "c1.2", "2"]);
    expect(calls).toEqual([0n, 1n]);
  });

  it("asks for the status when a stream ends without a terminal event, and stops when it is final", async () => {
    const { src } = source([{ events: [] }], [WorkflowStatus.CANCELLED]);
    expect((await drain(src)).status).toBe(WorkflowStatus.CANCELLED);
  });

  it("reopens a stream that ended while the workflow still runs (a FAILED workflow retried)", async () => {
    const { src, calls } = source(
      [{ events: [event(1, WorkflowStatus.FAILED), event(2)] }, { events: [event(3, WorkflowStatus.SUCCEEDED)] }],
      [WorkflowStatus.RUNNING],
    );
    const result = await drain(src);
    expect(result.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(calls).toEqual([0n, 2n]);
    expect(result.reconnects[0]?.reason).toBe("the stream ended while the workflow is RUNNING");
  });

  it("throws a permanent status at once", async () => {
    const { src } = source([
      { events: [], end: new TrellisClientError(grpc.status.NOT_FOUND, "workflow w not found") },
    ]);
    await expect(drain(src)).rejects.toMatchObject({ codeName: "NOT_FOUND", details: "workflow w not found" });
  });

  it("gives up with UNAVAILABLE when reconnects keep failing without an event for longer than allowed", async () => {
    let clock = 0;
    const broken = { events: [], end: grpcError(grpc.status.UNAVAILABLE, "down") };
    const { src } = source([broken, broken, broken, broken]);
    const now = () => {
      clock += 400;
      return clock;
    };
    const error = await drain(src, { giveUpAfterMs: 1000, now }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TrellisClientError);
    expect(error).toMatchObject({
      codeName: "UNAVAILABLE",
      details: "lost the event stream of workflow w (UNAVAILABLE: down) and could not resume it",
    });
  });

  it("throws the signal's reason when it aborts", async () => {
    const controller = new AbortController();
    const src: WorkflowEventSource = {
      async *watch(_id, _after, signal) {
        yield event(1);
        if (!signal.aborted) await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        throw grpcError(grpc.status.CANCELLED, "Cancelled on client");
      },
      status: async () => WorkflowStatus.RUNNING,
    };
    const consumed = (async () => {
      for await (const _ of resumingWatch(src, "w", { signal: controller.signal })) controller.abort(new Error("stop"));
    })();
    await expect(consumed).rejects.toThrow("stop");
  });

  it("closes the stream when the consumer stops iterating early", async () => {
    const { src, closed } = source([{ events: [event(1), event(2), event(3, WorkflowStatus.SUCCEEDED)] }]);
    for await (const e of resumingWatch(src, "w")) if (e.sequence === 1n) break;
    expect(closed()).toBe(1);
  });
});
