import { grpcServiceDefinition } from "./grpc.js";
import { NodeService } from "./gen/workflow/v1/node_service_pb.js";
import { WorkflowService } from "./gen/workflow/v1/workflow_pb.js";

/** grpc-js definition of `workflow.v1.WorkflowService` (the API app). */
export const workflowServiceDefinition = grpcServiceDefinition(WorkflowService);

/** grpc-js definition of `workflow.v1.NodeService` (the agent runtime, called by workers). */
export const nodeServiceDefinition = grpcServiceDefinition(NodeService);
