import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
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
  /** Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 assumed when getconf fails). */
  clock_ticks_per_s: number;
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
    clock_ticks_per_s: clockTicksPerSecond(),
  };
}

/** The 1-minute load average now. */
export function loadAverage(): number {
  return loadavg()[0] ?? 0;
}

let clockTicks: number | undefined;

/**
 * Clock ticks per second of the CPU times in /proc/stat and /proc/<pid>/stat (USER_HZ): `getconf CLK_TCK`, read
 * once; 100 (what Linux uses everywhere that matters) when getconf fails.
 */
export function clockTicksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      const value = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8", timeout: 5_000 }).trim());
      clockTicks = Number.isInteger(value) && value > 0 ? value : 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** The whole machine's CPU time so far, from the aggregate `cpu` line of /proc/stat, in seconds (all CPUs). */
export interface MachineCpu {
  /** user + nice + system + idle + iowait + irq + softirq + steal (guest time is already inside user and nice). */
  total: number;
  /** total - idle - iowait. */
  busy: number;
}

/** Reads the aggregate `cpu` line of /proc/stat (jiffies, converted with {@link clockTicksPerSecond}). */
export function machineCpu(): MachineCpu {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "";
  const fields = line.trim().split(/\s+/);
  if (fields[0] !== "cpu") throw new Error(`unexpected first line of /proc/stat: ${line}`);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = fields.slice(1, 9).map((f) => Number(f) || 0);
  const ticks = clockTicksPerSecond();
  const total = (user! + nice! + system! + idle! + iowait! + irq! + softirq! + steal!) / ticks;
  return { total, busy: total - (idle! + iowait!) / ticks };
}
