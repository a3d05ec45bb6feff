import { type DescFile, type DescService, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { ReflectionService } from "@grpc/reflection";
import { HealthServiceDesc } from "./health-descriptor.js";

/** What `@grpc/reflection` analyses: the shape of a `@grpc/proto-loader` package definition. */
export type ReflectionPackageDefinition = ConstructorParameters<typeof ReflectionService>[0];
type MessageTypeDefinition = Extract<
  ReflectionPackageDefinition[string],
  { format: "Protocol Buffer 3 DescriptorProto" }
>;

/** A file and every file it imports, directly or not (google/protobuf well-known types included). */
function withDependencies(file: DescFile): DescFile[] {
  const seen = new Map<string, DescFile>();
  const visit = (f: DescFile): void => {
    if (seen.has(f.name)) return;
    seen.set(f.name, f);
    for (const dependency of f.dependencies) visit(dependency);
  };
  visit(file);
  return [...seen.values()];
}

function encodeFile(file: DescFile): Buffer {
  const bytes = toBinary(FileDescriptorProtoSchema, file.proto);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function messageTypeDefinition(fileDescriptorProtos: Buffer[]): MessageTypeDefinition {
  return { format: "Protocol Buffer 3 DescriptorProto", type: {}, fileDescriptorProtos };
}

/**
 * Builds, from protobuf-es descriptors, the proto-loader-style package definition `@grpc/reflection` reads for
 * `services` and grpc.health.v1.Health: one entry per request and response message, each carrying the binary FileDescriptorProtos of its file and of every
 * file that file imports. The reflection service indexes those files, so clients resolve every type from it.
 */
export function reflectionPackageDefinition(services: readonly DescService[]): ReflectionPackageDefinition {
  const definition: ReflectionPackageDefinition = {};
  for (const service of [...services, HealthServiceDesc]) {
    const fileDescriptorProtos = withDependencies(service.file).map(encodeFile);
    for (const method of service.methods) {
      definition[method.input.typeName] = messageTypeDefinition(fileDescriptorProtos);
      definition[method.output.typeName] = messageTypeDefinition(fileDescriptorProtos);
    }
  }
  return definition;
}

/** A reflection service (v1 and v1alpha) describing `services` and grpc.health.v1.Health. */
export function createReflectionService(services: readonly DescService[]): ReflectionService {
  return new ReflectionService(reflectionPackageDefinition(services));
}
