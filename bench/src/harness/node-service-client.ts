import { cleanup } from "./cleanup.js";
import type { Deadline } from "./deadline.js";
import { freePort } from "./ports.js";
import { ManagedProcess } from "./process.js";

/** One ExecuteNode call as the no-op NodeService saw it (times from nowMs, in that process). */
export interface CallRecord {
  nodeId: string;
  attempt: number;
  /** When the call reached the handler. */
  receivedAt: number;
  /** When the handler handed its response to grpc-js. */
  respondedAt: number;
}

/** The no-op NodeService process (bench/src/noop-node-service.ts) and its recorded calls. */
export class NoopNodeService {
  private constructor(
    private readonly process: ManagedProcess,
    /** `host:port` to dial for ExecuteNode. */
    readonly address: string,
    private readonly httpAddress: string,
    private readonly unregister: () => void,
  ) {}

  /** Starts the service and waits until it listens. */
  static async start(logDir: string, deadline: Deadline): Promise<NoopNodeService> {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const child = ManagedProcess.start({
      name: "noop-node-service",
      script: "bench/src/noop-node-service.ts",
      env: { BENCH_GRPC_PORT: String(grpcPort), BENCH_HTTP_PORT: String(httpPort) },
      logDir,
      ipc: true,
    });
    const unregister = cleanup.add("noop NodeService", async () => {
      await child.stop();
    });
    const httpAddress = `127.0.0.1:${httpPort}`;
    await child.waitHttpReady(httpAddress, deadline);
    return new NoopNodeService(child, `127.0.0.1:${grpcPort}`, httpAddress, unregister);
  }

  /** The service's process id. */
  get pid(): number {
    return this.process.pid;
  }

  /** Throws when the service process has died. */
  assertRunning(): void {
    this.process.assertRunning();
  }

  /** Every call recorded for `workflowId` (the ExecutionContext's workflow_id), in arrival order. */
  async calls(workflowId: string): Promise<CallRecord[]> {
    this.assertRunning();
    const response = await fetch(`http://${this.httpAddress}/calls?workflow=${encodeURIComponent(workflowId)}`, {
      signal: AbortSignal.timeout(30_000),
    });
    if (!response.ok) throw new Error(`noop NodeService /calls answered ${response.status}`);
    return (await response.json()) as CallRecord[];
  }

  /** Forgets every recorded call (between workloads, to keep the service small). */
  async reset(): Promise<void> {
    this.assertRunning();
    const response = await fetch(`http://${this.httpAddress}/reset`, {
      method: "POST",
      signal: AbortSignal.timeout(10_000),
    });
    await response.arrayBuffer();
  }

  /** Stops the process. */
  async stop(): Promise<void> {
    await this.process.stop();
    this.unregister();
  }
}

/** The first attempt's call of each node, by node id. */
export function firstCallByNode(calls: readonly CallRecord[]): Map<string, CallRecord> {
  const byNode = new Map<string, CallRecord>();
  for (const call of calls) {
    const seen = byNode.get(call.nodeId);
    if (!seen || call.attempt < seen.attempt) byNode.set(call.nodeId, call);
  }
  return byNode;
}
