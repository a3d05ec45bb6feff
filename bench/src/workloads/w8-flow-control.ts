import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { WorkflowAction } from "@trellis/proto";
import { nowMs } from "../harness/clock.js";
import type { BenchContext } from "../harness/context.js";
import { Deadline, waitFor } from "../harness/deadline.js";
import type { ResourceUsage } from "../harness/monitor.js";
import type { CallRecord } from "../harness/node-service-client.js";
import { type EngineStack, noopStackOptions, withEngineStack } from "../harness/stack.js";
import { ratio } from "../harness/stats.js";
import {
  NOOP_CAPABILITY,
  type NodeInit,
  assertAllPassed,
  createWorkflow,
  independentNodes,
  lastFinishedAtMs,
  waitTheseWorkflowsSucceeded,
} from "../harness/workflows.js";

/** Capability of W8's backlog: its implicit key `capability:bench.capped` is capped (sizes.w8.cap). */
export const CAPPED_CAPABILITY = "bench.capped";
/** Capability of W8's rate window: its implicit key `capability:bench.rated` gets a rate (sizes.w8.rate per s). */
export const RATED_CAPABILITY = "bench.rated";

/** The implicit limit key of a capability. */
function capabilityKey(capability: string): string {
  return `capability:${capability}`;
}

/** One W8 run: the unlimited capability's throughput alone and beside the capped backlog, on one stack. */
export interface W8Result {
  /** The phases in the order they ran (alternating between runs: the machine drifts). */
  order: string;
  /** Unlimited no-op nodes per phase (`workflows` x `nodesPerWorkflow`, as W1). */
  nodes: number;
  /** W1's figure with no capped node waiting (the limit set, idle): nodes / (first create sent -> last finished_at). */
  alone_nodes_per_s: number;
  /** The same while `backlog_nodes` nodes of the capped capability wait held back behind its cap. */
  backlog_nodes_per_s: number;
  /** backlog_nodes_per_s / alone_nodes_per_s of this run (the table's ratio is between the medians). */
  ratio: number | null;
  alone_elapsed_ms: number;
  backlog_elapsed_ms: number;
  /** Busy CPU of the whole machine over each phase per unlimited node (the backlog phase's includes the capped work). */
  alone_machine_cpu_ms_per_node: number;
  backlog_machine_cpu_ms_per_node: number;
  /** Capped nodes created (every one ready at once). */
  backlog_nodes: number;
  /** max_concurrency of `capability:bench.capped`. */
  cap: number;
  /** How long the NodeService holds each capped call. */
  capped_hold_ms: number;
  /** First backlog CreateWorkflow sent -> no capped node left unweighed by the claim and the cap full. */
  held_ms: number;
  /** Capped nodes PENDING and held back, just before the backlog phase's first create and just after its end. */
  held_at_start: number;
  held_at_end: number;
  /** Capped ExecuteNode calls received per second during the backlog phase (first create -> last finished_at). */
  capped_calls_per_s: number;
  /** The same over 3 s with nothing else running, once the backlog is held and before the phase. */
  capped_calls_per_s_alone: number;
  /** What the cap and the hold allow at most: cap x 1,000 / capped_hold_ms calls per second. */
  capped_calls_per_s_possible: number;
  /** Capped ExecuteNode calls received from the backlog's creation to its cancellation. */
  capped_calls: number;
  /** The most capped calls in flight at once at the NodeService (received, not yet answered) before the cancel. */
  capped_max_in_flight: number;
  /** CPU per process and PostgreSQL wait states over the backlog phase. */
  resources: ResourceUsage;
  /** The same over the phase alone. */
  resources_alone: ResourceUsage;
}

