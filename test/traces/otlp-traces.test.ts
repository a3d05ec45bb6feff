// Traces end to end: the api, a scheduler and a worker run as processes with the standard OTEL_* variables pointing
// at an OTLP/HTTP receiver in this test (JSON encoding); a workflow created with a `traceparent` metadata header
// must come back as one trace: the workflow's span a child of the caller's span, each node attempt's span a child of
// the workflow's (across api -> PostgreSQL -> worker), with its queued / call / record children, and the NodeService
// called with a `traceparent` of that trace.
import { once } from "node:events";
import { type IncomingMessage, type Server, createServer } from "node:http";
import * as grpc from "@grpc/grpc-js";
import { ExecutionStatus, WorkflowStatus } from "@trellis/proto";
import { type FaultStack, startFaultStack, testNode, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/** One span as OTLP/JSON carries it, with its service's name. */
interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, string | number | boolean>;
  startMs: number;
  endMs: number;
  status: number;
}

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
  doubleValue?: number;
}

function otlpValue(value: OtlpValue): string | number | boolean {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.boolValue !== undefined) return value.boolValue;
  return value.doubleValue ?? "";
}

function attributesOf(list: { key: string; value: OtlpValue }[] | undefined): ReceivedSpan["attributes"] {
  return Object.fromEntries((list ?? []).map((a) => [a.key, otlpValue(a.value)]));
}

/** A tiny OTLP/HTTP receiver: POST /v1/traces in JSON, every span kept. */
class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  readonly contentTypes = new Set<string>();
  private readonly server: Server = createServer((request, response) => void this.handle(request, response));

  async start(): Promise<string> {
    this.server.listen(0, "127.0.0.1");
    await once(this.server, "listening");
    const address = this.server.address();
    if (address === null || typeof address === "string") throw new Error("no port");
    return `http://127.0.0.1:${address.port}`;
  }

  private async handle(request: IncomingMessage, response: import("node:http").ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    if (request.method !== "POST" || request.url !== "/v1/traces") {
      response.writeHead(404).end();
      return;
    }
    this.contentTypes.add(String(request.headers["content-type"]));
    const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
      resourceSpans: {
        resource: { attributes: { key: string; value: OtlpValue }[] };
        scopeSpans: { spans: Record<string, unknown>[] }[];
      }[];
    };
    for (const rs of body.resourceSpans) {
      const service = String(attributesOf(rs.resource.attributes)["service.name"]);
      for (const ss of rs.scopeSpans) {
        for (const s of ss.spans) {
          this.spans.push({
            service,
            traceId: String(s.traceId),
            spanId: String(s.spanId),
            parentSpanId: String(s.parentSpanId ?? ""),
            name: String(s.name),
            kind: Number(s.kind),
            attributes: attributesOf(s.attributes as { key: string; value: OtlpValue }[]),
            startMs: Number(BigInt(String(s.startTimeUnixNano)) / 1_000_000n),
            endMs: Number(BigInt(String(s.endTimeUnixNano)) / 1_000_000n),
            status: Number((s.status as { code?: number } | undefined)?.code ?? 0),
          });
        }
      }
    }
    response.writeHead(200, { "content-type": "application/json" }).end("{}");
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

const receiver = new OtlpReceiver();
let stack: FaultStack;
/** The `traceparent` metadata of each ExecuteNode call, by node id. */
const callTraceparents = new Map<string, string>();

/** The caller's span: what CreateWorkflow's `traceparent` names. */
const CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID = "00f067aa0ba902b7";

/** How long an app may take to start here. */
const STARTUP_MS = 120_000;

beforeAll(async () => {
  const endpoint = await receiver.start();
  stack = await startFaultStack({
    name: "otlp_traces",
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      // Export within a tenth of a second, not the default 5 s.
      OTEL_BSP_SCHEDULE_DELAY: "100",
    },
    handler: async (request, call) => {
      const traceparent = call.metadata.get("traceparent")[0];
      if (traceparent !== undefined) callTraceparents.set(request.node?.id ?? "", String(traceparent));
      return { status: ExecutionStatus.SUCCESS };
    },
  });
}, 120_000);

afterAll(async () => {
  await stack?.close();
  await receiver.close();
});

