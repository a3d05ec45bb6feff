import type { Sizes } from "../sizes.js";
import type { PgStatStatementsStatus } from "./database.js";
import type { NoopNodeService } from "./node-service-client.js";

/** What every workload gets from the bench. */
export interface BenchContext {
  sizes: Sizes;
  /** The one no-op NodeService process, shared by every workload and baseline of the invocation. */
  nodeService: NoopNodeService;
  /** WORKER_CONCURRENCY of the engine's worker and of the baseline's BullMQ Worker. */
  workerConcurrency: number;
  /** Where the apps' logs go. */
  logDir: string;
  /** Whether W5 can read pg_stat_statements. */
  pgStatStatements: PgStatStatementsStatus;
  /** Progress line on stderr. */
  log(message: string): void;
}
