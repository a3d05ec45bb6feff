import type { MachineInfo } from "./harness/machine.js";
import { median, ratio, round } from "./harness/stats.js";
import type { Sizes } from "./sizes.js";
import type { BaselineChainResult } from "./workloads/baseline-chain.js";
import type { BaselineThroughputResult } from "./workloads/baseline-throughput.js";
import type { W1Result } from "./workloads/w1-throughput.js";
import type { W2Result } from "./workloads/w2-chain.js";
import type { W3Result } from "./workloads/w3-wide.js";
import type { W4Result } from "./workloads/w4-edits.js";
import type { W5Result } from "./workloads/w5-footprint.js";
import type { W7Result } from "./workloads/w7-long-nodes.js";
import type { W8RateResult, W8Result } from "./workloads/w8-flow-control.js";
import type { W9Result } from "./workloads/w9-capacity.js";

/** A workload or baseline that failed in one run. */
export interface BenchError {
  workload: string;
  run: number;
  message: string;
}

/** Every run's results, as collected. */
export interface Collected {
  w1: W1Result[];
  w1Baseline: BaselineThroughputResult[];
  w2: W2Result[];
  w2Baseline: BaselineChainResult[];
  w3: W3Result[];
  w4: W4Result[];
  w5: W5Result[];
  w7: W7Result[];
  w8: W8Result[];
  w8Rate: W8RateResult[];
  w9: W9Result[];
  errors: BenchError[];
}

/** An empty collection. */
export function emptyCollected(): Collected {
  return {
    w1: [],
    w1Baseline: [],
    w2: [],
    w2Baseline: [],
    w3: [],
    w4: [],
    w5: [],
    w7: [],
    w8: [],
    w8Rate: [],
    w9: [],
    errors: [],
  };
}

/**
 * The median run: each numeric figure is the median of that figure over the runs (so figures of one summary may
 * come from different runs); any other field is taken from the first run. Undefined without runs.
 */
export function medianRun<T extends object>(runs: readonly T[]): T | undefined {
  const [first] = runs;
  if (first === undefined) return undefined;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(first)) {
    const values = runs.map((r) => (r as Record<string, unknown>)[key]);
    const numbers = values.filter((v): v is number => typeof v === "number" && Number.isFinite(v));
    const numeric = values.every((v) => v === null || typeof v === "number");
    out[key] = numeric ? (numbers.length > 0 ? median(numbers) : null) : value;
  }
  return out as T;
}

/** Rounds every number of a flat record (2 decimals), keeping other fields. */
function rounded(record: object | undefined): Record<string, unknown> | undefined {
  if (!record) return undefined;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(record)) out[key] = typeof value === "number" ? round(value) : value;
  return out;
}

/** A figure with its target, for the table and the JSON. */
export interface Row {
  workload: string;
  figure: string;
  value: number | null;
  baseline: number | null;
  ratio: number | null;
  target: string;
  /** null when there is no target or no value. */
  met: boolean | null;
}

function check(value: number | null, test: (v: number) => boolean): boolean | null {
  return value === null ? null : test(value);
}

