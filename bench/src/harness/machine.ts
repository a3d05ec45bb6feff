import { availableParallelism, cpus, loadavg, release, totalmem } from "node:os";
import { type PostgresInfo, postgresInfo } from "./database.js";
import { redisVersion } from "./redis.js";

/** The machine and services a run measured. */
export interface MachineInfo {
  cpu_model: string;
  cpus: number;
  memory_gib: number;
  kernel: string;
  node: string;
  postgres: PostgresInfo;
  redis: string;
  /** 1-minute load average when the bench started and when it ended: other work on the machine shows here. */
  load_average_start: number;
  load_average_end: number | null;
}

/** Reads the machine's facts (the end load average is filled in later). */
export async function machineInfo(): Promise<MachineInfo> {
  return {
    cpu_model: cpus()[0]?.model ?? "unknown",
    cpus: availableParallelism(),
    memory_gib: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: release(),
    node: process.version,
    postgres: await postgresInfo(),
    redis: await redisVersion(),
    load_average_start: loadavg()[0] ?? 0,
    load_average_end: null,
  };
}

/** The 1-minute load average now. */
export function loadAverage(): number {
  return loadavg()[0] ?? 0;
}
