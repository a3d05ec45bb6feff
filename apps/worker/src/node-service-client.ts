import * as grpc from "@grpc/grpc-js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { durationToMs, valueProblem } from "@trellis/core";
import type { NodeResult, StartedNode } from "@trellis/db";
import {
  ErrorKind,
  type ExecuteNodeRequestSchema,
  type ExecuteNodeResponse,
  ExecuteNodeResponseSchema,
  type ExecuteNodeStreamResponse,
  ExecutionStatus,
  NodeService,
  type OutputChunk,
  createGrpcClient,
  type GrpcClient,
} from "@trellis/proto";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type NodeServiceRoute, addressFor, splitTlsAddress } from "./node-service-routes.js";

/** PEM material for NodeServices reached over TLS: the CA their certificates chain to, and a client pair for mTLS. */
export interface NodeServiceTls {
  ca: Buffer;
  cert?: Buffer | undefined;
  key?: Buffer | undefined;
}

/** A NodeService client: one channel per address. */
export type NodeServiceClient = GrpcClient<typeof NodeService>;

/**
 * Which NodeServices answered ExecuteNodeStream with UNIMPLEMENTED (one client per address): those get ExecuteNode
 * from then on, without trying the stream again.
 */
export class StreamingSupport {
  private readonly unimplemented = new WeakSet<NodeServiceClient>();

  /** Whether ExecuteNodeStream is worth calling on this client. */
  streams(client: NodeServiceClient): boolean {
    return !this.unimplemented.has(client);
  }

  /** Remembers that this client's NodeService has no ExecuteNodeStream. */
  markUnimplemented(client: NodeServiceClient): void {
    this.unimplemented.add(client);
  }
}

/** How a node is executed: ExecuteNodeStream with its chunks, or ExecuteNode. */
export interface ExecuteOptions {
  /** What is known of the NodeService's ExecuteNodeStream; without it ExecuteNode is called. */
  streaming?: StreamingSupport | undefined;
  /** Each output chunk, as it arrives (must not throw or wait). */
  onChunk?: ((chunk: OutputChunk) => void) | undefined;
  /** Sent as the call's metadata (tracing on: `traceparent`, `tracestate` of the call's span). */
  traceHeaders?: Readonly<Record<string, string>> | undefined;
}

/** The metadata of one call: the trace headers, when there are any. */
function metadataOf(headers: Readonly<Record<string, string>> | undefined): grpc.Metadata | undefined {
  if (headers === undefined) return undefined;
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(headers)) metadata.set(key, value);
  return metadata;
}

/**
 * Opens the channel to the agent runtime; the receive limit is set deliberately (grpc-js defaults to 4 MiB), and so
 * is the reconnect backoff: grpc-js backs off up to 120 s between attempts to reach a server that went away, and
 * every call meanwhile fails at once (UNAVAILABLE, an attempt spent). Capped at 2 s, a restarted NodeService is
 * found again within about 2 s.
 */
export function createNodeServiceClient(
  address: string,
  maxReceiveBytes: number,
  tls?: NodeServiceTls | undefined,
): NodeServiceClient {
  const { target, tls: secure } = splitTlsAddress(address);
  let credentials = grpc.credentials.createInsecure();
  if (secure) {
    // Configuration refuses a grpcs:// address without a CA; this guards callers that build clients themselves.
    if (!tls) throw new Error(`${address}: TLS needs a CA (NODE_SERVICE_TLS_CA)`);
    credentials = grpc.credentials.createSsl(tls.ca, tls.key ?? null, tls.cert ?? null);
  }
  return createGrpcClient(NodeService, target, credentials, {
    "grpc.max_receive_message_length": maxReceiveBytes,
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2_000,
  });
}

/** The client a capability's nodes are sent to. */
export type NodeServiceClientFor = (capability: string) => NodeServiceClient;

/**
 * The worker's NodeService clients: one per address (NODE_SERVICE_ADDR and each NODE_SERVICE_ROUTES address a
 * capability of this worker uses), each opened on first use with {@link createNodeServiceClient}'s options. One
 * client per address also keeps {@link StreamingSupport}'s memory per address.
 */
export class NodeServiceClients {
  private readonly byAddress = new Map<string, NodeServiceClient>();
  private readonly byCapability = new Map<string, NodeServiceClient>();

