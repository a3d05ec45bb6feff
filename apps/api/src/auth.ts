import { createHash, timingSafeEqual } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { Counter, type Registry } from "prom-client";
import { type TokenEntry, type TokenRegistry, type TokenRole, isScoped, roleAllows } from "./tokens.js";

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

/** The WorkflowService's RPCs and the role each needs (docs/security.md). */
export const METHOD_ROLES: Readonly<Record<string, TokenRole>> = {
  GetWorkflow: "read",
  ListWorkflows: "read",
  WatchWorkflow: "read",
  GetNode: "read",
  ListLimits: "read",
  ListSchedules: "read",
  CreateWorkflow: "write",
  UpdateWorkflow: "write",
  UpdateNode: "write",
  EditWorkflow: "write",
  SignalNode: "write",
  ForkWorkflow: "write",
  SetLimit: "admin",
  DeleteLimit: "admin",
  CreateSchedule: "admin",
  UpdateSchedule: "admin",
  DeleteSchedule: "admin",
};

/** RPCs over global state (limits, schedules): a label-scoped token is refused them, whatever its role. */
export const GLOBAL_METHODS: ReadonlySet<string> = new Set([
  "SetLimit",
  "ListLimits",
  "DeleteLimit",
  "CreateSchedule",
  "ListSchedules",
  "UpdateSchedule",
  "DeleteSchedule",
]);

const WORKFLOW_SERVICE_PREFIX = "/workflow.v1.WorkflowService/";

/**
 * Why a token may not call a method (a gRPC path), or undefined when it may. Reflection needs any token; a method
 * this table does not know needs admin.
 */
export function permissionProblem(entry: TokenEntry, path: string): string | undefined {
  if (!path.startsWith(WORKFLOW_SERVICE_PREFIX)) return undefined;
  const method = path.slice(WORKFLOW_SERVICE_PREFIX.length);
  const needed = METHOD_ROLES[method] ?? "admin";
  if (!roleAllows(entry.role, needed))
    return `${method} needs role ${needed}; token ${JSON.stringify(entry.name)} has ${entry.role}`;
  if (GLOBAL_METHODS.has(method) && isScoped(entry)) {
    return `${method} is global; token ${JSON.stringify(entry.name)} is scoped to labels`;
  }
  return undefined;
}

/** `trellis_api_denied_total{token,reason}`: calls refused by the token check (token = name or "unknown"). */
export function createDeniedCounter(registry: Registry): Counter<"token" | "reason"> {
  const existing = registry.getSingleMetric("trellis_api_denied_total");
  if (existing) return existing as Counter<"token" | "reason">;
  return new Counter({
    name: "trellis_api_denied_total",
    help: "gRPC calls refused by the token check, by token name (unknown: no or no valid token) and reason",
    labelNames: ["token", "reason"],
    registers: [registry],
  });
}

/** The token a call's metadata carries, by the registry; undefined without a valid one. */
export function tokenOfMetadata(registry: TokenRegistry, metadata: grpc.Metadata): TokenEntry | undefined {
  return registry.authenticate(authorizationOf(metadata));
}

/**
 * The scoped-token check: every call but health needs a token of the registry (else UNAUTHENTICATED) whose role
 * allows the method (else PERMISSION_DENIED). A rejected call never reaches its handler; each is counted in
 * `trellis_api_denied_total`.
 */
export function createTokenAuthInterceptor(
  registry: TokenRegistry,
  denied: Counter<"token" | "reason">,
): grpc.ServerInterceptor {
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
            const entry = registry.authenticate(header);
            if (entry === undefined) {
              denied.inc({ token: "unknown", reason: "unauthenticated" });
              call.sendStatus({
                code: grpc.status.UNAUTHENTICATED,
                details:
                  header === undefined
                    ? "authorization: required (metadata `authorization: Bearer <token>`)"
                    : "authorization: invalid bearer token",
              });
              return;
            }
            const problem = permissionProblem(entry, descriptor.path);
            if (problem !== undefined) {
              denied.inc({ token: entry.name, reason: "permission_denied" });
              call.sendStatus({ code: grpc.status.PERMISSION_DENIED, details: `authorization: ${problem}` });
              return;
            }
            nextMetadata(metadata);
          },
        });
      },
    });
}
