// TLS to Redis and PostgreSQL: a private redis-server serving TLS only and a private PostgreSQL cluster accepting TLS
// connections only, both with certificates this file makes; the api, a scheduler and a worker run as processes over
// them (rediss:// with REDIS_TLS_CA, ?sslmode=verify-full&sslrootcert=), and a client trusting another CA is refused.
import { readFileSync } from "node:fs";
import { ExecutionStatus, WorkflowStatus } from "@trellis/proto";
import {
  type FaultStack,
  type PrivatePostgres,
  type PrivateRedis,
  type TestCertificates,
  makeTestCertificates,
  privatePostgresSkipReason,
  startApp,
  startFaultStack,
  startPrivatePostgres,
  startPrivateRedis,
  testNode,
} from "@trellis/testing";
import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const skip = privatePostgresSkipReason();
let certs: TestCertificates;
let redis: PrivateRedis;
let postgres: PrivatePostgres;
let stack: FaultStack;

/** A connection string to the private cluster checked against `ca` (verify-full: the chain and the host name). */
function tlsUrl(ca: string, database = "postgres"): string {
  return `postgres://postgres@127.0.0.1:${postgres.port}/${database}?sslmode=verify-full&sslrootcert=${encodeURIComponent(ca)}`;
}

beforeAll(async () => {
  if (skip) return;
  certs = await makeTestCertificates();
  redis = await startPrivateRedis({
    tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.caCert },
  });
  postgres = await startPrivatePostgres({ ssl: { cert: certs.serverCert, key: certs.serverKey } });
  stack = await startFaultStack({
    name: "tls_everywhere",
    // Migrations run over this URL too (createTestDatabase).
    serverUrl: tlsUrl(certs.caCert),
    redisUrl: redis.url,
    redisOptions: redis.options,
    env: { REDIS_TLS_CA: certs.caCert },
    handler: async () => ({ status: ExecutionStatus.SUCCESS }),
  });
}, 120_000);

afterAll(async () => {
  await stack?.close();
  await redis?.close();
  await postgres?.close();
  certs?.remove();
});

describe.skipIf(skip)("TLS to Redis and PostgreSQL", () => {
  it("runs a workflow end to end with every app on rediss:// and sslmode=verify-full; no plaintext session", async () => {
    expect(redis.url).toMatch(/^rediss:\/\//);
    expect(stack.db.url).toContain("sslmode=verify-full");
    await Promise.all([stack.startApi(), stack.startScheduler(), stack.startWorker(["echo"])]);
    const workflow = await stack.createWorkflow([
      testNode("a", "echo"),
      testNode("b", "echo", ["a"]),
      testNode("c", "echo", ["a"]),
      testNode("d", "echo", ["b", "c"]),
    ]);
    const [done] = await stack.waitFinished([workflow.id], 30_000);
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
    // Every session of the apps (pools and LISTEN connections) is encrypted: the server accepts no other on TCP,
    // and pg_stat_ssl says so for each.
    const { rows } = await stack.db.pool.query<{ application_name: string; ssl: boolean }>(
      `select a.application_name, s.ssl from pg_stat_activity a join pg_stat_ssl s using (pid)
        where a.backend_type = 'client backend' and a.application_name like 'trellis%'`,
    );
    const apps = new Set(rows.map((r) => r.application_name));
    expect([...apps]).toEqual(expect.arrayContaining(["trellis-api", "trellis-worker", "trellis-listener"]));
    expect(rows.filter((r) => !r.ssl)).toEqual([]);
    // Redis: the BullMQ connections of the scheduler and the worker came in over the TLS port (the only one).
    const clients = String(await stack.redis.client("LIST"));
    expect(clients.split("\n").filter((l) => l.includes("cmd=")).length).toBeGreaterThan(2);
  });

  it("refuses PostgreSQL and Redis connections checked against another CA, and plaintext ones", async () => {
    const wrong = new pg.Client({ connectionString: tlsUrl(certs.otherCaCert) });
    await expect(wrong.connect()).rejects.toThrow(/self-signed certificate|unable to verify|certificate/i);
    const plaintext = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${postgres.port}/postgres` });
    await expect(plaintext.connect()).rejects.toThrow(/no pg_hba.conf entry|SSL off/);
    const wrongRedis = new Redis(redis.url, {
      tls: { ca: readFileSync(certs.otherCaCert) },
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    const errors: Error[] = [];
    wrongRedis.on("error", (error: Error) => errors.push(error));
    await expect(wrongRedis.connect()).rejects.toThrow();
    expect(errors.map((e) => e.message).join("\n")).toMatch(/certificate/i);
    wrongRedis.disconnect();
  });

  it("stops a worker whose REDIS_TLS_CA is another CA's at start, with one line naming Redis", async () => {
    const app = startApp({
      app: "worker",
      env: {
        ...stack.env(),
        REDIS_TLS_CA: certs.otherCaCert,
        WORKER_CAPABILITIES: "echo",
        STARTUP_TIMEOUT_MS: "1500",
      },
    });
    const status = await app.exited;
    expect(status.code).toBe(1);
    // Each attempt is logged with the handshake's reason; the last line names Redis.
    expect(app.lines.join("\n")).toMatch(/Redis at 127\.0\.0\.1:\d+ is not reachable: [^"]*certificate/i);
    expect(app.lines.filter((l) => l.startsWith("trellis worker: cannot start:"))).toEqual([
      expect.stringMatching(/^trellis worker: cannot start: Redis is not reachable/),
    ]);
  });
});