  constructor(
    private readonly options: {
      /** Where capabilities no route matches go (NODE_SERVICE_ADDR). */
      fallbackAddress: string;
      routes?: readonly NodeServiceRoute[] | undefined;
      maxReceiveBytes: number;
      /** For the addresses written `grpcs://` (NODE_SERVICE_TLS_*). */
      tls?: NodeServiceTls | undefined;
    },
  ) {}

  /** The address `capability` is routed to. */
  addressFor(capability: string): string {
    return addressFor(this.options.routes ?? [], capability, this.options.fallbackAddress);
  }

  /** The client of `capability`'s address (opened on first use). */
  clientFor(capability: string): NodeServiceClient {
    let client = this.byCapability.get(capability);
    if (!client) {
      client = this.clientOf(this.addressFor(capability));
      this.byCapability.set(capability, client);
    }
    return client;
  }

  /** The client of NODE_SERVICE_ADDR (opened on first use). */
  fallbackClient(): NodeServiceClient {
    return this.clientOf(this.options.fallbackAddress);
  }

  private clientOf(address: string): NodeServiceClient {
    let client = this.byAddress.get(address);
    if (!client) {
      client = createNodeServiceClient(address, this.options.maxReceiveBytes, this.options.tls);
      this.byAddress.set(address, client);
    }
    return client;
  }

  /** Closes every client opened. */
  close(): void {
    for (const client of this.byAddress.values()) client.close();
    this.byAddress.clear();
    this.byCapability.clear();
  }
}

/** Longest error message kept from a NodeService (in characters); the rest is cut. */
export const MAX_ERROR_MESSAGE_LENGTH = 16_384;

/** An error message as it can be stored: NUL characters (PostgreSQL refuses them) replaced, and cut to a bound. */
export function storableMessage(message: string): string {
  const clean = message.includes("\u0000") ? message.replaceAll("\u0000", "\uFFFD") : message;
  return clean.length > MAX_ERROR_MESSAGE_LENGTH ? `${clean.slice(0, MAX_ERROR_MESSAGE_LENGTH)}…` : clean;
}

/**
 * Calls ExecuteNodeStream (chunks to `onChunk`), or ExecuteNode when the NodeService has no stream (UNIMPLEMENTED,
 * remembered), for a started node with the node's timeout as deadline and maps every outcome to a NodeResult: a
 * failed call (any status but OK) is an INFRA_ERROR, an unspecified status a TASK_ERROR.
 */
export async function executeNode(
  client: NodeServiceClient,
  started: StartedNode,
  signal: AbortSignal,
  options: ExecuteOptions = {},
): Promise<NodeResult> {
  const result = await callNodeService(client, started, signal, options);
  if (result.kind !== "success") return { ...result, message: storableMessage(result.message) };
  // An output PostgreSQL cannot store would fail the result's transaction again at every attempt: it is the
  // NodeService's error, so the node fails with TASK_ERROR saying why.
  const problem = valueProblem(result.output);
  if (problem) {
    return {
      kind: "error",
      errorKind: ErrorKind.TASK_ERROR,
      message: storableMessage(`NodeService output cannot be stored: output${problem.path} ${problem.reason}`),
      usage: result.usage,
    };
  }
  return result;
}

