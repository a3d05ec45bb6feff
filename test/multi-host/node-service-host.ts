// The NodeService host of the multi-host test (multi-host.test.ts): the test NodeService server of @trellis/testing as
// a process of its own, run on its host with `ip netns exec`, listening on NODE_SERVICE_LISTEN_ADDR. It tells the test
// what happens as JSON lines on stdout (one per call, answer, cancellation, and the side-effect ledger's counts for
// the key) and takes orders on stdin: `release <idempotency key>` lets a held call answer. It exits when its stdin
// ends (the test process is gone).
//
// Capabilities: `echo` passes at once; `work` passes after `input.ms` (default 200 ms); `held`: the first delivery of
// a key waits for the test's `release`, then answers TASK_ERROR ("late result of attempt N": a result that must never
// be recorded), later deliveries pass at once. Every output is `{node, attempt}`; a deduplicating side-effect ledger
// answers a repeated key with its first answer, as a NodeService with side effects would.
import { createInterface } from "node:readline";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { ExecutionStatus } from "@trellis/proto";
import { type ExecuteHandler, startNodeServiceServer } from "../../libs/testing/src/node-service-server.js";
import { SideEffectLedger } from "../../libs/testing/src/side-effect-ledger.js";

/** One JSON line for the test (pino-like, so AppProcess.logs() reads it). */
function tell(msg: string, fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ level: 30, time: Date.now(), msg, ...fields })}\n`);
}

const releases = new Map<string, () => void>();
const released = new Set<string>();
const seen = new Set<string>();

function waitRelease(key: string): Promise<void> {
  if (released.has(key)) return Promise.resolve();
  return new Promise((resolve) => releases.set(key, resolve));
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

const handler: ExecuteHandler = async (request, call, signal) => {
  const node = request.node!;
  const context = request.context!;
  const key = context.idempotencyKey;
  const attempt = context.attempt;
  const first = !seen.has(key);
  seen.add(key);
  // The worker's address as this host sees it: the call came over the network.
  const peer = call.getPeer().replace(/^ipv4:/, "");
  tell("call", { key, node_id: node.id, capability: node.capability, attempt, peer, first });
  signal.addEventListener("abort", () => tell("cancelled", { key, node_id: node.id, attempt, peer }));
  const output = { node: node.id, attempt };
  switch (node.capability) {
    case "work": {
      const input = node.input as { ms?: unknown } | undefined;
      await sleep(typeof input?.ms === "number" ? input.ms : 200, signal);
      break;
    }
    case "held":
      if (first) {
        await waitRelease(key);
        tell("answered", { key, node_id: node.id, attempt, peer, late: true, cancelled: signal.aborted });
        return { status: ExecutionStatus.TASK_ERROR, errorMessage: `late result of attempt ${attempt}` };
      }
      break;
    default:
      break;
  }
  return { status: ExecutionStatus.SUCCESS, output: fromJson(ValueSchema, output) };
};

const ledger = new SideEffectLedger(true);
const wrapped = ledger.wrap(handler);
const listen = process.env.NODE_SERVICE_LISTEN_ADDR ?? "0.0.0.0:50052";
const colon = listen.lastIndexOf(":");
const server = await startNodeServiceServer(
  async (request, call, signal) => {
    const result = await wrapped(request, call, signal);
    const key = request.context?.idempotencyKey ?? "";
    tell("ledger", {
      key,
      calls: ledger.calls.get(key) ?? 0,
      effects: ledger.effects.get(key) ?? 0,
      replays: ledger.replays.get(key) ?? 0,
    });
    return result;
  },
  { host: listen.slice(0, colon), port: Number(listen.slice(colon + 1)) },
);
tell("listening", { address: server.address });

createInterface({ input: process.stdin }).on("line", (line) => {
  const [command, key] = line.trim().split(" ");
  if (command === "release" && key) {
    released.add(key);
    releases.get(key)?.();
    releases.delete(key);
    tell("released", { key });
  }
});
process.stdin.on("end", () => {
  void server.close().finally(() => process.exit(0));
});
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    void server.close().finally(() => process.exit(0));
  });
}
