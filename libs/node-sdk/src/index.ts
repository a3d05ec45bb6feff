export type { EmitOptions, Handler, Handlers, NodeContext, NodeInfo } from "./context.js";
export { EditsBuilder, type NodeFields, type NodeSpec, type RetryPolicySpec, type WaitSpec } from "./edits.js";
export { InfraError, TaskError, Throttled } from "./errors.js";
export { type ChunkSink, type ExecuteOptions, executeNode } from "./execute.js";
export { nodeServiceDefinition } from "./grpc-service.js";
export {
  type CallEnd,
  type CallOutcome,
  DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
  type NodeServiceHandle,
  type ServeLogger,
  type ServeOptions,
  serve,
} from "./serve.js";
export type { JsonObject, JsonValue } from "@bufbuild/protobuf";
export * from "./gen/workflow/v1/node_service_pb.js";
export * from "./gen/workflow/v1/workflow_pb.js";
