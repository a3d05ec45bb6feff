import { create } from "@bufbuild/protobuf";
import { type WorkflowEvent, WorkflowEventSchema, WorkflowStatus } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { parseCliArgs } from "./args.js";
import { ChunkText } from "./chunk-text.js";
import { followWorkflow } from "./follow.js";

const ID = "0b8a4f1e-2a55-4b8e-9d0f-6f3f1c2a7e10";

function chunk(nodeId: string, attempt: number, index: number, text: string): WorkflowEvent {
  return create(WorkflowEventSchema, {
    workflowId: ID,
    nodeId,
    type: "node.output_chunk",
    attempt,
    chunkIndex: BigInt(index),
    chunk: { channel: "tokens", text },
  });
}

describe("ChunkText", () => {
  it("prints each node's text line by line, flushes the rest when the attempt ends, and skips chunks seen before", () => {
    const lines: string[] = [];
    const text = new ChunkText((line) => lines.push(line));
    text.add(chunk("chat", 1, 0, "Hello"));
    text.add(chunk("chat", 1, 1, " world.\nSecond"));
    expect(lines).toEqual(["  chat │ Hello world."]);
    // A resumed stream sends the running attempt's chunks again from the first.
    text.add(chunk("chat", 1, 0, "Hello"));
    text.add(chunk("chat", 1, 1, " world.\nSecond"));
    text.add(chunk("chat", 1, 2, " line"));
    text.end("chat");
    expect(lines).toEqual(["  chat │ Hello world.", "  chat │ Second line"]);
  });

  it("starts over for a new attempt, marked with its number, and ignores a superseded attempt's late chunks", () => {
    const lines: string[] = [];
    const text = new ChunkText((line) => lines.push(line));
    text.add(chunk("chat", 1, 0, "first try"));
    text.add(chunk("chat", 2, 0, "second try"));
    text.add(chunk("chat", 1, 1, " (late)"));
    text.endAll();
    expect(lines).toEqual(["  chat │ first try", "  chat#2 │ second try"]);
  });

  it("wraps a long line at its last space", () => {
    const lines: string[] = [];
    const text = new ChunkText((line) => lines.push(line));
    const words = Array.from({ length: 30 }, (_, i) => `word${i}`).join(" ");
    text.add(chunk("n", 1, 0, words));
    text.endAll();
    expect(lines.length).toBeGreaterThan(1);
    expect(lines.every((line) => line.length <= "  n │ ".length + 100)).toBe(true);
    expect(lines.map((line) => line.slice("  n │ ".length)).join(" ")).toBe(words);
  });
});

describe("--chunks", () => {
  it("is an option of watch and run", () => {
    expect(parseCliArgs(["watch", ID, "--chunks"], {}).command).toEqual({
      kind: "watch",
      workflowId: ID,
      chunks: true,
    });
    expect(parseCliArgs(["run", "wf.json", "--watch", "--chunks"], {}).command).toMatchObject({ chunks: true });
  });

  it("asks WatchWorkflow for chunks and hands them to onChunk, outside the durable sequence", async () => {
    const asked: boolean[] = [];
    const durable = create(WorkflowEventSchema, {
      workflowId: ID,
      sequence: 1n,
      type: "workflow.status_changed",
      workflowStatus: WorkflowStatus.SUCCEEDED,
    });
    const source = {
      async *watch(_id: string, _after: bigint, _signal: AbortSignal, includeChunks?: boolean) {
        asked.push(includeChunks ?? false);
        yield chunk("chat", 1, 0, "hi");
        yield durable;
      },
      status: async () => WorkflowStatus.SUCCEEDED,
    };
    const events: WorkflowEvent[] = [];
    const chunks: WorkflowEvent[] = [];
    const status = await followWorkflow(source, ID, {
      signal: new AbortController().signal,
      includeChunks: true,
      onEvent: (event) => events.push(event),
      onChunk: (event) => chunks.push(event),
    });
    expect(status).toBe(WorkflowStatus.SUCCEEDED);
    expect(asked).toEqual([true]);
    expect(chunks.map((c) => c.chunk?.text)).toEqual(["hi"]);
    expect(events).toEqual([durable]);
  });
});