/** The rows of the results table, from the median runs. */
export function tableRows(c: Collected): Row[] {
  const rows: Row[] = [];
  const w1 = medianRun(c.w1);
  const b1 = medianRun(c.w1Baseline);
  if (w1 || b1) {
    const r = ratio(w1?.nodes_per_s, b1?.jobs_per_s);
    rows.push({
      workload: "W1 throughput",
      figure: "nodes/s",
      value: w1?.nodes_per_s ?? null,
      baseline: b1?.jobs_per_s ?? null,
      ratio: r,
      target: ">= 0.60 x baseline",
      met: check(r, (v) => v >= 0.6),
    });
    const cpu = ratio(w1?.machine_cpu_ms_per_node, b1?.machine_cpu_ms_per_job);
    rows.push({
      workload: "W1 throughput",
      figure: "machine CPU ms/node (baseline: /job)",
      value: w1?.machine_cpu_ms_per_node ?? null,
      baseline: b1?.machine_cpu_ms_per_job ?? null,
      ratio: cpu,
      target: "<= 2.5 x baseline (aim 1.5)",
      met: check(cpu, (v) => v <= 2.5),
    });
  }
  const w2 = medianRun(c.w2);
  const b2 = medianRun(c.w2Baseline);
  if (w2 || b2) {
    rows.push({
      workload: "W2 chain",
      figure: "hop p50 ms, response -> next call",
      value: w2?.hop_from_response_p50_ms ?? null,
      baseline: b2?.hop_p50_ms ?? null,
      ratio: ratio(w2?.hop_from_response_p50_ms, b2?.hop_p50_ms),
      target: "<= 3 (aim 2)",
      met: check(w2?.hop_from_response_p50_ms ?? null, (v) => v <= 3),
    });
    rows.push({
      workload: "W2 chain",
      figure: "hop p99 ms, response -> next call",
      value: w2?.hop_from_response_p99_ms ?? null,
      baseline: b2?.hop_p99_ms ?? null,
      ratio: ratio(w2?.hop_from_response_p99_ms, b2?.hop_p99_ms),
      target: "<= 15",
      met: check(w2?.hop_from_response_p99_ms ?? null, (v) => v <= 15),
    });
    rows.push({
      workload: "W2 chain",
      figure: "hop p50 ms, result committed -> next call",
      value: w2?.hop_from_commit_p50_ms ?? null,
      baseline: null,
      ratio: null,
      target: "",
      met: null,
    });
    rows.push({
      workload: "W2 chain",
      figure: "machine CPU ms/node (baseline: /job)",
      value: w2?.machine_cpu_ms_per_node ?? null,
      baseline: b2?.machine_cpu_ms_per_job ?? null,
      ratio: ratio(w2?.machine_cpu_ms_per_node, b2?.machine_cpu_ms_per_job),
      target: "",
      met: null,
    });
  }
  const w3 = medianRun(c.w3);
  if (w3) {
    rows.push({
      workload: "W3 wide",
      figure: `create ms (${w3.large_nodes} nodes)`,
      value: w3.create_ms,
      baseline: null,
      ratio: null,
      target: "<= 2000 (10,000 nodes)",
      met: check(w3.create_ms, (v) => v <= 2000),
    });
    rows.push({
      workload: "W3 wide",
      figure: `total ms (${w3.shape})`,
      value: w3.total_ms,
      baseline: null,
      ratio: null,
      target: "",
      met: null,
    });
    rows.push({
      workload: "W3 wide",
      figure: `per-node ms ${w3.large_nodes} / ${w3.small_nodes}`,
      value: w3.per_node_ms,
      baseline: w3.small_per_node_ms,
      ratio: w3.per_node_ratio,
      target: "ratio <= 1.3",
      met: check(w3.per_node_ratio, (v) => v <= 1.3),
    });
  }
  const w4 = medianRun(c.w4);
  if (w4) {
    rows.push({
      workload: "W4 edits",
      figure: `apply ms (${w4.inserted} inserts)`,
      value: w4.apply_ms,
      baseline: null,
      ratio: null,
      target: "<= 300",
      met: check(w4.apply_ms, (v) => v <= 300),
    });
    rows.push({
      workload: "W4 edits",
      figure: "finish ms",
      value: w4.finish_ms,
      baseline: null,
      ratio: null,
      target: "",
      met: null,
    });
  }
  const w5 = medianRun(c.w5);
  if (w5) {
    rows.push({
      workload: "W5 footprint",
      figure: "PG statements/node",
      value: w5.statements_per_node,
      baseline: null,
      ratio: null,
      target: "<= 4",
      met: check(w5.statements_per_node, (v) => v <= 4),
    });
    rows.push({
      workload: "W5 footprint",
      figure: "PG statements/node excl. BEGIN/COMMIT",
      value: w5.statements_per_node_excl_tx,
      baseline: null,
      ratio: null,
      target: "",
      met: null,
    });
    rows.push({
      workload: "W5 footprint",
      figure: `worker RSS MiB at ${w5.second_nodes ?? "-"} / ${w5.first_nodes}`,
      value: w5.rss_second_mb,
      baseline: w5.rss_first_mb,
      ratio: w5.rss_ratio,
      target: "ratio <= 1.2",
      met: check(w5.rss_ratio, (v) => v <= 1.2),
    });
  }
  const w7 = c.w7[0];
  const small = w7?.cases[0];
  const large = w7?.cases[w7.cases.length - 1];
  if (w7 && small && large) {
    const at = `at ${large.running_nodes.toLocaleString("en-US")} / ${small.running_nodes.toLocaleString("en-US")} running`;
    const goal = "~1 (same workers)";
    rows.push({
      workload: "W7 long nodes",
      figure: `ms to all running, ${large.running_nodes.toLocaleString("en-US")} / ${small.running_nodes}`,
      value: large.ramp_ms,
      baseline: small.ramp_ms,
      ratio: ratio(large.ramp_ms, small.ramp_ms),
      target: "",
      met: null,
    });
    rows.push({
      workload: "W7 long nodes",
      figure: `PG tuples written/s ${at}`,
      value: large.tuples_written_per_s,
      baseline: small.tuples_written_per_s,
      ratio: w7.tuples_written_ratio,
      target: goal,
      met: null,
    });
    rows.push({
      workload: "W7 long nodes",
      figure: `PG write statements/s ${at}`,
      value: large.write_statements_per_s,
      baseline: small.write_statements_per_s,
      ratio: w7.write_statements_ratio,
      target: goal,
      met: null,
    });
    rows.push({
      workload: "W7 long nodes",
      figure: `PG commits/s ${at}`,
      value: large.commits_per_s,
      baseline: small.commits_per_s,
      ratio: w7.commits_ratio,
      target: "",
      met: null,
    });
  }
  const w8 = medianRun(c.w8);
  if (w8) {
    const throughput = ratio(w8.backlog_nodes_per_s, w8.alone_nodes_per_s);
    rows.push({
      workload: "W8 flow control",
      figure: `nodes/s beside ${w8.backlog_nodes.toLocaleString("en-US")} held capped (baseline: alone)`,
      value: w8.backlog_nodes_per_s,
      baseline: w8.alone_nodes_per_s,
      ratio: throughput,
      target: ">= 0.9 x alone",
      met: check(throughput, (v) => v >= 0.9),
    });
    rows.push({
      workload: "W8 flow control",
      figure: "machine CPU ms/unlimited node, beside vs alone",
      value: w8.backlog_machine_cpu_ms_per_node,
      baseline: w8.alone_machine_cpu_ms_per_node,
      ratio: ratio(w8.backlog_machine_cpu_ms_per_node, w8.alone_machine_cpu_ms_per_node),
      target: "",
      met: null,
    });
    rows.push({
      workload: "W8 flow control",
      figure: `capped calls/s beside the phase (baseline: alone; cap/hold allows ${w8.capped_calls_per_s_possible})`,
      value: w8.capped_calls_per_s,
      baseline: w8.capped_calls_per_s_alone,
      ratio: ratio(w8.capped_calls_per_s, w8.capped_calls_per_s_alone),
      target: "",
      met: null,
    });
    const most = maxInFlightOverRuns(c.w8);
    rows.push({
      workload: "W8 flow control",
      figure: `capped calls in flight, most seen (cap ${w8.cap})`,
      value: most,
      baseline: null,
      ratio: null,
      target: `<= ${w8.cap}`,
      met: check(most, (v) => v <= w8.cap),
    });
  }
  const rate = c.w8Rate[0];
  if (rate) {
    rows.push({
      workload: "W8 flow control",
      figure: `starts in ${rate.window_s} s at ${rate.rate_per_s}/s + burst ${rate.burst} (baseline: allowed)`,
      value: rate.starts,
      baseline: rate.allowed,
      ratio: rate.ratio,
      target: "0.9-1.1",
      met: check(rate.ratio, (v) => v >= 0.9 && v <= 1.1),
    });
  }
  const w9 = c.w9[0];
  if (w9) {
    const f = w9.footprint;
    const per = (figure: string, value: number) =>
      rows.push({ workload: "W9 capacity", figure, value, baseline: null, ratio: null, target: "", met: null });
    per("PG statements per node (transaction control included)", f.statements_per_node);
    per("PG commits per node", f.commits_per_node);
    per("PG WAL bytes per node (durable server)", f.wal_bytes_per_node);
    per("PG rows written per node", f.rows_written_per_node);
    per("PG database bytes per finished node", f.database_bytes_per_node);
    per("PG CPU ms per node", f.postgres_cpu_ms_per_node);
    per("Redis commands per node", f.redis_commands_per_node);
    per("Redis bytes per queued node", w9.redis_bytes_per_queued_node);
    const single = w9.scaling.find((s) => s.workers === 1 && s.schedulers === 1);
    for (const s of w9.scaling) {
      rows.push({
        workload: "W9 capacity",
        figure: `nodes/s, ${s.workers} worker(s), ${s.schedulers} scheduler(s) (baseline: 1 and 1)`,
        value: s.nodes_per_s,
        baseline: single?.nodes_per_s ?? null,
        ratio: ratio(s.nodes_per_s, single?.nodes_per_s),
        target: "",
        met: null,
      });
    }
  }
  return rows;
}

