import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";

interface HealthStub extends grpc.Client {
  check(
    request: { service: string },
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, response?: { status: string }) => void,
  ): grpc.ClientUnaryCall;
  watch(request: { service: string }, options: grpc.CallOptions): grpc.ClientReadableStream<{ status: string }>;
}

const HealthClient = grpc.makeGenericClientConstructor(
  healthService as unknown as grpc.ServiceDefinition,
  "Health",
) as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
) => HealthStub;

/** Calls grpc.health.v1.Health/Check; resolves with the status name, e.g. `SERVING`. */
export async function checkHealth(address: string, service = ""): Promise<string> {
  const client = new HealthClient(address, grpc.credentials.createInsecure());
  try {
    return await new Promise<string>((resolve, reject) => {
      client.check({ service }, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (error, response) =>
        error || response === undefined ? reject(error) : resolve(response.status),
      );
    });
  } finally {
    client.close();
  }
}

/** Follows grpc.health.v1.Health/Watch: every status sent is pushed to `statuses`; `close()` ends the watch. */
export function watchHealth(address: string, statuses: string[], service = ""): { close(): void } {
  const client = new HealthClient(address, grpc.credentials.createInsecure());
  const stream = client.watch({ service }, {});
  stream.on("data", (response: { status: string }) => statuses.push(response.status));
  stream.on("error", () => undefined);
  return {
    close() {
      stream.cancel();
      client.close();
    },
  };
}
