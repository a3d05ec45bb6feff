import { create, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { type GrpcMethodDefinition, type GrpcServiceDefinition, grpcServiceDefinition } from "@trellis/proto";

const reasons = new WeakMap<object, string>();

/**
 * The grpc-js definition of `service` with request deserializers that never throw. grpc-js answers a request it
 * cannot decode (not protobuf, or nested deeper than the decoder's limit of 100 messages) with INTERNAL; that is the
 * caller's bad input, so each such request becomes an empty placeholder that {@link undecodableReason} recognises and
 * the handlers refuse with INVALID_ARGUMENT.
 */
export function tolerantServiceDefinition<S extends DescService>(service: S): GrpcServiceDefinition<S> {
  const definition = grpcServiceDefinition(service);
  for (const method of Object.values(definition) as GrpcMethodDefinition<DescMessage, DescMessage>[]) {
    const decode = method.requestDeserialize;
    method.requestDeserialize = (bytes: Buffer) => {
      try {
        return decode(bytes);
      } catch (error) {
        const placeholder = create(method.requestSchema);
        reasons.set(placeholder, error instanceof Error ? error.message : String(error));
        return placeholder;
      }
    };
  }
  return definition;
}

/** Why a request could not be decoded, when it is a placeholder of {@link tolerantServiceDefinition}. */
export function undecodableReason(request: object): string | undefined {
  return reasons.get(request);
}