/** W8's rate window (once per invocation): starts of a rate-limited capability against what its bucket allows. */
export interface W8RateResult {
  /** Units per second of `capability:bench.rated` (one unit per start), and its burst (= rate). */
  rate_per_s: number;
  burst: number;
  /** The window, from the first ExecuteNode call received. */
  window_s: number;
  /** Rated nodes created at once; 1.5 x what the window allows, so some are still held at its end. */
  backlog_nodes: number;
  /** ExecuteNode calls received in the window. */
  starts: number;
  /** rate x window + burst: the most the bucket allows over the window. */
  allowed: number;
  /** starts / allowed (target: within 10%). */
  ratio: number;
  /** Starts in the window after its first second (which takes the burst), per second. */
  rate_after_first_s: number;
  /** Calls received per second of the window. */
  starts_per_s: number[];
  /** First CreateWorkflow sent -> the first call received. */
  first_call_ms: number;
  /** CPU per process and PostgreSQL wait states over the window. */
  resources: ResourceUsage;
}

/** A W1-style phase's figures, and its ends for the capped calls counted during it. */
interface Phase {
  nodes: number;
  nodesPerS: number;
  elapsedMs: number;
  machineCpuMsPerNode: number;
  resources: ResourceUsage;
  firstSent: number;
  finishedAt: number;
}

/** `count` independent nodes of `capability`, `c-0` .. `c-<count-1>`, held `holdMs` by the NodeService (0: none). */
function limitedNodes(count: number, capability: string, holdMs: number): NodeInit[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `c-${i}`,
    capability,
    ...(holdMs > 0 ? { input: { sleep_ms: holdMs } } : {}),
  }));
}

/** `total` split into workflows of at most `perWorkflow` nodes. */
function workflowSizes(total: number, perWorkflow: number): number[] {
  return Array.from({ length: Math.ceil(total / perWorkflow) }, (_, i) =>
    Math.min(perWorkflow, total - i * perWorkflow),
  );
}

/** Every call the NodeService recorded for the workflows `ids`. */
async function callsOf(ctx: BenchContext, ids: readonly string[]): Promise<CallRecord[]> {
  return (await Promise.all(ids.map((id) => ctx.nodeService.calls(id)))).flat();
}

/**
 * The most calls in flight at once (received, not yet answered) among `calls` received before `before`; a call
 * answered at the very time another is received does not overlap it.
 */
export function maxInFlight(calls: readonly CallRecord[], before = Number.POSITIVE_INFINITY): number {
  const edges: [number, number][] = [];
  for (const c of calls) {
    if (c.receivedAt >= before) continue;
    edges.push([c.receivedAt, 1], [c.respondedAt > 0 ? c.respondedAt : Number.POSITIVE_INFINITY, -1]);
  }
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let most = 0;
  for (const [, delta] of edges) {
    now += delta;
    most = Math.max(most, now);
  }
  return most;
}

/** The capped capability's nodes now: ready and not yet weighed by a claim, held back, and holding the key. */
async function cappedCounts(stack: EngineStack): Promise<{ unweighed: number; held: number; holding: number }> {
  const [row] = await stack.query<{ unweighed: string; held: string; holding: string }>(
    `select count(*) filter (where status = 'PENDING' and held_by is null) as unweighed,
            count(*) filter (where status = 'PENDING' and held_by is not null) as held,
            count(*) filter (where status in ('QUEUED', 'RUNNING')) as holding
       from nodes where capability = $1`,
    [CAPPED_CAPABILITY],
  );
  return { unweighed: Number(row?.unweighed ?? 0), held: Number(row?.held ?? 0), holding: Number(row?.holding ?? 0) };
}

/**
 * W1 on a shared stack: `workflows` x `nodesPerWorkflow` independent no-op nodes created at once; nodes per second
 * from the first create sent to the last of these workflows' `finished_at`, every node checked PASS.
 */
async function unlimitedPhase(ctx: BenchContext, stack: EngineStack, tag: string, deadline: Deadline): Promise<Phase> {
  const { workflows, nodesPerWorkflow } = ctx.sizes.w8;
  const nodes = workflows * nodesPerWorkflow;
  const specs = Array.from({ length: workflows }, () => independentNodes(nodesPerWorkflow));
  const monitor = await stack.monitor({ "node-service": ctx.nodeService.pid });
  const firstSent = nowMs();
  const created = await Promise.all(specs.map((s, i) => createWorkflow(stack, `w8-${tag}-${i}`, s, deadline)));
  const ids = created.map((c) => c.id);
  await waitTheseWorkflowsSucceeded(stack, ids, deadline, 50);
  const resources = await monitor.stop();
  const finishedAt = await lastFinishedAtMs(stack, ids);
  await assertAllPassed(stack, nodes, ids);
  const elapsedMs = finishedAt - firstSent;
  return {
    nodes,
    nodesPerS: nodes / (elapsedMs / 1000),
    elapsedMs,
    machineCpuMsPerNode: (resources.machine_busy_cpu_s * 1000) / nodes,
    resources,
    firstSent,
    finishedAt,
  };
}

