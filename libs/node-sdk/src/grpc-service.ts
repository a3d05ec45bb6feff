import type * as grpc from "@grpc/grpc-js";
import { type DescMessage, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import {
  ExecuteNodeRequestSchema,
  ExecuteNodeResponseSchema,
  ExecuteNodeStreamResponseSchema,
  NodeService,
} from "./gen/workflow/v1/node_service_pb.js";

function serialize<D extends DescMessage>(schema: D): (value: MessageShape<D>) => Buffer {
  return (value) => {
    const bytes = toBinary(schema, value);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserialize<D extends DescMessage>(schema: D): (bytes: Buffer) => MessageShape<D> {
  return (bytes) => fromBinary(schema, bytes);
}

/** `workflow.v1.NodeService` for grpc-js: protobuf binary through the generated schemas. */
export const nodeServiceDefinition: grpc.ServiceDefinition = {
  executeNode: {
    path: `/${NodeService.typeName}/ExecuteNode`,
    requestStream: false,
    responseStream: false,
    requestSerialize: serialize(ExecuteNodeRequestSchema),
    requestDeserialize: deserialize(ExecuteNodeRequestSchema),
    responseSerialize: serialize(ExecuteNodeResponseSchema),
    responseDeserialize: deserialize(ExecuteNodeResponseSchema),
  },
  executeNodeStream: {
    path: `/${NodeService.typeName}/ExecuteNodeStream`,
    requestStream: false,
    responseStream: true,
    requestSerialize: serialize(ExecuteNodeRequestSchema),
    requestDeserialize: deserialize(ExecuteNodeRequestSchema),
    responseSerialize: serialize(ExecuteNodeStreamResponseSchema),
    responseDeserialize: deserialize(ExecuteNodeStreamResponseSchema),
  },
};
