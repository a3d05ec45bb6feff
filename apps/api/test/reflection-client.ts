import {
  create,
  createFileRegistry,
  type DescMessage,
  type FileRegistry,
  fromBinary,
  type Message,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import {
  type DescriptorProtoSchema,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";

// The part of grpc/reflection/v1/reflection.proto this client uses, described by hand so the test needs neither
// proto files nor proto-loader: a client that knows nothing of Trellis except the reflection protocol.
type FieldSpec = [name: string, number: number, type: FieldDescriptorProto_Type, typeName?: string, repeated?: boolean];

function message(name: string, fields: FieldSpec[]): MessageInitShape<typeof DescriptorProtoSchema> {
  return {
    name,
    field: fields.map(([fieldName, number, type, typeName, repeated]) => ({
      name: fieldName,
      number,
      type,
      label: repeated ? FieldDescriptorProto_Label.REPEATED : FieldDescriptorProto_Label.OPTIONAL,
      typeName: typeName ?? "",
    })),
  };
}

const { STRING, BYTES, INT32, MESSAGE } = FieldDescriptorProto_Type;

const reflectionRegistry = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "grpc/reflection/v1/reflection_client.proto",
    package: "grpc.reflection.v1",
    syntax: "proto3",
    messageType: [
      message("ServerReflectionRequest", [
        ["host", 1, STRING],
        ["file_containing_symbol", 4, STRING],
        ["list_services", 7, STRING],
      ]),
      message("ServerReflectionResponse", [
        ["valid_host", 1, STRING],
        ["file_descriptor_response", 4, MESSAGE, ".grpc.reflection.v1.FileDescriptorResponse"],
        ["list_services_response", 6, MESSAGE, ".grpc.reflection.v1.ListServiceResponse"],
        ["error_response", 7, MESSAGE, ".grpc.reflection.v1.ErrorResponse"],
      ]),
      message("FileDescriptorResponse", [["file_descriptor_proto", 1, BYTES, undefined, true]]),
      message("ListServiceResponse", [["service", 1, MESSAGE, ".grpc.reflection.v1.ServiceResponse", true]]),
      message("ServiceResponse", [["name", 1, STRING]]),
      message("ErrorResponse", [
        ["error_code", 1, INT32],
        ["error_message", 2, STRING],
      ]),
    ],
  }),
  () => undefined,
);

const RequestDesc = reflectionRegistry.getMessage("grpc.reflection.v1.ServerReflectionRequest")!;
const ResponseDesc = reflectionRegistry.getMessage("grpc.reflection.v1.ServerReflectionResponse")!;

interface ReflectionResponse {
  fileDescriptorResponse?: { fileDescriptorProto: Uint8Array[] };
  listServicesResponse?: { service: { name: string }[] };
  errorResponse?: { errorCode: number; errorMessage: string };
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Asks the server's reflection service (v1) one question on one stream. */
async function ask(
  channel: grpc.Client,
  request: Record<string, string>,
  metadata = new grpc.Metadata(),
): Promise<ReflectionResponse> {
  const call = channel.makeBidiStreamRequest(
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    (value: Message) => toBuffer(toBinary(RequestDesc, value)),
    (bytes: Buffer) => fromBinary(ResponseDesc, bytes),
    metadata,
    { deadline: Date.now() + 10_000 },
  );
  return new Promise((resolve, reject) => {
    call.once("data", (response: Message) => {
      resolve(response as unknown as ReflectionResponse);
      call.end();
    });
    call.once("error", reject);
    call.write(create(RequestDesc, request));
  });
}

/** The fully-qualified service names the server lists. */
export async function listServices(channel: grpc.Client, metadata?: grpc.Metadata): Promise<string[]> {
  const response = await ask(channel, { listServices: "*" }, metadata);
  if (response.listServicesResponse === undefined) throw new Error(`no service list: ${JSON.stringify(response)}`);
  return response.listServicesResponse.service.map((s) => s.name);
}

/** A registry built only from the FileDescriptorProtos the server returns for `symbol` (its file and imports). */
export async function registryForSymbol(channel: grpc.Client, symbol: string): Promise<FileRegistry> {
  const response = await ask(channel, { fileContainingSymbol: symbol });
  const files = response.fileDescriptorResponse?.fileDescriptorProto;
  if (files === undefined) throw new Error(`no descriptors for ${symbol}: ${JSON.stringify(response.errorResponse)}`);
  // The file declaring the symbol comes first, then its imports: resolve imports by name, in any order.
  const protos = files.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
  const byName = new Map(protos.map((proto) => [proto.name, proto]));
  return createFileRegistry(protos[0]!, (name) => byName.get(name));
}

/** Calls a unary method with messages of dynamically described types. */
export function callUnary<I extends DescMessage, O extends DescMessage>(
  channel: grpc.Client,
  path: string,
  input: I,
  output: O,
  request: MessageShape<I>,
): Promise<MessageShape<O>> {
  return new Promise((resolve, reject) => {
    channel.makeUnaryRequest(
      path,
      (value: MessageShape<I>) => toBuffer(toBinary(input, value)),
      (bytes: Buffer) => fromBinary(output, bytes),
      request,
      new grpc.Metadata(),
      { deadline: Date.now() + 10_000 },
      (error, response) => (error || response === undefined ? reject(error) : resolve(response)),
    );
  });
}
