export {
  type CallOptions,
  type ClientOptions,
  type ClientTlsOptions,
  DEFAULT_CHANNEL_OPTIONS,
  DEFAULT_DEADLINE_MS,
  TrellisClient,
  createClient,
} from "./client.js";
export { type GrpcCodeName, TrellisClientError, grpcCode, grpcCodeName } from "./client-error.js";
export {
  OUTPUT_CHUNK_EVENT,
  type Reconnect,
  type WatchOptions,
  type WorkflowEventSource,
  isFinalWorkflowStatus,
  resumingWatch,
} from "./watch.js";
// The messages and enums the client speaks, so a user needs no other package.
export {
  EditType,
  ErrorKind,
  type GetNodeResponse,
  type Limit,
  type ListWorkflowsResponse,
  type Node,
  type NodeAttempt,
  type NodeEdit,
  type NodeError,
  NodeStatus,
  type Schedule,
  type Workflow,
  WorkflowAction,
  type WorkflowEvent,
  WorkflowStatus,
} from "@trellis/proto";