/**
 * Unmeasured, before the phases: a quarter of a phase's unlimited nodes and twice the cap of capped ones, so that
 * neither phase pays for the fresh stack's first work (compiling the apps' hot paths, the pools' first
 * connections and statements, the queues' first jobs), which would favour whichever phase runs second.
 */
async function warmUp(ctx: BenchContext, stack: EngineStack, deadline: Deadline): Promise<void> {
  const { workflows, nodesPerWorkflow, cap, cappedHoldMs } = ctx.sizes.w8;
  const specs = Array.from({ length: Math.max(1, Math.round(workflows / 4)) }, () =>
    independentNodes(nodesPerWorkflow),
  );
  specs.push(limitedNodes(2 * cap, CAPPED_CAPABILITY, cappedHoldMs));
  const created = await Promise.all(specs.map((s, i) => createWorkflow(stack, `w8-warm-up-${i}`, s, deadline)));
  await waitTheseWorkflowsSucceeded(
    stack,
    created.map((c) => c.id),
    deadline,
    50,
  );
}

/** How long the capped key's calls are counted with nothing else running, once its backlog is held. */
const CAPPED_ALONE_MS = 3_000;

/** The backlog phase's own figures. */
interface BacklogPhase {
  phase: Phase;
  heldMs: number;
  heldAtStart: number;
  heldAtEnd: number;
  cappedCallsPerSAlone: number;
  cappedCalls: number;
  cappedCallsDuring: number;
  maxInFlight: number;
}

/**
 * Creates the capped backlog and waits until the claim has weighed every node of it (none left unweighed: the
 * unlimited nodes' claims no longer meet it) and the cap is full; runs the unlimited phase beside it; checks that
 * nodes were still held back at its end; then cancels the backlog and waits until nothing of it holds the key and
 * the NodeService has answered every call it got, so the next phase runs alone.
 */
async function backlogPhase(ctx: BenchContext, stack: EngineStack, deadline: Deadline): Promise<BacklogPhase> {
  const { backlog, backlogPerWorkflow, cap, cappedHoldMs } = ctx.sizes.w8;
  const createdAt = nowMs();
  const created = await Promise.all(
    workflowSizes(backlog, backlogPerWorkflow).map((n, i) =>
      createWorkflow(stack, `w8-capped-${i}`, limitedNodes(n, CAPPED_CAPABILITY, cappedHoldMs), deadline),
    ),
  );
  const ids = created.map((c) => c.id);
  await waitFor(
    `the ${backlog} capped nodes held back and the cap of ${cap} full`,
    deadline,
    async () => {
      stack.assertRunning();
      const now = await cappedCounts(stack);
      return now.unweighed === 0 && now.holding >= cap ? true : undefined;
    },
    50,
  );
  const heldMs = nowMs() - createdAt;
  // The capped key's own pace with nothing else running, for comparison with its pace beside the unlimited phase.
  const aloneFrom = nowMs();
  await waitFor(
    "the capped key's pace alone",
    deadline,
    () => {
      stack.assertRunning();
      return nowMs() >= aloneFrom + CAPPED_ALONE_MS ? true : undefined;
    },
    100,
  );
  const aloneTo = nowMs();
  const heldAtStart = (await cappedCounts(stack)).held;
  const phase = await unlimitedPhase(ctx, stack, "backlog", deadline);
  const heldAtEnd = (await cappedCounts(stack)).held;
  if (heldAtEnd === 0) {
    throw new Error(
      `the capped backlog ran out during the measurement (${heldAtStart} held at its start): ` +
        "make sizes.w8.backlog larger",
    );
  }

  const cancelledAt = nowMs();
  await Promise.all(
    ids.map((workflowId) =>
      stack.api.updateWorkflow({ workflowId, action: WorkflowAction.CANCEL }, { deadline: deadline.asDate(60_000) }),
    ),
  );
  await waitFor(
    "the capped backlog cancelled",
    deadline,
    async () => {
      stack.assertRunning();
      const now = await cappedCounts(stack);
      return now.unweighed + now.held + now.holding === 0 ? true : undefined;
    },
    100,
  );
  // A cancelled call is aborted at the worker; the NodeService still answers it after its hold.
  const calls = await waitFor(
    "the NodeService to answer every capped call",
    deadline,
    async () => {
      const all = await callsOf(ctx, ids);
      return all.every((c) => c.respondedAt > 0) ? all : undefined;
    },
    100,
  );
  // Calls received after the cancel began are left out: a cancelled node gives its slot back while its call may
  // still be in flight at the NodeService, and a workflow not cancelled yet may start a node in that slot.
  const beforeCancel = calls.filter((c) => c.receivedAt < cancelledAt);
  const receivedIn = (from: number, to: number) =>
    beforeCancel.filter((c) => c.receivedAt >= from && c.receivedAt <= to).length;
  return {
    phase,
    heldMs,
    heldAtStart,
    heldAtEnd,
    cappedCallsPerSAlone: receivedIn(aloneFrom, aloneTo) / ((aloneTo - aloneFrom) / 1000),
    cappedCalls: beforeCancel.length,
    cappedCallsDuring: receivedIn(phase.firstSent, phase.finishedAt),
    maxInFlight: maxInFlight(beforeCancel),
  };
}

