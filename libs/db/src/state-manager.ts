import type { JsonObject } from "@bufbuild/protobuf";
import type { SignalInput, SignalOutcome } from "./signal-store.js";
import type { FieldMask, Value } from "@bufbuild/protobuf/wkt";
import type { EffectiveRetryPolicy, LimitSpec } from "@trellis/core";
import type {
  CreateWorkflowRequest,
  ErrorKind,
  Node,
  NodeAttempt,
  NodeEdit,
  Schedule,
  Workflow,
  WorkflowAction,
  WorkflowEvent,
  WorkflowStatus,
} from "@trellis/proto";

/** What CreateWorkflow stores. */
export interface CreateWorkflowInput {
  name: string;
  nodes: readonly Node[];
  input?: JsonObject | undefined;
  labels?: Record<string, string> | undefined;
  /** Idempotency key: a second create with the same id returns the first workflow. */
  requestId?: string | undefined;
  /** Spending limits by usage unit: when usage reaches one the workflow is PAUSED. */
  budget?: Record<string, number> | undefined;
  /** The W3C traceparent of the workflow's span (tracing on): its node attempts' spans become its children. */
  traceParent?: string | undefined;
}

/** Result of createWorkflow: `created` is false when `requestId` matched an existing workflow. */
export interface CreateWorkflowResult {
  workflow: Workflow;
  created: boolean;
}

/** What ForkWorkflow asks for. */
export interface ForkWorkflowInput {
  /** The source, in any state; only read. */
  workflowId: string;
  /** These nodes and everything downstream of them run again (with every node that is not PASS). */
  fromNodeIds: readonly string[];
  /** New inputs of some re-run nodes, by node id. */
  inputs?: Readonly<Record<string, JsonObject>> | undefined;
  /** Idempotency key (shared with CreateWorkflow's): a second fork with the same id returns the first workflow. */
  requestId?: string | undefined;
  /** The W3C traceparent of the fork's span (tracing on), as CreateWorkflow's. */
  traceParent?: string | undefined;
}

/** Result of forkWorkflow: `created` is false when `requestId` matched an existing workflow. */
export interface ForkWorkflowResult {
  workflow: Workflow;
  created: boolean;
}

/** A page request of listWorkflows. */
export interface ListWorkflowsQuery {
  /** 1..500. */
  pageSize: number;
  pageToken?: string | undefined;
  status?: WorkflowStatus | undefined;
  labelSelector?: Record<string, string> | undefined;
}

/** A page of workflows (without nodes), newest first. */
export interface WorkflowPage {
  workflows: Workflow[];
  nextPageToken: string;
}

/** Changes of UpdateWorkflow: name/labels/budget when given, then the action. */
export interface UpdateWorkflowInput {
  name?: string | undefined;
  labels?: Record<string, string> | undefined;
  /**
   * The new budget, replacing the old one (`{}`: none). A budget the workflow's usage already reaches pauses a PENDING
   * or RUNNING workflow in the same transaction (`workflow.budget_exceeded`).
   */
  budget?: Record<string, number> | undefined;
  action?: WorkflowAction | undefined;
}

export type { LimitSpec };

/** A limit with what it holds now (ListLimits, SetLimit). */
export interface LimitState extends LimitSpec {
  /** Set by SetLimit; false for a key that only a THROTTLED answer paused. */
  configured: boolean;
  /** Until when a THROTTLED answer paused the key; null when it is not paused. */
  throttledUntil: Date | null;
  /** QUEUED or RUNNING nodes holding the key now. */
  running: number;
  /** Ready (PENDING) nodes held back by a limit now that hold the key. */
  waiting: number;
  /** Units in the token bucket now, refilled since it was last debited; null without a rate. */
  available: number | null;
  /** THROTTLED answers that paused this key so far. */
  throttledTotal: number;
}

/** What UpdateSchedule changes: the fields given; the others are kept. */
export interface UpdateScheduleInput {
  cron?: string | undefined;
  /** IANA name; `""` means UTC. */
  timezone?: string | undefined;
  workflow?: CreateWorkflowRequest | undefined;
  paused?: boolean | undefined;
}

