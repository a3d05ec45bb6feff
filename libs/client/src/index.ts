export {
  type CallOptions,
  type ClientOptions,
  type ClientTlsOptions,
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
