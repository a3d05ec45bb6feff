import { createHash, timingSafeEqual } from "node:crypto";
import * as grpc from "@grpc/grpc-js";

/** Path prefix of the health service, which load balancers and orchestrators call without a token. */
export const HEALTH_PATH_PREFIX = "/grpc.health.v1.Health/";

function digest(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}

/**
 * Whether an `authorization` header value is `Bearer <token>` (scheme case-insensitive). The tokens are compared
 * as SHA-256 digests with timingSafeEqual, so neither their content nor their length leaks through timing.
 */
export function isAuthorized(header: string | undefined, token: string): boolean {
  const match = header === undefined ? null : /^Bearer[ \t]+(.+)$/i.exec(header.trim());
  const presented = match?.[1] ?? "";
  // Compared even when the header is missing or malformed, so every rejection takes the same time.
  const equal = timingSafeEqual(digest(presented), digest(token));
  return match !== null && equal;
}

function authorizationOf(metadata: grpc.Metadata): string | undefined {
  const value = metadata.get("authorization")[0];
  if (value === undefined) return undefined;
  return typeof value === "string" ? value : value.toString("utf8");
}

/**
 * A server interceptor that ends every call except health with UNAUTHENTICATED unless its metadata carries
 * `authorization: Bearer <token>`. A rejected call never reaches its handler.
 */
export function createAuthInterceptor(token: string): grpc.ServerInterceptor {
  if (token === "") throw new Error("API token must not be empty");
  return (descriptor, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        if (descriptor.path.startsWith(HEALTH_PATH_PREFIX)) {
          next();
          return;
        }
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            const header = authorizationOf(metadata);
            if (isAuthorized(header, token)) {
              nextMetadata(metadata);
              return;
            }
            call.sendStatus({
              code: grpc.status.UNAUTHENTICATED,
              details:
                header === undefined
                  ? "authorization: required (metadata `authorization: Bearer <token>`)"
                  : "authorization: invalid bearer token",
            });
          },
        });
      },
    });
}
