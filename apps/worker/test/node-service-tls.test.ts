import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { create, fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import { ErrorKind, ExecutionStatus, NodeSchema, type Workflow, WorkflowStatus } from "@trellis/proto";
import {
  type NodeServiceServer,
  type TestCertificates,
  type TestDatabase,
  createTestDatabase,
  makeTestCertificates,
  startNodeServiceServer,
  waitFor,
} from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type WorkerApp, startWorkerApp } from "../src/app.js";
import { readWorkerSettings } from "../src/config.js";
import { type TestEngine, startTestEngine } from "./engine.js";

let certs: TestCertificates;
let testDb: TestDatabase;
let engine: TestEngine;
/** A NodeService with a server certificate only (TLS), and one that also requires client certificates (mTLS). */
let tlsServer: NodeServiceServer;
let mtlsServer: NodeServiceServer;
const workers: WorkerApp[] = [];

async function startServer(name: string, requireClientCert: boolean): Promise<NodeServiceServer> {
  const credentials = grpc.ServerCredentials.createSsl(
    requireClientCert ? readFileSync(certs.caCert) : null,
    [{ cert_chain: readFileSync(certs.serverCert), private_key: readFileSync(certs.serverKey) }],
    requireClientCert,
  );
  return startNodeServiceServer(
    () => ({ status: ExecutionStatus.SUCCESS, output: fromJson(ValueSchema, { server: name }) }),
    { credentials },
  );
}

/** A worker app for one capability, its settings read from the environment as main.ts reads them. */
async function startWorker(capability: string, env: Record<string, string>): Promise<void> {
  const settings = readWorkerSettings({
    DATABASE_URL: testDb.url,
    REDIS_URL: process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379",
    QUEUE_PREFIX: engine.queuePrefix,
    HTTP_ADDR: "127.0.0.1:0",
    WORKER_CAPABILITIES: capability,
    WORKER_HEARTBEAT_MS: "200",
    // One process, several workers: each needs an identity of its own (the default is the host and pid).
    WORKER_ID: `tls-test-${capability}`,
    ...env,
  });
  workers.push(
    await startWorkerApp(settings, {
      logger: createLogger({ app: "worker", level: process.env.TEST_LOG_LEVEL ?? "silent" }),
      registry: createMetricsRegistry({ app: "worker" }),
    }),
  );
}

/** Runs a one-node workflow (one attempt) to its end. */
async function runOne(capability: string): Promise<Workflow> {
  const { workflow } = await engine.stateManager.createWorkflow({
    name: capability,
    nodes: [create(NodeSchema, { id: "n", capability, retryPolicy: { maxAttempts: 1 } })],
  });
  return waitFor(
    async () => {
      const wf = await engine.stateManager.getWorkflow(workflow.id);
      return wf.status !== WorkflowStatus.RUNNING && wf.status !== WorkflowStatus.PENDING && wf;
    },
    { timeoutMs: 20_000, description: `the ${capability} workflow to finish` },
  );
}

beforeAll(async () => {
  certs = await makeTestCertificates();
  testDb = await createTestDatabase("trellis_ns_tls");
  tlsServer = await startServer("tls", false);
  mtlsServer = await startServer("mtls", true);
  engine = await startTestEngine(testDb, tlsServer.address);
  const tls = `grpcs://127.0.0.1:${tlsServer.port}`;
  const mtls = `grpcs://127.0.0.1:${mtlsServer.port}`;
  const client = { NODE_SERVICE_TLS_CERT: certs.clientCert, NODE_SERVICE_TLS_KEY: certs.clientKey };
  // NODE_SERVICE_ADDR over TLS.
  await startWorker("tls.addr", { NODE_SERVICE_ADDR: tls, NODE_SERVICE_TLS_CA: certs.caCert });
  // Routes: one over mTLS, one in plaintext to a TLS server (an entry without grpcs:// stays plaintext).
  await startWorker("tls.mutual,tls.plaintext", {
    NODE_SERVICE_ADDR: tls,
    NODE_SERVICE_ROUTES: `tls.mutual=${mtls},tls.plaintext=127.0.0.1:${tlsServer.port}`,
    NODE_SERVICE_TLS_CA: certs.caCert,
    ...client,
  });
  await startWorker("tls.wrong-ca", { NODE_SERVICE_ADDR: tls, NODE_SERVICE_TLS_CA: certs.otherCaCert, ...client });
  await startWorker("tls.no-client-cert", { NODE_SERVICE_ADDR: mtls, NODE_SERVICE_TLS_CA: certs.caCert });
}, 60_000);

