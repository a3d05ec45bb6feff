/** How big each workload is. */
export interface Sizes {
  /** W1 and its baseline: workflows created concurrently, each of independent nodes. */
  w1: { workflows: number; nodesPerWorkflow: number };
  /** W2 and its baseline: nodes of the chain. */
  w2: { chainLength: number };
  /** W3: middle width of the small and the large wide workflow (fitted to the engine's limits, see wideShape). */
  w3: { smallMiddle: number; largeMiddle: number };
  /** W4: nodes the planner inserts. */
  w4: { inserted: number };
  /**
   * W5: nodes run before the first footprint reading and in all before the second (null: no second reading),
   * as batches of `workflowsPerBatch` workflows of `nodesPerWorkflow` independent nodes created concurrently.
   */
  w5: { firstNodes: number; secondNodes: number | null; nodesPerWorkflow: number; workflowsPerBatch: number };
  /**
   * W7: the numbers of long nodes run at once (each case in turn, on the same stack), as workflows of
   * `nodesPerWorkflow` independent nodes; how long the NodeService holds each call; and the steady window measured
   * once all of a case's nodes are RUNNING and 11 s more have passed (for PostgreSQL's statistics to catch up). It
   * must end before the first of them finishes: the hold covers the start of all nodes, the 11 s and the window.
   */
  w7: { counts: number[]; nodesPerWorkflow: number; holdMs: number; windowMs: number };
  /**
   * W8 flow control. The throughput pair: `workflows` x `nodesPerWorkflow` independent no-op nodes of an unlimited
   * capability, alone and then (or first) while `backlog` nodes of a capability capped at `cap` (`capability:<it>`,
   * as workflows of `backlogPerWorkflow`; the NodeService holds each call `cappedHoldMs`) wait held back. The rate
   * window: a capability limited to `rate` starts per second (burst = rate) with a backlog of 1.5 x what the window
   * allows, its starts counted over `rateWindowMs`.
   */
  w8: {
    workflows: number;
    nodesPerWorkflow: number;
    backlog: number;
    backlogPerWorkflow: number;
    cap: number;
    cappedHoldMs: number;
    rate: number;
    rateWindowMs: number;
  };
}

/** The sizes of issue 7. */
export const FULL_SIZES: Sizes = {
  w1: { workflows: 100, nodesPerWorkflow: 100 },
  w2: { chainLength: 200 },
  w3: { smallMiddle: 1_000, largeMiddle: 10_000 },
  w4: { inserted: 1_000 },
  w5: { firstNodes: 10_000, secondNodes: 100_000, nodesPerWorkflow: 100, workflowsPerBatch: 100 },
  w7: { counts: [100, 5_000], nodesPerWorkflow: 100, holdMs: 80_000, windowMs: 30_000 },
  w8: {
    workflows: 100,
    nodesPerWorkflow: 100,
    backlog: 10_000,
    backlogPerWorkflow: 1_000,
    cap: 4,
    cappedHoldMs: 1_000,
    rate: 20,
    rateWindowMs: 60_000,
  },
};

/** `--quick`: the same shapes, smaller, for iterating (about a minute at the target speeds). */
export const QUICK_SIZES: Sizes = {
  w1: { workflows: 20, nodesPerWorkflow: 100 },
  w2: { chainLength: 100 },
  w3: { smallMiddle: 200, largeMiddle: 2_000 },
  w4: { inserted: 1_000 },
  w5: { firstNodes: 2_000, secondNodes: null, nodesPerWorkflow: 100, workflowsPerBatch: 20 },
  w7: { counts: [100, 1_000], nodesPerWorkflow: 100, holdMs: 30_000, windowMs: 10_000 },
  w8: {
    workflows: 20,
    nodesPerWorkflow: 100,
    backlog: 3_000,
    backlogPerWorkflow: 1_000,
    cap: 4,
    cappedHoldMs: 1_000,
    rate: 20,
    rateWindowMs: 15_000,
  },
};
