export * from "./gen/workflow/v1/workflow_pb.js";
export * from "./gen/workflow/v1/node_service_pb.js";
export * from "./grpc.js";
export * from "./services.js";
