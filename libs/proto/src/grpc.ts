import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { DescMessage, DescMethod, DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf";

/** A grpc-js method definition typed by the protobuf-es schemas of its request and response. */
export interface GrpcMethodDefinition<I extends DescMessage, O extends DescMessage>
  extends grpc.MethodDefinition<MessageShape<I>, MessageShape<O>> {
  requestSchema: I;
  responseSchema: O;
}

type MethodMap<S extends DescService> = S["method"];
type InputOf<M> = M extends { input: infer I extends DescMessage } ? I : never;
type OutputOf<M> = M extends { output: infer O extends DescMessage } ? O : never;

/** A grpc-js service definition derived from a protobuf-es service descriptor. */
export type GrpcServiceDefinition<S extends DescService> = {
  [K in keyof MethodMap<S>]: GrpcMethodDefinition<InputOf<MethodMap<S>[K]>, OutputOf<MethodMap<S>[K]>>;
};

/** Server-side handlers of a service: unary and server-streaming methods, by local name. */
export type GrpcServiceHandlers<S extends DescService> = {
  [K in keyof MethodMap<S>]: MethodMap<S>[K] extends { methodKind: "server_streaming" }
    ? grpc.handleServerStreamingCall<MessageShape<InputOf<MethodMap<S>[K]>>, MessageShape<OutputOf<MethodMap<S>[K]>>>
    : grpc.handleUnaryCall<MessageShape<InputOf<MethodMap<S>[K]>>, MessageShape<OutputOf<MethodMap<S>[K]>>>;
};

/** Options of one client call. */
export interface CallOptions {
  /** Absolute deadline of the call; none means the channel's default of no deadline, so always pass one. */
  deadline?: Date | number;
  /** Aborting cancels the call (the server sees CANCELLED). */
  signal?: AbortSignal;
  /** Extra metadata, such as `authorization`. */
  metadata?: grpc.Metadata;
}

/** A typed client: unary methods return promises, server-streaming methods return readable streams. */
export type GrpcClient<S extends DescService> = {
  [K in keyof MethodMap<S>]: MethodMap<S>[K] extends { methodKind: "server_streaming" }
    ? (
        request: MessageInitShape<InputOf<MethodMap<S>[K]>>,
        options?: CallOptions,
      ) => grpc.ClientReadableStream<MessageShape<OutputOf<MethodMap<S>[K]>>>
    : (
        request: MessageInitShape<InputOf<MethodMap<S>[K]>>,
        options?: CallOptions,
      ) => Promise<MessageShape<OutputOf<MethodMap<S>[K]>>>;
} & { close(): void; channel: grpc.Client };

function serializer<D extends DescMessage>(schema: D): (value: MessageShape<D>) => Buffer {
  return (value) => {
    const bytes = toBinary(schema, value);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer<D extends DescMessage>(schema: D): (bytes: Buffer) => MessageShape<D> {
  return (bytes) => fromBinary(schema, bytes);
}

function methodDefinition(method: DescMethod): GrpcMethodDefinition<DescMessage, DescMessage> {
  return {
    path: `/${method.parent.typeName}/${method.name}`,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    originalName: method.localName,
    requestSerialize: serializer(method.input),
    requestDeserialize: deserializer(method.input),
    responseSerialize: serializer(method.output),
    responseDeserialize: deserializer(method.output),
    requestSchema: method.input,
    responseSchema: method.output,
  };
}

/**
 * Builds the grpc-js service definition of a protobuf-es service: binary wire format through the
 * generated schemas (toBinary/fromBinary), keyed by each method's local (lowerCamel) name.
 */
export function grpcServiceDefinition<S extends DescService>(service: S): GrpcServiceDefinition<S> {
  const definition: Record<string, GrpcMethodDefinition<DescMessage, DescMessage>> = {};
  for (const method of service.methods) {
    if (method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming") {
      throw new Error(`${method.parent.typeName}.${method.name}: client streaming is not supported`);
    }
    definition[method.localName] = methodDefinition(method);
  }
  return definition as GrpcServiceDefinition<S>;
}

/**
 * Registers typed handlers for a service on a grpc-js server. A method left out answers UNIMPLEMENTED (grpc-js), as
 * a NodeService without the optional ExecuteNodeStream does.
 */
export function addGrpcService<S extends DescService>(
  server: grpc.Server,
  service: S,
  handlers: Partial<GrpcServiceHandlers<S>>,
): void {
  server.addService(
    grpcServiceDefinition(service) as unknown as grpc.ServiceDefinition,
    handlers as unknown as grpc.UntypedServiceImplementation,
  );
}

/**
 * Creates a typed client for a service. Every call should carry a deadline: grpc-js has none by
 * default. `channelOptions` is where `grpc.max_receive_message_length` and keepalive are set.
 */
export function createGrpcClient<S extends DescService>(
  service: S,
  address: string,
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  channelOptions: grpc.ChannelOptions = {},
): GrpcClient<S> {
  const channel = new grpc.Client(address, credentials, channelOptions);
  const client: Record<string, unknown> = {
    close: () => channel.close(),
    channel,
  };
  for (const method of service.methods) {
    const def = methodDefinition(method);
    if (method.methodKind === "unary") {
      client[method.localName] = (request: MessageInitShape<DescMessage>, options: CallOptions = {}) =>
        new Promise((resolve, reject) => {
          const call = channel.makeUnaryRequest(
            def.path,
            def.requestSerialize,
            def.responseDeserialize,
            create(method.input, request),
            options.metadata ?? new grpc.Metadata(),
            options.deadline === undefined ? {} : { deadline: options.deadline },
            (error, response) => (error ? reject(error) : resolve(response)),
          );
          bindAbort(call, options.signal);
        });
    } else if (method.methodKind === "server_streaming") {
      client[method.localName] = (request: MessageInitShape<DescMessage>, options: CallOptions = {}) => {
        const call = channel.makeServerStreamRequest(
          def.path,
          def.requestSerialize,
          def.responseDeserialize,
          create(method.input, request),
          options.metadata ?? new grpc.Metadata(),
          options.deadline === undefined ? {} : { deadline: options.deadline },
        );
        bindAbort(call, options.signal);
        return call;
      };
    }
  }
  return client as GrpcClient<S>;
}

function bindAbort(call: grpc.Call, signal: AbortSignal | undefined): void {
  if (!signal) return;
  if (signal.aborted) {
    call.cancel();
    return;
  }
  const onAbort = () => call.cancel();
  signal.addEventListener("abort", onAbort, { once: true });
  call.on("status", () => signal.removeEventListener("abort", onAbort));
}
