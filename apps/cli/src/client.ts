import * as grpc from "@grpc/grpc-js";
import { type CallOptions, type GrpcClient, WorkflowService, createGrpcClient } from "@trellis/proto";
import type { WorkflowEventSource } from "./follow.js";

/** How long a unary call may take. */
const CALL_TIMEOUT_MS = 30_000;

/** A WorkflowService client with the caller's token on every call. */
export interface ApiConnection {
  client: GrpcClient<typeof WorkflowService>;
  /** Options of a unary call: a deadline, the token, and `signal` when given. */
  call(signal?: AbortSignal): CallOptions;
  /** WatchWorkflow and GetWorkflow as a {@link WorkflowEventSource}. */
  events: WorkflowEventSource;
  close(): void;
}

/** Connects (lazily, as grpc-js does) to the api at `addr`, sending `authorization: Bearer <token>` when given. */
export function connect(addr: string, token: string | undefined): ApiConnection {
  const client = createGrpcClient(WorkflowService, addr);
  const metadata = new grpc.Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  const call = (signal?: AbortSignal): CallOptions => ({
    deadline: Date.now() + CALL_TIMEOUT_MS,
    metadata,
    ...(signal === undefined ? {} : { signal }),
  });
  return {
    client,
    call,
    events: {
      // No deadline: a watch lasts as long as the workflow runs.
      watch: (workflowId, afterSequence, signal, includeChunks = false) =>
        client.watchWorkflow({ workflowId, afterSequence, includeChunks }, { metadata, signal }),
      status: async (workflowId, signal) => (await client.getWorkflow({ workflowId }, call(signal))).workflow!.status,
    },
    close: () => client.close(),
  };
}