async function callNodeService(
  client: NodeServiceClient,
  started: StartedNode,
  signal: AbortSignal,
  options: ExecuteOptions,
): Promise<NodeResult> {
  const deadline = Date.now() + started.timeoutMs;
  const workflowId = started.node.workflowId;
  const request: MessageInitShape<typeof ExecuteNodeRequestSchema> = {
    node: started.node,
    context: {
      workflowId,
      workflowName: started.workflowName,
      workflowInput: started.workflowInput,
      parentOutputs: started.parentOutputs,
      attempt: started.attempt,
      idempotencyKey: `${workflowId}/${started.node.id}`,
      deadline: timestampFromMs(deadline),
    },
  };
  const { streaming } = options;
  let method = "ExecuteNode";
  try {
    let response: ExecuteNodeResponse | undefined;
    if (streaming?.streams(client)) {
      method = "ExecuteNodeStream";
      try {
        response = await executeNodeStream(client, request, deadline, signal, options);
      } catch (error) {
        if ((error as Partial<grpc.ServiceError>).code !== grpc.status.UNIMPLEMENTED) throw error;
        // The same deadline: the time spent asking counts against the node's timeout.
        streaming.markUnimplemented(client);
        method = "ExecuteNode";
      }
    }
    response ??= await client.executeNode(request, { deadline, signal, metadata: metadataOf(options.traceHeaders) });
    const usage = usageOf(response.usage);
    switch (response.status) {
      case ExecutionStatus.SUCCESS:
        return { kind: "success", output: response.output, edits: response.edits, usage };
      case ExecutionStatus.INFRA_ERROR:
        return {
          kind: "error",
          errorKind: ErrorKind.INFRA_ERROR,
          message: response.errorMessage || "infra error",
          usage,
        };
      case ExecutionStatus.TASK_ERROR:
        return {
          kind: "error",
          errorKind: ErrorKind.TASK_ERROR,
          message: response.errorMessage || "task error",
          usage,
        };
      case ExecutionStatus.THROTTLED:
        return {
          kind: "throttled",
          retryAfterMs: response.retryAfter ? retryAfterMs(durationToMs(response.retryAfter)) : DEFAULT_RETRY_AFTER_MS,
          message: response.errorMessage || "throttled by the provider",
          usage,
        };
      case ExecutionStatus.UNSPECIFIED:
        return {
          kind: "error",
          errorKind: ErrorKind.TASK_ERROR,
          message: response.errorMessage || "NodeService returned no execution status",
          usage,
        };
      default: {
        const unknown: never = response.status;
        return {
          kind: "error",
          errorKind: ErrorKind.TASK_ERROR,
          message: `unknown execution status ${String(unknown)}`,
          usage,
        };
      }
    }
  } catch (error) {
    const e = error as Partial<grpc.ServiceError>;
    const code = typeof e.code === "number" ? grpc.status[e.code] : "UNKNOWN";
    return {
      kind: "error",
      errorKind: ErrorKind.INFRA_ERROR,
      message: `${method} failed: ${code}: ${e.details ?? e.message ?? String(error)}`,
    };
  }
}

/**
 * One ExecuteNodeStream call: each chunk goes to `onChunk` as it arrives, the result ends it. Chunks after the result
 * are ignored; a stream that ends (OK) without a result is a TASK_ERROR answer.
 */
function executeNodeStream(
  client: NodeServiceClient,
  request: MessageInitShape<typeof ExecuteNodeRequestSchema>,
  deadline: number,
  signal: AbortSignal,
  { onChunk, traceHeaders }: ExecuteOptions,
): Promise<ExecuteNodeResponse> {
  return new Promise((resolve, reject) => {
    const call = client.executeNodeStream(request, { deadline, signal, metadata: metadataOf(traceHeaders) });
    let result: ExecuteNodeResponse | undefined;
    call.on("data", (message: ExecuteNodeStreamResponse) => {
      if (result !== undefined) return;
      if (message.message.case === "chunk") onChunk?.(message.message.value);
      else if (message.message.case === "result") {
        result = message.message.value;
        resolve(result);
      }
    });
    call.on("error", (error) => reject(error));
    call.on("end", () => {
      if (result !== undefined) return;
      resolve(
        create(ExecuteNodeResponseSchema, {
          status: ExecutionStatus.TASK_ERROR,
          errorMessage: "ExecuteNodeStream ended without a result",
        }),
      );
    });
  });
}

/** How long a THROTTLED answer without retry_after pauses the node's keys. */
export const DEFAULT_RETRY_AFTER_MS = 1_000;

/** The longest pause a THROTTLED answer can put on its keys (a longer retry_after is cut to it). */
export const MAX_RETRY_AFTER_MS = 3_600_000;

/** A retry_after within bounds: a negative or absurd value from a NodeService must not stall a key for ever. */
function retryAfterMs(ms: number): number {
  if (!Number.isFinite(ms) || ms <= 0) return DEFAULT_RETRY_AFTER_MS;
  return Math.min(MAX_RETRY_AFTER_MS, Math.round(ms));
}

/** The usage a NodeService reported, without entries that are not finite numbers or are zero. */
function usageOf(usage: { [unit: string]: number }): Record<string, number> | undefined {
  const spent = Object.entries(usage).filter(
    ([unit, amount]) => unit !== "" && Number.isFinite(amount) && amount !== 0,
  );
  return spent.length === 0 ? undefined : Object.fromEntries(spent);
}