/** W8's most capped calls in flight over every run (not a median: the cap must hold in each). */
function maxInFlightOverRuns(runs: readonly W8Result[]): number | null {
  return runs.length === 0 ? null : Math.max(...runs.map((r) => r.capped_max_in_flight));
}

function cell(value: number | null, digits = 2): string {
  if (value === null) return "-";
  const abs = Math.abs(value);
  const fixed = abs >= 100 ? value.toFixed(0) : value.toFixed(digits);
  return fixed.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** The results table as text. */
export function renderTable(rows: readonly Row[]): string {
  const header = ["workload", "figure", "trellis", "baseline", "ratio", "target", "met"];
  const body = rows.map((r) => [
    r.workload,
    r.figure,
    cell(r.value),
    cell(r.baseline),
    cell(r.ratio),
    r.target,
    r.met === null ? "" : r.met ? "yes" : "NO",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const numeric = new Set([2, 3, 4]);
  const line = (row: string[]) =>
    row.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ");
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [line(header), rule, ...body.map(line)].join("\n");
}

/** Inputs of {@link resultsJson}. */
export interface ResultsMeta {
  date: string;
  mode: "full" | "quick";
  runs: number;
  sizes: Sizes;
  workerConcurrency: number;
  machine: MachineInfo;
  durationS: number;
}

/** `bench/results/latest.json`: the medians of every figure, each run's figures, the machine and the errors. */
export function resultsJson(c: Collected, meta: ResultsMeta): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const w1 = medianRun(c.w1);
  const b1 = medianRun(c.w1Baseline);
  if (w1 || b1) {
    out.w1 = {
      nodes_per_s: round(w1?.nodes_per_s),
      baseline_nodes_per_s: round(b1?.jobs_per_s),
      ratio: round(ratio(w1?.nodes_per_s, b1?.jobs_per_s), 3),
      target_ratio: 0.6,
      machine_cpu_ms_per_node: round(w1?.machine_cpu_ms_per_node, 3),
      baseline_machine_cpu_ms_per_job: round(b1?.machine_cpu_ms_per_job, 3),
      machine_cpu_ratio: round(ratio(w1?.machine_cpu_ms_per_node, b1?.machine_cpu_ms_per_job), 3),
      target_machine_cpu_ratio: 2.5,
      aim_machine_cpu_ratio: 1.5,
      ...rounded(w1),
      baseline: rounded(b1),
      per_run: c.w1.map(rounded),
      baseline_per_run: c.w1Baseline.map(rounded),
    };
  }
  const w2 = medianRun(c.w2);
  const b2 = medianRun(c.w2Baseline);
  if (w2 || b2) {
    out.w2 = {
      headline: "hop_from_response: parent's ExecuteNode response sent -> child's ExecuteNode received",
      hop_from_response_p50_ms: round(w2?.hop_from_response_p50_ms),
      hop_from_response_p99_ms: round(w2?.hop_from_response_p99_ms),
      baseline_hop_p50_ms: round(b2?.hop_p50_ms),
      baseline_hop_p99_ms: round(b2?.hop_p99_ms),
      ratio_p50: round(ratio(w2?.hop_from_response_p50_ms, b2?.hop_p50_ms)),
      ratio_p99: round(ratio(w2?.hop_from_response_p99_ms, b2?.hop_p99_ms)),
      target_hop_p50_ms: 3,
      aim_hop_p50_ms: 2,
      target_hop_p99_ms: 15,
      machine_cpu_ms_per_node: round(w2?.machine_cpu_ms_per_node, 3),
      baseline_machine_cpu_ms_per_job: round(b2?.machine_cpu_ms_per_job, 3),
      machine_cpu_ratio: round(ratio(w2?.machine_cpu_ms_per_node, b2?.machine_cpu_ms_per_job), 3),
      ...rounded(w2),
      baseline: rounded(b2),
      per_run: c.w2.map(rounded),
      baseline_per_run: c.w2Baseline.map(rounded),
    };
  }
  const w3 = medianRun(c.w3);
  if (w3) out.w3 = { ...rounded(w3), target_create_ms: 2000, target_per_node_ratio: 1.3, per_run: c.w3.map(rounded) };
  const w4 = medianRun(c.w4);
  if (w4) out.w4 = { ...rounded(w4), target_apply_ms: 300, per_run: c.w4.map(rounded) };
  const w5 = medianRun(c.w5);
  if (w5) {
    const top = w5.top_statements.map((s) => ({ ...s, per_node: round(s.per_node, 3) }));
    out.w5 = {
      ...rounded(w5),
      top_statements: top,
      target_statements_per_node: 4,
      target_rss_ratio: 1.2,
      per_run: c.w5.map((r) => rounded({ ...r, top_statements: undefined })),
    };
  }
  const w7 = c.w7[0];
  if (w7) {
    out.w7 = {
      ...rounded(w7),
      goal: "write load proportional to the workers, not the running nodes: ratios ~1 (every case runs on the same workers)",
      cases: w7.cases.map((k) => ({
        ...rounded(k),
        top_statements: k.top_statements.map((t) => ({ ...t, calls_per_s: round(t.calls_per_s) })),
      })),
    };
  }
  const w8 = medianRun(c.w8);
  const w8Rate = c.w8Rate[0];
  if (w8 || w8Rate) {
    out.w8 = {
      nodes_per_s_alone: round(w8?.alone_nodes_per_s),
      nodes_per_s_backlog: round(w8?.backlog_nodes_per_s),
      throughput_ratio: round(ratio(w8?.backlog_nodes_per_s, w8?.alone_nodes_per_s), 3),
      target_throughput_ratio: 0.9,
      capped_max_in_flight: maxInFlightOverRuns(c.w8),
      ...rounded(w8),
      per_run: c.w8.map(rounded),
      rate: w8Rate ? { ...rounded(w8Rate), target_ratio: [0.9, 1.1] } : undefined,
    };
  }
  const w9 = c.w9[0];
  if (w9) {
    out.w9 = {
      ...rounded(w9),
      footprint: {
        ...rounded(w9.footprint),
        redis_top_commands: w9.footprint.redis_top_commands.map((r) => ({ ...r, per_node: round(r.per_node, 3) })),
        top_statements: w9.footprint.top_statements.map((t) => ({
          ...t,
          per_node: round(t.per_node, 3),
          wal_bytes_per_node: round(t.wal_bytes_per_node, 1),
        })),
      },
      scaling: w9.scaling.map(rounded),
    };
  }
  return {
    ...out,
    machine: meta.machine,
    runs: meta.runs,
    mode: meta.mode,
    date: meta.date,
    duration_s: round(meta.durationS, 1),
    worker_concurrency: meta.workerConcurrency,
    sizes: meta.sizes,
    errors: c.errors,
  };
}