describe("OpenTelemetry traces over OTLP/HTTP", () => {
  it("parents the workflow's spans on CreateWorkflow's traceparent, down to the NodeService's metadata", async () => {
    // Started without the stack's 30 s readiness bound: a busy machine takes longer to load three apps at once.
    const [api, scheduler, worker] = await Promise.all([
      stack.startApi({ ready: false }),
      stack.startScheduler({ ready: false }),
      stack.startWorker(["echo"], { ready: false }),
    ]);
    await Promise.all([api.app, scheduler, worker].map((app) => app.waitReady(STARTUP_MS)));
    const { client } = api;
    const metadata = new grpc.Metadata();
    metadata.set("traceparent", `00-${CALLER_TRACE_ID}-${CALLER_SPAN_ID}-01`);
    const { workflow } = await client.createWorkflow(
      { name: "traced", nodes: [testNode("a", "echo"), testNode("b", "echo", ["a"])] },
      { metadata },
    );
    const [done] = await stack.waitFinished([workflow!.id], 60_000).catch((error: unknown) => {
      for (const app of stack.apps.processes) console.error(`--- ${app.name}\n${app.tail(40)}`);
      throw error;
    });
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);

    const inTrace = () => receiver.spans.filter((s) => s.traceId === CALLER_TRACE_ID);
    // Every attempt's spans are exported once its result is recorded (within OTEL_BSP_SCHEDULE_DELAY).
    await waitFor(() => inTrace().filter((s) => s.name === "trellis.node.record").length >= 2, {
      timeoutMs: 30_000,
      description: "the spans of both node attempts",
    });
    const spans = inTrace();

    // The workflow's span: the api's, a child of the caller's span.
    const workflowSpans = spans.filter((s) => s.name === "trellis.workflow");
    expect(workflowSpans).toHaveLength(1);
    const workflowSpan = workflowSpans[0]!;
    expect(workflowSpan).toMatchObject({
      service: "trellis-api",
      parentSpanId: CALLER_SPAN_ID,
      attributes: expect.objectContaining({
        "trellis.workflow.id": workflow!.id,
        "trellis.workflow.name": "traced",
        "rpc.method": "CreateWorkflow",
      }),
    });
    // Stored with the workflow, for the workers.
    const { rows } = await stack.db.pool.query<{ trace_parent: string }>(
      "select trace_parent from workflows where id = $1",
      [workflow!.id],
    );
    expect(rows[0]!.trace_parent).toBe(`00-${CALLER_TRACE_ID}-${workflowSpan.spanId}-01`);

    // One attempt span per node, the workflow span's children, in the worker.
    const attempts = spans.filter((s) => s.name === "trellis.node.attempt");
    expect(attempts.map((s) => s.attributes["trellis.node.id"]).sort()).toEqual(["a", "b"]);
    for (const attempt of attempts) {
      expect(attempt).toMatchObject({
        service: "trellis-worker",
        parentSpanId: workflowSpan.spanId,
        attributes: expect.objectContaining({
          "trellis.workflow.id": workflow!.id,
          "trellis.node.attempt": 1,
          "trellis.node.capability": "echo",
          "trellis.node.outcome": "passed",
        }),
      });
      // Its children: time in the queue, the NodeService call, the recording, in that order.
      const children = spans.filter((s) => s.parentSpanId === attempt.spanId);
      expect(children.map((s) => s.name).sort()).toEqual([
        "trellis.node.queued",
        "trellis.node.record",
        "workflow.v1.NodeService/ExecuteNode",
      ]);
      const byName = Object.fromEntries(children.map((s) => [s.name, s]));
      const queued = byName["trellis.node.queued"]!;
      const call = byName["workflow.v1.NodeService/ExecuteNode"]!;
      const record = byName["trellis.node.record"]!;
      expect(queued.startMs).toBe(attempt.startMs);
      expect(queued.endMs).toBeLessThanOrEqual(call.startMs);
      expect(call.endMs).toBeLessThanOrEqual(record.startMs);
      expect(record.endMs).toBeLessThanOrEqual(attempt.endMs);
      expect(call.attributes).toMatchObject({ "rpc.system": "grpc", "rpc.service": "workflow.v1.NodeService" });
      // The NodeService got the call span's context as `traceparent` metadata: same trace, the call as parent.
      const nodeId = String(attempt.attributes["trellis.node.id"]);
      expect(callTraceparents.get(nodeId)).toBe(`00-${CALLER_TRACE_ID}-${call.spanId}-01`);
    }
    expect(receiver.contentTypes).toEqual(new Set(["application/json"]));
  }, 240_000);

  it("gives a workflow created without a traceparent a trace of its own, and a fork the trace of ForkWorkflow's", async () => {
    const { app, client } = await stack.startApi({ name: "api-2", ready: false });
    await app.waitReady(STARTUP_MS);
    const { workflow } = await client.createWorkflow({ name: "untraced", nodes: [testNode("solo", "echo")] });
    await stack.waitFinished([workflow!.id], 60_000);
    const root = await waitFor(
      () =>
        receiver.spans.find(
          (s) => s.name === "trellis.workflow" && s.attributes["trellis.workflow.id"] === workflow!.id,
        ),
      { timeoutMs: 30_000, description: "the workflow's span" },
    );
    expect(root.parentSpanId).toBe("");
    expect(root.traceId).not.toBe(CALLER_TRACE_ID);
    const attempt = await waitFor(
      () =>
        receiver.spans.find(
          (s) => s.name === "trellis.node.attempt" && s.attributes["trellis.workflow.id"] === workflow!.id,
        ),
      { timeoutMs: 30_000, description: "the attempt's span" },
    );
    expect(attempt).toMatchObject({ traceId: root.traceId, parentSpanId: root.spanId });

    // A fork is a new workflow: its span is parented on ForkWorkflow's traceparent, and its re-run node's attempt on it.
    const metadata = new grpc.Metadata();
    const forkTraceId = "0af7651916cd43dd8448eb211c80319c";
    metadata.set("traceparent", `00-${forkTraceId}-b7ad6b7169203331-01`);
    const { workflow: fork } = await client.forkWorkflow(
      { workflowId: workflow!.id, fromNodeIds: ["solo"] },
      { metadata },
    );
    await stack.waitFinished([fork!.id], 60_000);
    const forkSpan = await waitFor(
      () => receiver.spans.find((s) => s.name === "trellis.workflow" && s.traceId === forkTraceId),
      { timeoutMs: 30_000, description: "the fork's span" },
    );
    expect(forkSpan).toMatchObject({
      parentSpanId: "b7ad6b7169203331",
      attributes: expect.objectContaining({
        "rpc.method": "ForkWorkflow",
        "trellis.workflow.id": fork!.id,
        "trellis.workflow.name": "untraced",
        "trellis.workflow.forked_from": workflow!.id,
      }),
    });
    const forkAttempt = await waitFor(
      () => receiver.spans.find((s) => s.name === "trellis.node.attempt" && s.traceId === forkTraceId),
      { timeoutMs: 30_000, description: "the fork's attempt span" },
    );
    expect(forkAttempt).toMatchObject({
      parentSpanId: forkSpan.spanId,
      attributes: expect.objectContaining({ "trellis.workflow.id": fork!.id, "trellis.node.id": "solo" }),
    });
  }, 240_000);
});
