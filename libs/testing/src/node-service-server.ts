import * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type ExecuteNodeRequest,
  type ExecuteNodeResponse,
  ExecuteNodeResponseSchema,
  NodeService,
  grpcServiceDefinition,
} from "@trellis/proto";

/** What a test's handler may return: any init shape of ExecuteNodeResponse (a built message is one too). */
export type ExecuteResult = MessageInitShape<typeof ExecuteNodeResponseSchema>;

/**
 * Answers one ExecuteNode call. Throwing a gRPC error object (`{ code, details }`) answers with that status; any
 * other throw answers INTERNAL. `signal` aborts when the client cancels the call (or the server is closed).
 */
export type ExecuteHandler = (
  request: ExecuteNodeRequest,
  call: grpc.ServerUnaryCall<ExecuteNodeRequest, ExecuteNodeResponse>,
  signal: AbortSignal,
) => Promise<ExecuteResult> | ExecuteResult;

const rawResponses = new WeakMap<object, Uint8Array>();

/**
 * A response whose bytes on the wire are `bytes`, whatever they are: for a NodeService that answers garbage (not an
 * ExecuteNodeResponse at all). Return it from a handler.
 */
export function rawResponse(bytes: Uint8Array): ExecuteNodeResponse {
  const placeholder = create(ExecuteNodeResponseSchema);
  rawResponses.set(placeholder, bytes);
  return placeholder;
}

/** One ExecuteNode call the server received, in arrival order. */
export interface RecordedCall {
  /** The request as decoded by the server. */
  request: ExecuteNodeRequest;
  /** `Date.now()` when the call arrived. */
  receivedAt: number;
  /** Set to true when the client cancels the call (deadline exceeded, aborted, worker told to stop). */
  cancelled: boolean;
}

/** A real NodeService gRPC server for tests, started by {@link startNodeServiceServer}. */
export interface NodeServiceServer {
  /** `host:port` to dial, e.g. `127.0.0.1:41234`. */
  address: string;
  /** The port actually bound (a free one when 0 was asked). */
  port: number;
  /** Every call received so far, oldest first. Tests may inspect or clear it (`calls.length = 0`). */
  calls: RecordedCall[];
  /** Replaces the handler; calls already running keep the one they started with. */
  setHandler(handler: ExecuteHandler): void;
  /** Stops the server at once, cancelling calls in flight. Safe to call twice. */
  close(): Promise<void>;
}

/** Options of {@link startNodeServiceServer}. */
export interface NodeServiceServerOptions {
  /** Interface to listen on. @default "127.0.0.1" */
  host?: string;
  /** Port to listen on; reuse a closed server's port to simulate a NodeService coming back. @default 0 (any free port) */
  port?: number;
  /** How it listens, e.g. `grpc.ServerCredentials.createSsl(...)` for TLS. @default insecure (plaintext) */
  credentials?: grpc.ServerCredentials;
}

const GRPC_STATUS_CODES = new Set<number>(
  Object.values(grpc.status).filter((value): value is number => typeof value === "number"),
);

/** Whether `error` looks like a gRPC status (`{ code: grpc.status.X, details? }`) rather than a plain failure. */
function isGrpcStatusError(error: unknown): error is { code: grpc.status; details?: unknown; message?: unknown } {
  if (typeof error !== "object" || error === null || !("code" in error)) return false;
  const { code } = error;
  return typeof code === "number" && GRPC_STATUS_CODES.has(code) && code !== grpc.status.OK;
}

/** The status a handler's throw is answered with. */
function toStatus(error: unknown): grpc.ServerErrorResponse {
  if (isGrpcStatusError(error)) {
    const details =
      typeof error.details === "string" ? error.details : typeof error.message === "string" ? error.message : "";
    return Object.assign(new Error(details), { code: error.code, details });
  }
  const details = error instanceof Error ? error.message : String(error);
  return Object.assign(new Error(details), { code: grpc.status.INTERNAL, details });
}

/** Formats `host:port`, bracketing IPv6 hosts. */
function joinHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Starts a real grpc-js server implementing `workflow.v1.NodeService` whose ExecuteNode runs `handler`, recording
 * every call. Resolves once it listens.
 */
export async function startNodeServiceServer(
  handler: ExecuteHandler,
  opts: NodeServiceServerOptions = {},
): Promise<NodeServiceServer> {
  const host = opts.host ?? "127.0.0.1";
  const calls: RecordedCall[] = [];
  const inFlight = new Set<AbortController>();
  let current = handler;

  const server = new grpc.Server();
  const definition = grpcServiceDefinition(NodeService);
  const serialize = definition.executeNode.responseSerialize;
  definition.executeNode.responseSerialize = (response) => {
    const raw = rawResponses.get(response);
    return raw ? Buffer.from(raw) : serialize(response);
  };
  const implementation: grpc.UntypedServiceImplementation = {
    executeNode(
      call: grpc.ServerUnaryCall<ExecuteNodeRequest, ExecuteNodeResponse>,
      callback: grpc.sendUnaryData<ExecuteNodeResponse>,
    ) {
      const recorded: RecordedCall = { request: call.request, receivedAt: Date.now(), cancelled: false };
      calls.push(recorded);
      const controller = new AbortController();
      inFlight.add(controller);
      let answered = false;
      // grpc-js also emits "cancelled" when the stream closes after a normal answer: only earlier ones count.
      call.on("cancelled", () => {
        if (answered) return;
        recorded.cancelled = true;
        controller.abort(new DOMException("the client cancelled the call", "AbortError"));
      });
      const run = current;
      void Promise.resolve()
        .then(() => run(call.request, call, controller.signal))
        .then((result) => create(ExecuteNodeResponseSchema, result))
        .then(
          (response) => {
            answered = true;
            callback(null, response);
          },
          (error: unknown) => {
            answered = true;
            callback(toStatus(error));
          },
        )
        .finally(() => inFlight.delete(controller));
    },
  };
  server.addService(definition as unknown as grpc.ServiceDefinition, implementation);

  const port = await new Promise<number>((resolve, reject) => {
    const credentials = opts.credentials ?? grpc.ServerCredentials.createInsecure();
    server.bindAsync(joinHostPort(host, opts.port ?? 0), credentials, (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });

  let closed = false;
  return {
    address: joinHostPort(host, port),
    port,
    calls,
    setHandler(next) {
      current = next;
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const controller of inFlight) {
        controller.abort(new DOMException("the test server is closing", "AbortError"));
      }
      server.forceShutdown();
    },
  };
}