/** One tick a scheduler ran. */
export interface ScheduleTick {
  scheduleId: string;
  /** The tick: the schedule's `next_run_at` when it was taken (its request id is `schedule/<id>/<tick ISO>`). */
  tick: Date;
  /** The workflow of the tick; null when CreateWorkflow refused it (`refused`). */
  workflowId: string | null;
  /** False when the tick's request id had created its workflow already. */
  created: boolean;
  /** The schedule's next tick now. */
  nextRunAt: Date;
  /** Why CreateWorkflow refused the tick's workflow, if it did. */
  refused?: string;
}

/** What runDueSchedules did, and when to look again. */
export interface ScheduleTicks {
  ticks: ScheduleTick[];
  /** Milliseconds until the earliest not-paused schedule is due, by PostgreSQL's clock (<= 0: due); null: none. */
  nextDueInMs: number | null;
}

/** A node put on its capability's queue: what the scheduler hands to BullMQ. */
export interface QueuedNode {
  workflowId: string;
  nodeId: string;
  capability: string;
  /** Deterministic BullMQ job id: `<workflow>/<node>/<queue generation>` (no ':'). */
  jobId: string;
  retryPolicy: EffectiveRetryPolicy;
  /** Run no earlier than this many ms from now (a retry's backoff). */
  delayMs?: number;
  /** 0..10: taken from its queue before the capability's nodes of lower priority. @default 0 */
  priority?: number;
}

/** A node a worker has moved to RUNNING, with everything ExecuteNode needs. */
export interface StartedNode {
  node: Node;
  workflowName: string;
  workflowInput: JsonObject;
  parentOutputs: Record<string, Value>;
  /** Fencing token: the result is recorded only while the node still holds it. */
  lease: string;
  attempt: number;
  timeoutMs: number;
  retryPolicy: EffectiveRetryPolicy;
  /** When the node was queued, for the queue-wait metric. */
  queuedAt: Date | null;
  /** The workflow's stored traceparent (workflows.trace_parent), the parent of this attempt's spans; null when none. */
  traceParent: string | null;
  /** Whether any node waits on this one: a worker may then ask its PASS to start a child locally. */
  hasChildren: boolean;
}

/** What the NodeService answered (or why the call failed). */
export type NodeResult = (
  | { kind: "success"; output: Value | undefined; edits: readonly NodeEdit[] }
  | { kind: "error"; errorKind: ErrorKind; message: string }
  /** The provider said "too many requests": run again after `retryAfterMs`, pausing the node's keys until then. */
  | { kind: "throttled"; retryAfterMs: number; message: string }
) & {
  /** What the attempt spent ("tokens", "cost_usd", ...), as the NodeService reported; recorded with any outcome. */
  usage?: Readonly<Record<string, number>>;
};

/** One result to record, with the lease it was obtained under. */
export interface ResultToRecord {
  workflowId: string;
  nodeId: string;
  lease: string;
  result: NodeResult;
  /**
   * On PASS, start one child this PASS makes ready, of the node's own capability (when it is in
   * RecordOptions.capabilities), for the worker session of RecordOptions.workerSession, in the same transaction (eager
   * local start): the worker runs it next in the same slot, without a queue round trip. @default false
   */
  startLocal?: boolean;
  /**
   * The call was made before the node's start was written (readQueued): `lease` is ignored, and the result's
   * transaction first records QUEUED -> RUNNING (started at `startedAt`) if the node is still QUEUED under `queueGen`
   * (else the result is stale), then the result as under the lease that start gave.
   */
  unstarted?: { queueGen: number; startedAt: Date };
  /**
   * The attempt was started locally by a parent's PASS and has no job of its own: a retry then gets a new job
   * (returned in RecordedResults.dispatched, with its delay) instead of BullMQ re-delivering one. @default false
   */
  startedLocally?: boolean;
}

