import { create, createFileRegistry, type DescService } from "@bufbuild/protobuf";
import {
  type DescriptorProtoSchema,
  type FieldDescriptorProtoSchema,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";

const { OPTIONAL, REPEATED } = FieldDescriptorProto_Label;
const { STRING, MESSAGE, ENUM } = FieldDescriptorProto_Type;

function field(
  name: string,
  type: FieldDescriptorProto_Type,
  typeName = "",
  label = OPTIONAL,
): MessageInitShape<typeof FieldDescriptorProtoSchema> {
  return { name, number: 1, type, typeName, label, jsonName: name };
}

const healthListResponse: MessageInitShape<typeof DescriptorProtoSchema> = {
  name: "HealthListResponse",
  field: [field("statuses", MESSAGE, ".grpc.health.v1.HealthListResponse.StatusesEntry", REPEATED)],
  nestedType: [
    {
      name: "StatusesEntry",
      field: [
        { ...field("key", STRING), number: 1 },
        { ...field("value", MESSAGE, ".grpc.health.v1.HealthCheckResponse"), number: 2 },
      ],
      options: { mapEntry: true },
    },
  ],
};

/**
 * `grpc/health/v1/health.proto` (as shipped in grpc-health-check) described for server reflection. The package's own
 * descriptor comes from proto-loader, which names the map entry `Statuses` and leaves type names relative; Go clients
 * such as `buf curl` and grpcurl reject that file, so reflection serves this one instead.
 */
const healthFile = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "grpc/health/v1/health.proto",
    package: "grpc.health.v1",
    syntax: "proto3",
    options: {
      csharpNamespace: "Grpc.Health.V1",
      goPackage: "google.golang.org/grpc/health/grpc_health_v1",
      javaMultipleFiles: true,
      javaOuterClassname: "HealthProto",
      javaPackage: "io.grpc.health.v1",
    },
    messageType: [
      { name: "HealthListRequest" },
      healthListResponse,
      { name: "HealthCheckRequest", field: [field("service", STRING)] },
      {
        name: "HealthCheckResponse",
        field: [field("status", ENUM, ".grpc.health.v1.HealthCheckResponse.ServingStatus")],
        enumType: [
          {
            name: "ServingStatus",
            value: [
              { name: "UNKNOWN", number: 0 },
              { name: "SERVING", number: 1 },
              { name: "NOT_SERVING", number: 2 },
              { name: "SERVICE_UNKNOWN", number: 3 },
            ],
          },
        ],
      },
    ],
    service: [
      {
        name: "Health",
        method: [
          {
            name: "Check",
            inputType: ".grpc.health.v1.HealthCheckRequest",
            outputType: ".grpc.health.v1.HealthCheckResponse",
          },
          {
            name: "Watch",
            inputType: ".grpc.health.v1.HealthCheckRequest",
            outputType: ".grpc.health.v1.HealthCheckResponse",
            serverStreaming: true,
          },
          {
            name: "List",
            inputType: ".grpc.health.v1.HealthListRequest",
            outputType: ".grpc.health.v1.HealthListResponse",
          },
        ],
      },
    ],
  }),
  () => undefined,
).getFile("grpc/health/v1/health.proto")!;

/** The descriptor of `grpc.health.v1.Health`, the service grpc-health-check implements. */
export const HealthServiceDesc: DescService = healthFile.services[0]!;
