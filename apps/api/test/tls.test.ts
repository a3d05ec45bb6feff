import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { PgStateManager } from "@trellis/db";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import { WorkflowService, createGrpcClient } from "@trellis/proto";
import { type TestDatabase, createTestDatabase } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningApiServer, readApiSettings, startApiServer } from "../src/index.js";

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/tls/${name}`, import.meta.url));
const read = (name: string): Buffer => readFileSync(fixture(name));

let testDb: TestDatabase;
let stateManager: PgStateManager;
const servers: RunningApiServer[] = [];

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_api_tls");
  stateManager = new PgStateManager(testDb.db);
});

afterAll(async () => {
  for (const server of servers) await server.close(1_000);
  await testDb?.drop();
});

/** Starts the api with settings read the way main.ts reads them, from environment variables. */
async function startWithEnv(env: Record<string, string>): Promise<string> {
  const settings = readApiSettings({ GRPC_ADDR: "127.0.0.1:0", ...env });
  const server = await startApiServer({
    stateManager,
    logger: createLogger({ app: "api", level: "silent" }),
    registry: createMetricsRegistry({ app: "api", collectDefault: false }),
    settings,
  });
  servers.push(server);
  return `127.0.0.1:${server.port}`;
}

/** Creates a workflow and reads it back over `credentials`; resolves with the status code (OK on success). */
async function roundTrip(address: string, credentials: grpc.ChannelCredentials): Promise<grpc.status> {
  // Dial the IP but verify the name "localhost" (also in the certificate): TLS SNI cannot carry an IP address.
  const client = createGrpcClient(WorkflowService, address, credentials, {
    "grpc.ssl_target_name_override": "localhost",
    "grpc.default_authority": "localhost",
  });
  try {
    const { workflow } = await client.createWorkflow(
      { name: "tls", nodes: [{ id: "a", capability: "echo" }] },
      { deadline: Date.now() + 5_000 },
    );
    await client.getWorkflow({ workflowId: workflow!.id }, { deadline: Date.now() + 5_000 });
    return grpc.status.OK;
  } catch (error) {
    return (error as grpc.ServiceError).code;
  } finally {
    client.close();
  }
}

describe("TLS", () => {
  it("serves TLS with GRPC_TLS_CERT and GRPC_TLS_KEY, and refuses plaintext", async () => {
    const address = await startWithEnv({ GRPC_TLS_CERT: fixture("server.crt"), GRPC_TLS_KEY: fixture("server.key") });
    expect(grpc.status[await roundTrip(address, grpc.credentials.createSsl(read("ca.crt")))]).toBe("OK");
    expect(grpc.status[await roundTrip(address, grpc.credentials.createInsecure())]).toBe("UNAVAILABLE");
  });

  it("requires a client certificate signed by GRPC_TLS_CA (mutual TLS)", async () => {
    const address = await startWithEnv({
      GRPC_TLS_CERT: fixture("server.crt"),
      GRPC_TLS_KEY: fixture("server.key"),
      GRPC_TLS_CA: fixture("ca.crt"),
    });
    const withoutCert = grpc.credentials.createSsl(read("ca.crt"));
    expect(grpc.status[await roundTrip(address, withoutCert)]).toBe("UNAVAILABLE");
    const withCert = grpc.credentials.createSsl(read("ca.crt"), read("client.key"), read("client.crt"));
    expect(grpc.status[await roundTrip(address, withCert)]).toBe("OK");
  });
});