afterAll(async () => {
  for (const worker of workers) await worker.close();
  await engine?.close();
  await tlsServer?.close();
  await mtlsServer?.close();
  await testDb?.drop();
  certs?.remove();
});

describe("worker -> NodeService over TLS", () => {
  it("calls a NodeService at a grpcs:// NODE_SERVICE_ADDR over TLS, checked against NODE_SERVICE_TLS_CA", async () => {
    const wf = await runOne("tls.addr");
    expect(wf.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(toJson(ValueSchema, wf.nodes[0]!.output!)).toEqual({ server: "tls" });
  });

  it("presents NODE_SERVICE_TLS_CERT/_KEY to a NodeService that requires client certificates (mTLS, a grpcs:// route)", async () => {
    const wf = await runOne("tls.mutual");
    expect(wf.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(toJson(ValueSchema, wf.nodes[0]!.output!)).toEqual({ server: "mtls" });
    expect(mtlsServer.calls.map((c) => c.request.node?.capability)).toEqual(["tls.mutual"]);
  });

  it("keeps a route without grpcs:// in plaintext (a TLS server refuses it: INFRA_ERROR)", async () => {
    const wf = await runOne("tls.plaintext");
    expect(wf.status).toBe(WorkflowStatus.FAILED);
    expect(wf.nodes[0]!.error?.kind).toBe(ErrorKind.INFRA_ERROR);
  });

  it("fails the attempt as INFRA_ERROR, without crashing, when the server's certificate does not chain to the CA", async () => {
    const wf = await runOne("tls.wrong-ca");
    expect(wf.status).toBe(WorkflowStatus.FAILED);
    expect(wf.nodes[0]!.error?.kind).toBe(ErrorKind.INFRA_ERROR);
    expect(wf.nodes[0]!.error?.message).toMatch(/UNAVAILABLE/);
    // The worker lives on: the next node of its NodeService still runs (and fails the same way, not a crash).
    expect((await runOne("tls.wrong-ca")).nodes[0]!.error?.kind).toBe(ErrorKind.INFRA_ERROR);
  });

  it("is refused by a NodeService that requires client certificates when the worker has none", async () => {
    const wf = await runOne("tls.no-client-cert");
    expect(wf.status).toBe(WorkflowStatus.FAILED);
    expect(wf.nodes[0]!.error?.kind).toBe(ErrorKind.INFRA_ERROR);
    expect(mtlsServer.calls.some((c) => c.request.node?.capability === "tls.no-client-cert")).toBe(false);
  });
});

describe("NODE_SERVICE_TLS_* settings", () => {
  const base = { WORKER_CAPABILITIES: "x" };
  it("reads the files at start; a missing file is a config error naming the setting", () => {
    expect(() => readWorkerSettings({ ...base, NODE_SERVICE_TLS_CA: "/nonexistent/ca.pem" })).toThrow(
      /^NODE_SERVICE_TLS_CA: cannot read "\/nonexistent\/ca.pem"/,
    );
    expect(() =>
      readWorkerSettings({ ...base, NODE_SERVICE_TLS_CA: certs.caCert, NODE_SERVICE_TLS_CERT: certs.clientCert }),
    ).toThrow("NODE_SERVICE_TLS_KEY: required when NODE_SERVICE_TLS_CERT is set");
    expect(() => readWorkerSettings({ ...base, NODE_SERVICE_TLS_CERT: certs.clientCert })).toThrow(
      "NODE_SERVICE_TLS_CERT: needs NODE_SERVICE_TLS_CA",
    );
    expect(() => readWorkerSettings({ ...base, NODE_SERVICE_ADDR: "grpcs://h:1" })).toThrow(
      'NODE_SERVICE_ADDR: "grpcs://h:1": grpcs:// needs NODE_SERVICE_TLS_CA',
    );
    const settings = readWorkerSettings({
      ...base,
      NODE_SERVICE_ADDR: "grpcs://h:1",
      NODE_SERVICE_TLS_CA: certs.caCert,
    });
    expect(settings.nodeServiceAddr).toBe("grpcs://h:1");
    expect(settings.nodeServiceTls?.ca.toString()).toContain("BEGIN CERTIFICATE");
  });
});
