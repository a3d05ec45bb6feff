/**
 * The benchmarks' no-op NodeService, run as its own process by the bench. ExecuteNode answers SUCCESS at once;
 * a node of capability `bench.plan` answers with edits instead: it inserts `input.count` nodes (children of
 * itself) and rewires `input.join` to wait for them. A node whose `input.sleep_ms` is a positive number (W7's long
 * nodes) is answered SUCCESS only after that many milliseconds. Every call's receive and response times are recorded
 * (milliseconds, see nowMs) per workflow and served over HTTP for the latency figures:
 *
 * - `GET /calls?workflow=<id>`: the calls of one workflow, as JSON `CallRecord[]` in arrival order;
 * - `POST /reset`: forgets every recorded call;
 * - `GET /readyz`: 200 once the gRPC server listens.
 *
 * Settings: BENCH_GRPC_PORT and BENCH_HTTP_PORT (127.0.0.1). Exits on SIGTERM, SIGINT or when the bench that
 * started it goes away (IPC disconnect).
 */
import { createServer } from "node:http";
import * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  EditType,
  type ExecuteNodeRequest,
  ExecuteNodeResponseSchema,
  ExecutionStatus,
  NodeService,
  type NodeEditSchema,
  addGrpcService,
} from "@trellis/proto";
import { nowMs } from "./harness/clock.js";
import type { CallRecord } from "./harness/node-service-client.js";

/** Capability whose nodes answer with the planner's edits. */
const PLAN_CAPABILITY = "bench.plan";

const grpcPort = Number(process.env.BENCH_GRPC_PORT);
const httpPort = Number(process.env.BENCH_HTTP_PORT);
if (!Number.isInteger(grpcPort) || !Number.isInteger(httpPort)) {
  process.stderr.write("noop-node-service: BENCH_GRPC_PORT and BENCH_HTTP_PORT are required\n");
  process.exit(2);
}

const calls = new Map<string, CallRecord[]>();
let ready = false;

function record(request: ExecuteNodeRequest, receivedAt: number): CallRecord {
  const workflowId = request.context?.workflowId || request.node?.workflowId || "";
  const entry: CallRecord = {
    nodeId: request.node?.id ?? "",
    attempt: request.context?.attempt ?? 0,
    receivedAt,
    respondedAt: 0,
  };
  let list = calls.get(workflowId);
  if (!list) {
    list = [];
    calls.set(workflowId, list);
  }
  list.push(entry);
  return entry;
}

/** The planner's edits: `count` inserted nodes under the planner, and the join rewired to wait for all of them. */
function planEdits(request: ExecuteNodeRequest): MessageInitShape<typeof NodeEditSchema>[] {
  const input = request.node?.input ?? {};
  const count = typeof input.count === "number" ? input.count : 0;
  const join = typeof input.join === "string" ? input.join : "";
  const capability = typeof input.capability === "string" ? input.capability : "bench.noop";
  const plannerId = request.node?.id ?? "";
  const ids = Array.from({ length: count }, (_, i) => `task-${i}`);
  const edits: MessageInitShape<typeof NodeEditSchema>[] = ids.map((id) => ({
    type: EditType.INSERT,
    node: { id, capability, parentIds: [plannerId] },
  }));
  if (join) {
    edits.push({
      type: EditType.UPDATE,
      node: { id: join, parentIds: ids },
      updateMask: { paths: ["parent_ids"] },
    });
  }
  return edits;
}

/** How long to hold the call before answering: `input.sleep_ms` when it is a positive number, else 0. */
function holdMs(request: ExecuteNodeRequest): number {
  const sleep = request.node?.input?.sleep_ms;
  return typeof sleep === "number" && Number.isFinite(sleep) && sleep > 0 ? sleep : 0;
}

const server = new grpc.Server();
addGrpcService(server, NodeService, {
  executeNode(call, callback) {
    const entry = record(call.request, nowMs());
    const edits = call.request.node?.capability === PLAN_CAPABILITY ? planEdits(call.request) : [];
    const response = create(ExecuteNodeResponseSchema, { status: ExecutionStatus.SUCCESS, edits });
    const hold = holdMs(call.request);
    if (hold === 0) {
      entry.respondedAt = nowMs();
      callback(null, response);
      return;
    }
    setTimeout(() => {
      entry.respondedAt = nowMs();
      callback(null, response);
    }, hold);
  },
});

await new Promise<void>((resolve, reject) => {
  server.bindAsync(`127.0.0.1:${grpcPort}`, grpc.ServerCredentials.createInsecure(), (error) =>
    error ? reject(error) : resolve(),
  );
});
ready = true;

const http = createServer((req, res) => {
  const url = new URL(req.url ?? "/", "http://localhost");
  if (url.pathname === "/readyz") {
    res.writeHead(ready ? 200 : 503).end();
  } else if (url.pathname === "/calls") {
    const body = JSON.stringify(calls.get(url.searchParams.get("workflow") ?? "") ?? []);
    res.writeHead(200, { "content-type": "application/json" }).end(body);
  } else if (url.pathname === "/reset" && req.method === "POST") {
    calls.clear();
    res.writeHead(204).end();
  } else {
    res.writeHead(404).end();
  }
});
http.listen(httpPort, "127.0.0.1");

function shutdown(): void {
  server.forceShutdown();
  http.close();
  process.exit(0);
}
process.once("SIGTERM", shutdown);
process.once("SIGINT", shutdown);
process.once("disconnect", shutdown);