/** Options of recordResults. */
export interface RecordOptions {
  /**
   * Queue the children a PASS makes ready in the same transaction and return them (eager dispatch); the
   * caller must then enqueue their jobs. Without it the scheduler is notified and claims them. @default false
   */
  dispatch?: boolean;
  /** The session of the worker that records (for items with `startLocal`). */
  workerSession?: string;
  /** Capabilities the recording worker serves (for items with `startLocal`). */
  capabilities?: readonly string[];
}

/** What recordResults did: one outcome per item, the nodes it queued (with `dispatch`), the nodes it started. */
export interface RecordedResults {
  outcomes: RecordOutcome[];
  dispatched: QueuedNode[];
  /** Per item: the child started for the recording worker (`startLocal`), else null. */
  started: (StartedNode | null)[];
}

/**
 * What readQueued found for a request: `call`, a node QUEUED under the request's generation, as its call would see it
 * once started (status RUNNING, the next attempt, no lease yet: `lease` is empty); `start`, a node that must be
 * started before it is called (one of its keys has a limit); null, nothing to run (not QUEUED under that generation,
 * or its workflow finished).
 */
export type QueuedRead = { kind: "call"; node: StartedNode } | { kind: "start" } | null;

/** A node to start, for startNodes. */
export interface StartRequest {
  workflowId: string;
  nodeId: string;
  /**
   * The queue generation of the job that asks (see jobIdFor): when given, a node queued again since, under a
   * newer generation, is not started by this older job but left to its own.
   */
  queueGen?: number | undefined;
}

/** How a result was recorded. */
export type RecordOutcome =
  | { outcome: "passed"; workflowStatus: WorkflowStatus }
  | { outcome: "failed"; errorKind: ErrorKind; message: string; workflowStatus: WorkflowStatus }
  | { outcome: "retry"; delayMs: number; attempt: number }
  /** The lease was no longer held (cancelled, re-queued or taken over): nothing was written. */
  | { outcome: "stale" }
  /** THROTTLED recorded: the node runs again under a new job after the delay; this attempt did not count. */
  | { outcome: "throttled"; retryAfterMs: number };

/** Nodes affected by a workflow action, so callers can act on queues and running calls. */
export interface ActionEffects {
  workflow: Workflow;
  /** Nodes that were RUNNING and are now CANCELLED: their calls should be cancelled. */
  cancelledRunning: { nodeId: string }[];
  /** Jobs that no longer have a QUEUED node behind them. */
  removedJobIds: { capability: string; jobId: string }[];
}

/** A lease a worker holds on a running node. */
export interface HeldLease {
  workflowId: string;
  nodeId: string;
  lease: string;
}

/** A registered worker as the dashboard's Workers page shows it. */
export interface WorkerInfo {
  id: string;
  hostname: string;
  capabilities: string[];
  /** When its current session registered. */
  startedAt: Date;
  heartbeatAt: Date;
  /** Age of its last heartbeat on PostgreSQL's clock (the one liveness is judged by). */
  heartbeatAgeMs: number;
  /** Its heartbeat is younger than the staleness asked for: the scheduler counts it as serving its capabilities. */
  live: boolean;
  /** RUNNING nodes of its session, per capability. */
  running: Record<string, number>;
}

/**
 * The only door to PostgreSQL. Protobuf in, protobuf out; every change writes its events in the same
 * transaction, with a gap-free per-workflow sequence. Errors are the typed errors of libs/core.
 */
