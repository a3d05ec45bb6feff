import type { ServerResponse } from "node:http";
import { toJson } from "@bufbuild/protobuf";
import { type WorkflowEvent, WorkflowEventSchema } from "@trellis/proto";

/** Replays a workflow's committed events after a sequence, then follows live until its terminal event. */
export interface WorkflowEventSource {
  follow(workflowId: string, afterSequence: number, signal: AbortSignal): AsyncIterable<WorkflowEvent>;
}

/** Options of {@link writeEventStream}. */
export interface EventStreamOptions {
  events: WorkflowEventSource;
  workflowId: string;
  afterSequence: number;
  /** Period of the `: heartbeat` comments that keep proxies from closing an idle stream. */
  heartbeatMs: number;
  /** Ends the stream (the client went away, or the dashboard is shutting down). */
  signal: AbortSignal;
  /** Called when following fails after the stream started (the client gets an `error` event). */
  onError: (error: unknown) => void;
}

/** How long an EventSource waits before reconnecting (it then resumes with Last-Event-ID). */
const RETRY_MS = 2_000;

function drained(res: ServerResponse, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    res.once("drain", done);
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Writes a workflow's events as Server-Sent Events: one `message` per event with `id:` = its sequence (so an
 * EventSource that reconnects resumes after the last one it saw), an `event: chunk` per output chunk when the source
 * has them (`?chunks=1`), a heartbeat comment every `heartbeatMs`, and a
 * final `end` event once the workflow's terminal transaction has been sent. A slow client slows the reading
 * (nothing is buffered beyond the socket); the stream stops when `signal` aborts.
 */
export async function writeEventStream(res: ServerResponse, opts: EventStreamOptions): Promise<void> {
  const { signal } = opts;
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-store",
    connection: "keep-alive",
    // Asks reverse proxies (nginx) not to buffer the stream.
    "x-accel-buffering": "no",
  });
  res.write(`retry: ${RETRY_MS}\n\n`);
  const heartbeat = setInterval(() => res.write(": heartbeat\n\n"), opts.heartbeatMs);
  try {
    for await (const event of opts.events.follow(opts.workflowId, opts.afterSequence, signal)) {
      const data = JSON.stringify(toJson(WorkflowEventSchema, event));
      // A chunk (sequence 0) is an `event: chunk` without an id: a reconnect resumes after the last durable event.
      const message =
        event.sequence === 0n ? `event: chunk\ndata: ${data}\n\n` : `id: ${event.sequence}\ndata: ${data}\n\n`;
      if (!res.write(message)) await drained(res, signal);
      if (signal.aborted) break;
    }
    if (!signal.aborted) res.write("event: end\ndata: {}\n\n");
  } catch (error) {
    if (!signal.aborted) {
      opts.onError(error);
      res.write(
        `event: stream-error\ndata: ${JSON.stringify({ message: "the event stream failed; reconnecting" })}\n\n`,
      );
    }
  } finally {
    clearInterval(heartbeat);
    res.end();
  }
}
