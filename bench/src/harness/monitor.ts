import { readdirSync, readFileSync } from "node:fs";
import pg from "pg";
import { nowMs } from "./clock.js";
import { BENCH_SQL } from "./database.js";
import { clockTicksPerSecond, type MachineCpu, machineCpu } from "./machine.js";

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat; null when unreadable. */
export function processCpuSeconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may hold spaces) start at ") ": utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / clockTicksPerSecond();
  } catch {
    return null;
  }
}

/**
 * CPU seconds used so far by a process and its children: its own user + system time, the time of the children it
 * has reaped (cutime + cstime), and that of its children still running. For a PostgreSQL postmaster, the whole
 * server (backends, autovacuum, checkpointer, WAL writer); null when unreadable.
 */
export function processTreeCpuSeconds(pid: number): number | null {
  const fieldsOf = (p: number | string): string[] | null => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    } catch {
      return null;
    }
  };
  const own = fieldsOf(pid);
  if (!own) return null;
  // After the command name: state is field 3, ppid 4, utime 14, stime 15, cutime 16, cstime 17.
  let ticks = Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14]);
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = fieldsOf(entry);
    if (fields && Number(fields[1]) === pid) ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / clockTicksPerSecond();
}

/** CPU seconds used so far by each process whose command name is `comm` (e.g. every PostgreSQL backend), by pid. */
export function commandCpuSeconds(comm: string): Map<number, number> {
  const byPid = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, "utf8").trim() !== comm) continue;
    } catch {
      continue;
    }
    const seconds = processCpuSeconds(Number(entry));
    if (seconds !== null) byPid.set(Number(entry), seconds);
  }
  return byPid;
}

/** What a workload's processes did while it was measured. */
export interface ResourceUsage {
  /** Average CPU cores used per process (or process group: `postgres`, `redis`) over the window. */
  cpu_cores: Record<string, number>;
  /**
   * Where the engine's PostgreSQL connections were, sampled every 50 ms from pg_stat_activity, as shares of the
   * non-idle samples, largest first, e.g. `Lock:tuple 61%, idle in transaction 22%, active (CPU) 9%`.
   * `idle in transaction` is a transaction waiting for its client (a round trip or the app's event loop).
   */
  pg_waits: string;
  /** Average number of non-idle engine connections. */
  pg_busy_connections: number;
  /**
   * Busy CPU time of the whole machine over the window, in seconds (all CPUs together), from the aggregate `cpu`
   * line of /proc/stat: total - idle - iowait. Everything running on the machine counts, other users' work too.
   */
  machine_busy_cpu_s: number;
  /** The same as average cores busy over the window. */
  machine_busy_cores: number;
}

/**
 * Measures CPU per process and samples PostgreSQL wait states for one workload, from `start` to `stop`: the
 * evidence for what bounds each figure.
 */
export class ResourceMonitor {
  private readonly cpuStart = new Map<string, number>();
  private readonly waits = new Map<string, number>();
  private samples = 0;
  private busy = 0;
  private timer: NodeJS.Timeout | null = null;
  private sampling = false;
  private startedAt = 0;
  private machineStart: MachineCpu = { total: 0, busy: 0 };

  private constructor(
    private readonly processes: Record<string, number>,
    private readonly client: pg.Client | null,
    private readonly databaseName: string,
  ) {}

  /**
   * Starts measuring `processes` (name -> pid) plus every `postgres` and `redis-server` process, and, when
   * `databaseUrl` is given, sampling the wait states of that database's connections.
   */
  static async start(processes: Record<string, number>, databaseUrl?: string): Promise<ResourceMonitor> {
    let client: pg.Client | null = null;
    let databaseName = "";
    if (databaseUrl) {
      client = new pg.Client({ connectionString: databaseUrl, application_name: "trellis-bench-monitor" });
      client.on("error", () => undefined);
      await client.connect();
      databaseName = decodeURIComponent(new URL(databaseUrl).pathname.slice(1));
    }
    const monitor = new ResourceMonitor(processes, client, databaseName);
    monitor.begin();
    return monitor;
  }

  /** CPU seconds so far per measured process, keyed `<name>/<pid>` (groups have one entry per pid). */
  private cpuNow(): Map<string, number> {
    const now = new Map<string, number>();
    for (const [name, pid] of Object.entries(this.processes)) now.set(`${name}/${pid}`, processCpuSeconds(pid) ?? 0);
    for (const [name, comm] of [
      ["postgres", "postgres"],
      ["redis", "redis-server"],
    ] as const) {
      for (const [pid, seconds] of commandCpuSeconds(comm)) now.set(`${name}/${pid}`, seconds);
    }
    return now;
  }

  private begin(): void {
    for (const [key, seconds] of this.cpuNow()) this.cpuStart.set(key, seconds);
    // Last, right before the window begins: /proc/stat and the clock are read back to back at both ends.
    this.machineStart = machineCpu();
    this.startedAt = nowMs();
    if (this.client) this.timer = setInterval(() => void this.sample(), 50);
  }

  private async sample(): Promise<void> {
    if (this.sampling || !this.client) return;
    this.sampling = true;
    try {
      const { rows } = await this.client.query<{ state: string; wait: string | null }>(
        `${BENCH_SQL} select state, wait_event_type || ':' || wait_event as wait from pg_stat_activity
          where datname = $1 and backend_type = 'client backend' and pid <> pg_backend_pid()
            and application_name not like 'trellis-bench%' and state <> 'idle'`,
        [this.databaseName],
      );
      this.samples++;
      for (const row of rows) {
        const key = row.state === "active" ? (row.wait ?? "active (CPU)") : row.state;
        this.waits.set(key, (this.waits.get(key) ?? 0) + 1);
        this.busy++;
      }
    } catch {
      // A sample lost to a busy server is not worth failing the workload for.
    } finally {
      this.sampling = false;
    }
  }

  /** Stops measuring and returns the usage over the window. */
  async stop(): Promise<ResourceUsage> {
    if (this.timer) clearInterval(this.timer);
    const seconds = (nowMs() - this.startedAt) / 1000;
    const machineBusy = machineCpu().busy - this.machineStart.busy;
    // Per pid, so a process that started meanwhile counts from zero; one that exited meanwhile is lost (an
    // undercount, e.g. of a short-lived PostgreSQL backend).
    const used = new Map<string, number>();
    for (const [key, end] of this.cpuNow()) {
      const name = key.slice(0, key.lastIndexOf("/"));
      used.set(name, (used.get(name) ?? 0) + Math.max(0, end - (this.cpuStart.get(key) ?? 0)));
    }
    const cpu: Record<string, number> = {};
    for (const [name, total] of used) cpu[name] = Math.round((total / Math.max(seconds, 0.001)) * 100) / 100;
    await this.client?.end().catch(() => undefined);
    const total = [...this.waits.values()].reduce((a, b) => a + b, 0);
    const waits = [...this.waits.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 6)
      .map(([key, count]) => `${key} ${Math.round((count / Math.max(total, 1)) * 100)}%`)
      .join(", ");
    return {
      cpu_cores: cpu,
      pg_waits: waits || "-",
      pg_busy_connections: this.samples === 0 ? 0 : Math.round((this.busy / this.samples) * 10) / 10,
      machine_busy_cpu_s: Math.round(machineBusy * 1000) / 1000,
      machine_busy_cores: Math.round((machineBusy / Math.max(seconds, 0.001)) * 100) / 100,
    };
  }
}