/**
 * W8 flow control, what a saturated limited key costs everyone else: on one stack whose worker serves the no-op
 * capability and a capped one (`capability:bench.capped`, max_concurrency `cap`, each call held `cappedHoldMs`),
 * W1's throughput of the no-op capability alone and while `backlog` capped nodes wait held back, in alternating
 * order from run to run; and the most capped calls the NodeService saw in flight at once.
 */
export async function runW8(ctx: BenchContext, label: string, run: number): Promise<W8Result> {
  const { workflows, nodesPerWorkflow, backlog, cap, cappedHoldMs } = ctx.sizes.w8;
  const nodes = workflows * nodesPerWorkflow;
  const order = run % 2 === 1 ? (["alone", "backlog"] as const) : (["backlog", "alone"] as const);
  const options = noopStackOptions(ctx, label);
  return withEngineStack({ ...options, capabilities: [NOOP_CAPABILITY, CAPPED_CAPABILITY] }, async (stack) => {
    const deadline = new Deadline(Math.max(180_000, (2 * nodes + backlog) * 30), `${label} (W8)`);
    // Set before either phase, so the two differ only by the backlog: every claim takes the limited path in both.
    await stack.api.setLimit(
      { limit: { key: capabilityKey(CAPPED_CAPABILITY), maxConcurrency: cap } },
      { deadline: deadline.asDate(30_000) },
    );
    await warmUp(ctx, stack, deadline);
    let alone: Phase | undefined;
    let withBacklog: BacklogPhase | undefined;
    for (const phase of order) {
      if (phase === "alone") {
        alone = await unlimitedPhase(ctx, stack, "alone", deadline);
        ctx.log(`w8: alone ${alone.nodesPerS.toFixed(0)} nodes/s`);
      } else {
        withBacklog = await backlogPhase(ctx, stack, deadline);
        ctx.log(
          `w8: beside the capped backlog ${withBacklog.phase.nodesPerS.toFixed(0)} nodes/s (held ` +
            `${withBacklog.heldAtStart} -> ${withBacklog.heldAtEnd}, all held ${Math.round(withBacklog.heldMs)} ms ` +
            "after the first create)",
        );
      }
    }
    const a = alone!;
    const b = withBacklog!;
    const cappedSeconds = (b.phase.finishedAt - b.phase.firstSent) / 1000;
    await ctx.nodeService.reset();
    return {
      order: order.join(", "),
      nodes,
      alone_nodes_per_s: a.nodesPerS,
      backlog_nodes_per_s: b.phase.nodesPerS,
      ratio: ratio(b.phase.nodesPerS, a.nodesPerS),
      alone_elapsed_ms: a.elapsedMs,
      backlog_elapsed_ms: b.phase.elapsedMs,
      alone_machine_cpu_ms_per_node: a.machineCpuMsPerNode,
      backlog_machine_cpu_ms_per_node: b.phase.machineCpuMsPerNode,
      backlog_nodes: backlog,
      cap,
      capped_hold_ms: cappedHoldMs,
      held_ms: b.heldMs,
      held_at_start: b.heldAtStart,
      held_at_end: b.heldAtEnd,
      capped_calls_per_s: b.cappedCallsDuring / cappedSeconds,
      capped_calls_per_s_alone: b.cappedCallsPerSAlone,
      capped_calls_per_s_possible: (cap * 1_000) / cappedHoldMs,
      capped_calls: b.cappedCalls,
      capped_max_in_flight: b.maxInFlight,
      resources: b.phase.resources,
      resources_alone: a.resources,
    };
  });
}