export interface StateManager {
  /** Validates and stores a whole DAG with its edges and events in one transaction; idempotent on requestId. */
  createWorkflow(input: CreateWorkflowInput): Promise<CreateWorkflowResult>;
  /**
   * A new workflow from another in any state: nodes not downstream of `fromNodeIds` keep their PASS and output, the
   * rest start over from their definitions, nodes a re-run node inserted are left out; idempotent on requestId.
   */
  forkWorkflow(input: ForkWorkflowInput): Promise<ForkWorkflowResult>;
  /** A workflow's status alone (cheap). */
  getWorkflowStatus(workflowId: string): Promise<WorkflowStatus>;
  /** One workflow with every node in topological order. */
  getWorkflow(workflowId: string): Promise<Workflow>;
  /** Keyset-paginated list, newest first, nodes left out. */
  listWorkflows(query: ListWorkflowsQuery): Promise<WorkflowPage>;
  /** Renames/relabels a workflow and/or applies PAUSE, RESUME, CANCEL or RETRY. */
  updateWorkflow(workflowId: string, update: UpdateWorkflowInput): Promise<ActionEffects>;
  /** Inserts one node (an INSERT edit). */
  createNode(workflowId: string, node: Node): Promise<Node>;
  /** One node. */
  getNode(workflowId: string, nodeId: string): Promise<Node>;
  /** Every ended attempt of a node, oldest first (NOT_FOUND for an unknown workflow or node). */
  listNodeAttempts(workflowId: string, nodeId: string): Promise<NodeAttempt[]>;
  /** Changes a PENDING node (an UPDATE edit). */
  updateNode(workflowId: string, node: Node, updateMask: FieldMask | undefined): Promise<Node>;
  /** Applies a batch of edits atomically, validated against the graph as it would be after the batch. */
  applyNodeEdits(workflowId: string, edits: readonly NodeEdit[]): Promise<Workflow>;
  /** Claims up to `limit` ready nodes (SKIP LOCKED), marks them QUEUED and returns their jobs. */
  claimReadyNodes(limit: number): Promise<QueuedNode[]>;
  /**
   * What time does to up to `limit` WAITING nodes: start times reached back to PENDING, timed-out waits PASS or FAIL;
   * returns the WAITING nodes holding a signal kept from before they were ready (for completeKeptSignals).
   */
  wakeNodes(limit: number): Promise<{ workflowId: string; nodeId: string }[]>;
  /** SignalNode: completes or rejects a node with `wait` (or keeps the signal until the node is ready). */
  signalNode(input: SignalInput): Promise<SignalOutcome>;
  /** Completes WAITING nodes with a kept signal (invalid edits FAIL them); returns how many. */
  completeKeptSignals(nodes: readonly { workflowId: string; nodeId: string }[]): Promise<number>;
  /**
   * QUEUED -> RUNNING with a fresh lease, attempt + 1, for a worker session (null: none, for tests that drive
   * nodes by hand: such a node is never found lost); null when the node is no longer QUEUED.
   */
  startNode(workflowId: string, nodeId: string, workerSession?: string | null): Promise<StartedNode | null>;
  /** Starts many nodes in one transaction; each entry is null when its node was no longer QUEUED. */
  startNodes(requests: readonly StartRequest[], workerSession?: string | null): Promise<(StartedNode | null)[]>;
  /**
   * Reads what calling QUEUED nodes needs without starting them (writes nothing): their start is then recorded with
   * their result (ResultToRecord.unstarted), or written by startNodes if the call lasts. Requests without a
   * queue generation get `start`.
   */
  readQueued(requests: readonly StartRequest[]): Promise<QueuedRead[]>;
  /** Records an attempt's result if `lease` is still held. */
  recordResult(workflowId: string, nodeId: string, lease: string, result: NodeResult): Promise<RecordOutcome>;
  /** Records many results in one transaction (one commit); outcomes in the order given. */
  recordResults(items: readonly ResultToRecord[], options?: RecordOptions): Promise<RecordedResults>;
  /** RUNNING nodes of a worker session started more than `olderThanMs` ago (reads only). */
  runningOf(session: string, olderThanMs: number): Promise<HeldLease[]>;
  /**
   * Ends the attempts held under these leases as INFRA_ERROR (`message`), retried under new jobs (returned, to add)
   * or failed when out of attempts; leases no longer held change nothing.
   */
  releaseNodes(leases: readonly HeldLease[], message: string): Promise<QueuedNode[]>;
  /** Of the leases a worker holds, the ones no longer held (their calls should stop); reads only. */
  lostLeases(leases: readonly HeldLease[]): Promise<HeldLease[]>;
  /**
   * Per-worker liveness: forgets workers whose heartbeat is older than `staleMs`; RUNNING nodes of a session no
   * longer registered go back to QUEUED with a new job (or FAIL when out of attempts). Returns the jobs to add.
   */
  requeueLostNodes(staleMs: number, limit: number): Promise<QueuedNode[]>;
  /** QUEUED nodes queued more than `olderThanMs` ago, with their current job ids (for the reconciler). */
  findQueuedNodes(olderThanMs: number, limit: number): Promise<QueuedNode[]>;
  /** Gives QUEUED nodes whose job was lost a new queue generation (new job id); skips nodes that moved on. */
  requeueNodes(lost: readonly Pick<QueuedNode, "workflowId" | "nodeId" | "jobId">[]): Promise<QueuedNode[]>;
  /**
   * Of these job ids (`<workflow>/<node>/<queue generation>`), the ones whose node is still QUEUED at that
   * generation: a job not among them belongs to a node cancelled, paused, deleted or queued anew. Reads only.
   */
  currentJobIds(jobIds: readonly string[]): Promise<Set<string>>;
  /** Registers a worker under a new session (the nodes it starts carry it); returns the session. */
  registerWorker(workerId: string, capabilities: readonly string[], hostname: string): Promise<string>;
  /** The worker's heartbeat; false when its session was declared dead (it must drop what it holds, register anew). */
  heartbeatWorker(workerId: string, session: string): Promise<boolean>;
  /** Forgets a worker (graceful shutdown); with `session`, only that session of it. */
  removeWorker(workerId: string, session?: string): Promise<void>;
  /** Live workers per capability: those whose heartbeat is younger than `maxAgeMs`. */
  liveCapabilities(maxAgeMs: number): Promise<Map<string, number>>;
  /** Every registered worker: capabilities, heartbeat age, live or not (`maxAgeMs`), RUNNING nodes (the dashboard). */
  listWorkers(maxAgeMs: number): Promise<WorkerInfo[]>;
  /**
   * Emits `node.unroutable` once for each QUEUED node whose capability no live worker serves; returns how
   * many QUEUED nodes are unroutable now, per capability.
   */
  reportUnroutable(served: ReadonlySet<string>): Promise<Map<string, number>>;
  /** Node counts per status over unfinished workflows, for gauges. */
  countNodesByStatus(): Promise<Map<string, number>>;
  /** Workflow counts per unfinished status (PENDING, RUNNING, PAUSED), for the `trellis_workflows_active` gauge. */
  countWorkflowsByStatus(): Promise<Map<string, number>>;
  /** Committed events of a workflow with sequence > afterSequence, in order. */
  listEvents(workflowId: string, afterSequence: number, limit?: number): Promise<WorkflowEvent[]>;
  /**
   * Creates or replaces the limit of a key (validated; burst 0 means the rate) and wakes the scheduler: a new bucket
   * starts full, a replaced one keeps its level up to the new burst. Returns it with its live state.
   */
  setLimit(spec: LimitSpec): Promise<LimitState>;
  /** Every limit set with setLimit, and every key a THROTTLED answer pauses now, by key, with their live state. */
  listLimits(): Promise<LimitState[]>;
  /** Removes a key's limit and gives the nodes it held back to the scheduler; false when the key had none. */
  deleteLimit(key: string): Promise<boolean>;
  /** Stores a new schedule (validated, its workflow as CreateWorkflow would take it); ALREADY_EXISTS for a known id. */
  createSchedule(schedule: Schedule): Promise<Schedule>;
  /** Every schedule, by id. */
  listSchedules(): Promise<Schedule[]>;
  /** Changes a schedule (NOT_FOUND for an unknown id); a new cron or time zone, or a resume, plans from now. */
  updateSchedule(id: string, update: UpdateScheduleInput): Promise<Schedule>;
  /** Removes a schedule; false when there was none. */
  deleteSchedule(id: string): Promise<boolean>;
  /**
   * The scheduler's: creates the workflow of up to `limit` due schedules (FOR UPDATE SKIP LOCKED, one workflow per
   * tick) and moves each to its next tick after now, in one transaction.
   */
  runDueSchedules(limit: number): Promise<ScheduleTicks>;
}
