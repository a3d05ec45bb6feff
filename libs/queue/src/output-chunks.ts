import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type OutputChunk, OutputChunkSchema, type WorkflowEvent, WorkflowEventSchema } from "@trellis/proto";

/** The event type of a chunk in a WatchWorkflow stream (sequence 0: chunks are not part of the durable sequence). */
export const OUTPUT_CHUNK_EVENT = "node.output_chunk";

/** How long an attempt's chunks are kept after its last one when `CHUNK_RETENTION_MS` is unset: 1 hour. */
export const DEFAULT_CHUNK_RETENTION_MS = 3_600_000;

/** Chunks kept per attempt when `CHUNK_MAX_PER_ATTEMPT` is unset; later ones are dropped. */
export const DEFAULT_CHUNK_MAX_PER_ATTEMPT = 100_000;

/** Bytes of chunk text and data kept per attempt when `CHUNK_MAX_BYTES_PER_ATTEMPT` is unset: 16 MiB. */
export const DEFAULT_CHUNK_MAX_BYTES_PER_ATTEMPT = 16 * 1024 * 1024;

/** One node attempt's chunks, as the Redis Stream that carries them is named. */
export interface AttemptRef {
  workflowId: string;
  nodeId: string;
  /** 1-based, as `Node.attempt`. */
  attempt: number;
}

/**
 * The Redis Stream of one attempt's chunks: `<prefix>:chunks:<workflow>/<node>/<attempt>`. Node ids contain no `/`
 * (their pattern), so the key names one attempt only. On a Redis Cluster (`hashTagged`) the workflow id is a hash tag,
 * `<prefix>:chunks:{<workflow>}/<node>/<attempt>`: a watcher reads all of a workflow's streams in one XREAD, whose
 * keys must share a slot.
 */
export function chunkStreamKey(prefix: string, ref: AttemptRef, hashTagged = false): string {
  const workflow = hashTagged ? `{${ref.workflowId}}` : ref.workflowId;
  return `${prefix}:chunks:${workflow}/${ref.nodeId}/${ref.attempt}`;
}

/**
 * Stream entry fields. A chunk: `i` (its index in the attempt, from 0), `c` (channel), `t` (text), `d` (data, only
 * when not empty). The attempt's end: `e` with the number of chunks sent and `x` with those dropped (over a bound,
 * or while Redis was away); readers stop at it.
 */
export const CHUNK_FIELDS = {
  index: "i",
  channel: "c",
  text: "t",
  data: "d",
  end: "e",
  dropped: "x",
} as const;

/** A decoded stream entry: a chunk, or the attempt's end. */
export type ChunkEntry =
  | { kind: "chunk"; index: number; chunk: OutputChunk; timeMs: number }
  | { kind: "end"; sent: number; dropped: number };

/** The milliseconds part of a stream entry id (`<ms>-<seq>`): when Redis stored it. */
function entryTimeMs(id: string): number {
  const ms = Number(id.slice(0, id.indexOf("-")));
  return Number.isFinite(ms) ? ms : 0;
}

/** Decodes one entry as read with the Buffer forms of XRANGE/XREAD (field names and values as Buffers). */
export function decodeChunkEntry(id: string, fields: Buffer[]): ChunkEntry {
  const values = new Map<string, Buffer>();
  for (let i = 0; i + 1 < fields.length; i += 2) values.set(fields[i]!.toString("latin1"), fields[i + 1]!);
  const end = values.get(CHUNK_FIELDS.end);
  if (end !== undefined) {
    return { kind: "end", sent: Number(end.toString()), dropped: Number(values.get(CHUNK_FIELDS.dropped) ?? 0) };
  }
  const data = values.get(CHUNK_FIELDS.data);
  return {
    kind: "chunk",
    index: Number(values.get(CHUNK_FIELDS.index)?.toString() ?? "0"),
    chunk: create(OutputChunkSchema, {
      channel: values.get(CHUNK_FIELDS.channel)?.toString("utf8") ?? "",
      text: values.get(CHUNK_FIELDS.text)?.toString("utf8") ?? "",
      data: data === undefined ? new Uint8Array() : new Uint8Array(data),
    }),
    timeMs: entryTimeMs(id),
  };
}

/** The WatchWorkflow event of one chunk: type `node.output_chunk`, sequence 0, its attempt and index. */
export function chunkEvent(ref: AttemptRef, index: number, chunk: OutputChunk, timeMs: number): WorkflowEvent {
  return create(WorkflowEventSchema, {
    workflowId: ref.workflowId,
    nodeId: ref.nodeId,
    type: OUTPUT_CHUNK_EVENT,
    sequence: 0n,
    attempt: ref.attempt,
    chunkIndex: BigInt(index),
    chunk,
    time: timestampFromMs(timeMs),
  });
}