/**
 * W8's rate window: on a fresh stack, `capability:bench.rated` limited to `rate` starts per second with a burst of
 * `rate` (the bucket full when set), and 1.5 x what the window allows of no-op rated nodes created at once; the
 * ExecuteNode calls the NodeService receives over `rateWindowMs` from the first one, against rate x window + burst.
 */
export async function runW8Rate(ctx: BenchContext, label: string): Promise<W8RateResult> {
  const { rate, rateWindowMs, backlogPerWorkflow } = ctx.sizes.w8;
  const burst = rate;
  const windowS = rateWindowMs / 1000;
  const allowed = rate * windowS + burst;
  const backlog = Math.ceil(allowed * 1.5);
  const options = noopStackOptions(ctx, label);
  return withEngineStack({ ...options, capabilities: [RATED_CAPABILITY] }, async (stack) => {
    const deadline = new Deadline(rateWindowMs + 180_000, `${label} (W8 rate)`);
    await stack.api.setLimit(
      { limit: { key: capabilityKey(RATED_CAPABILITY), rate, period: durationFromMs(1_000), burst } },
      { deadline: deadline.asDate(30_000) },
    );
    const monitor = await stack.monitor({ "node-service": ctx.nodeService.pid });
    const firstSent = nowMs();
    const created = await Promise.all(
      workflowSizes(backlog, backlogPerWorkflow).map((n, i) =>
        createWorkflow(stack, `w8-rated-${i}`, limitedNodes(n, RATED_CAPABILITY, 0), deadline),
      ),
    );
    const ids = created.map((c) => c.id);
    const firstCall = await waitFor(
      "the first rated ExecuteNode call",
      deadline,
      async () => {
        stack.assertRunning();
        const calls = await callsOf(ctx, ids);
        return calls.length > 0 ? Math.min(...calls.map((c) => c.receivedAt)) : undefined;
      },
      50,
    );
    const end = firstCall + rateWindowMs;
    // A second past the window's end, for a call received just before it to be in the records.
    await waitFor(
      "the rate window to end",
      deadline,
      () => {
        stack.assertRunning();
        return nowMs() >= end + 1_000 ? true : undefined;
      },
      500,
    );
    const resources = await monitor.stop();
    const calls = await callsOf(ctx, ids);
    if (calls.length >= backlog) {
      throw new Error(`all ${backlog} rated nodes started (the backlog ran out): the key did not hold its rate`);
    }
    const received = calls.map((c) => c.receivedAt).filter((t) => t >= firstCall && t <= end);
    const perSecond = Array.from({ length: Math.ceil(windowS) }, () => 0);
    for (const t of received) perSecond[Math.min(perSecond.length - 1, Math.floor((t - firstCall) / 1000))]! += 1;
    await ctx.nodeService.reset();
    return {
      rate_per_s: rate,
      burst,
      window_s: windowS,
      backlog_nodes: backlog,
      starts: received.length,
      allowed,
      ratio: received.length / allowed,
      rate_after_first_s: received.filter((t) => t >= firstCall + 1_000).length / (windowS - 1),
      starts_per_s: perSecond,
      first_call_ms: firstCall - firstSent,
      resources,
    };
  });
}
