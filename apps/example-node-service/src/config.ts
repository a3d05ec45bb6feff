import { type Env, type HostPort, type LogLevel, readHostPort, readLogLevel } from "@trellis/config";

/** The settings of the example NodeService app, read once at start. */
export interface ExampleNodeServiceConfig {
  /** `NODE_SERVICE_LISTEN_ADDR`: where the gRPC NodeService listens. @default "0.0.0.0:50052" */
  listen: HostPort;
  /** `HTTP_ADDR`: where `/metrics`, `/healthz` and `/readyz` are served. @default ":9467" */
  http: HostPort;
  /** `LOG_LEVEL`. @default "info" */
  logLevel: LogLevel;
}

/** The gRPC listen address when `NODE_SERVICE_LISTEN_ADDR` is unset: the port workers dial by default. */
export const DEFAULT_NODE_SERVICE_LISTEN_ADDR = "0.0.0.0:50052";

/** The HTTP address when `HTTP_ADDR` is unset. */
export const DEFAULT_EXAMPLE_NODE_SERVICE_HTTP_ADDR = ":9467";

/** Reads and validates the app's settings from `env`; throws a ConfigError naming the bad variable. */
export function readExampleNodeServiceConfig(env: Env): ExampleNodeServiceConfig {
  return {
    listen: readHostPort(env, "NODE_SERVICE_LISTEN_ADDR", DEFAULT_NODE_SERVICE_LISTEN_ADDR),
    http: readHostPort(env, "HTTP_ADDR", DEFAULT_EXAMPLE_NODE_SERVICE_HTTP_ADDR),
    logLevel: readLogLevel(env),
  };
}
