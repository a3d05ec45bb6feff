import type { FieldMask } from "@bufbuild/protobuf/wkt";
import { DEFAULT_LIMITS, type LimitSpec, type WorkflowLimits } from "@trellis/core";
import type { Node, NodeAttempt, NodeEdit, Schedule, Workflow, WorkflowEvent, WorkflowStatus } from "@trellis/proto";
import { ForkStore } from "./fork.js";
import { LimitStore } from "./limit-store.js";
import type { Database } from "./pool.js";
import { ScheduleStore } from "./schedule-store.js";
import { SchedulerStore } from "./scheduler-store.js";
import { SignalStore, type SignalInput, type SignalOutcome } from "./signal-store.js";
import type {
  ActionEffects,
  CreateWorkflowInput,
  CreateWorkflowResult,
  ForkWorkflowInput,
  ForkWorkflowResult,
  HeldLease,
  LimitState,
  ListWorkflowsQuery,
  NodeResult,
  QueuedNode,
  RecordOptions,
  RecordOutcome,
  RecordedResults,
  ResultToRecord,
  ScheduleTicks,
  QueuedRead,
  StartRequest,
  StartedNode,
  StateManager,
  UpdateScheduleInput,
  UpdateWorkflowInput,
  WorkflowPage,
  WorkerInfo,
} from "./state-manager.js";
import { type NewEvent, Transactions } from "./transactions.js";
import { WorkerStore } from "./worker-store.js";
import { WorkflowStore } from "./workflow-store.js";

/** Options of the PostgreSQL StateManager. */
export interface PgStateManagerOptions {
  /** Limits on workflows and edits. @default DEFAULT_LIMITS */
  limits?: WorkflowLimits;
  /** Called with the events of each committed transaction (after commit), e.g. to log them. */
  onEvents?: (events: readonly NewEvent[]) => void;
}

/**
 * The PostgreSQL StateManager: a facade over one store per caller, sharing one Transactions (transactions, the SQL
 * functions of libs/db/sql, notifications after commit): WorkflowStore for the api (workflows, actions, edits,
 * events), ForkStore for the api's forks, LimitStore for the api's flow-control limits, ScheduleStore for the cron
 * schedules (the api's CRUD, the scheduler's ticks), SchedulerStore for the scheduler (claims, liveness, repairs),
 * WorkerStore for the worker (registration, starts, results).
 */
export class PgStateManager implements StateManager {
  private readonly transactions: Transactions;
  private readonly workflows: WorkflowStore;
  private readonly limitStore: LimitStore;
  private readonly forks: ForkStore;
  private readonly schedules: ScheduleStore;
  private readonly scheduler: SchedulerStore;
  private readonly signals: SignalStore;
  private readonly worker: WorkerStore;

  constructor(db: Database, options: PgStateManagerOptions = {}) {
    const limits: WorkflowLimits = options.limits ?? DEFAULT_LIMITS;
    this.transactions = new Transactions(db, options.onEvents);
    this.workflows = new WorkflowStore(this.transactions, limits);
    this.limitStore = new LimitStore(this.transactions);
    this.forks = new ForkStore(this.transactions, limits, (id) => this.workflows.getWorkflow(id));
    this.schedules = new ScheduleStore(
      this.transactions,
      (ctx, input) => this.workflows.createWorkflow(input, ctx),
      limits,
    );
    this.scheduler = new SchedulerStore(this.transactions);
    this.signals = new SignalStore(this.transactions, limits);
    this.worker = new WorkerStore(this.transactions, limits);
  }

  /** Resolves once every notification queued so far has been sent (or failed); for shutdown and tests. */
  flushNotifications(): Promise<void> {
    return this.transactions.flushNotifications();
  }

  // ------------------------------------------------------------------ the api's

  createWorkflow(input: CreateWorkflowInput): Promise<CreateWorkflowResult> {
    return this.workflows.createWorkflow(input);
  }

  forkWorkflow(input: ForkWorkflowInput): Promise<ForkWorkflowResult> {
    return this.forks.forkWorkflow(input);
  }

  getWorkflowStatus(workflowId: string): Promise<WorkflowStatus> {
    return this.workflows.getWorkflowStatus(workflowId);
  }

  getWorkflow(workflowId: string): Promise<Workflow> {
    return this.workflows.getWorkflow(workflowId);
  }

  listWorkflows(query: ListWorkflowsQuery): Promise<WorkflowPage> {
    return this.workflows.listWorkflows(query);
  }

  updateWorkflow(workflowId: string, update: UpdateWorkflowInput): Promise<ActionEffects> {
    return this.workflows.updateWorkflow(workflowId, update);
  }

  getNode(workflowId: string, nodeId: string): Promise<Node> {
    return this.workflows.getNode(workflowId, nodeId);
  }

  listNodeAttempts(workflowId: string, nodeId: string): Promise<NodeAttempt[]> {
    return this.workflows.listNodeAttempts(workflowId, nodeId);
  }

  createNode(workflowId: string, node: Node): Promise<Node> {
    return this.workflows.createNode(workflowId, node);
  }

  updateNode(workflowId: string, node: Node, updateMask: FieldMask | undefined): Promise<Node> {
    return this.workflows.updateNode(workflowId, node, updateMask);
  }

  applyNodeEdits(workflowId: string, edits: readonly NodeEdit[]): Promise<Workflow> {
    return this.workflows.applyNodeEdits(workflowId, edits);
  }

  countNodesByStatus(): Promise<Map<string, number>> {
    return this.workflows.countNodesByStatus();
  }

  countWorkflowsByStatus(): Promise<Map<string, number>> {
    return this.workflows.countWorkflowsByStatus();
  }

  listEvents(workflowId: string, afterSequence: number, limit?: number): Promise<WorkflowEvent[]> {
    return this.workflows.listEvents(workflowId, afterSequence, limit);
  }

  setLimit(spec: LimitSpec): Promise<LimitState> {
    return this.limitStore.setLimit(spec);
  }

  listLimits(): Promise<LimitState[]> {
    return this.limitStore.listLimits();
  }

  deleteLimit(key: string): Promise<boolean> {
    return this.limitStore.deleteLimit(key);
  }

  createSchedule(schedule: Schedule): Promise<Schedule> {
    return this.schedules.createSchedule(schedule);
  }

  listSchedules(): Promise<Schedule[]> {
    return this.schedules.listSchedules();
  }

  updateSchedule(id: string, update: UpdateScheduleInput): Promise<Schedule> {
    return this.schedules.updateSchedule(id, update);
  }

  deleteSchedule(id: string): Promise<boolean> {
    return this.schedules.deleteSchedule(id);
  }

  runDueSchedules(limit: number): Promise<ScheduleTicks> {
    return this.schedules.runDueSchedules(limit);
  }

  // ------------------------------------------------------ the scheduler's and the worker's

  claimReadyNodes(limit: number): Promise<QueuedNode[]> {
    return this.scheduler.claimReadyNodes(limit);
  }

  wakeNodes(limit: number): Promise<{ workflowId: string; nodeId: string }[]> {
    return this.scheduler.wakeNodes(limit);
  }

  signalNode(input: SignalInput): Promise<SignalOutcome> {
    return this.signals.signalNode(input);
  }

  completeKeptSignals(nodes: readonly { workflowId: string; nodeId: string }[]): Promise<number> {
    return this.signals.completeKept(nodes);
  }

  async startNode(
    workflowId: string,
    nodeId: string,
    workerSession: string | null = null,
  ): Promise<StartedNode | null> {
    const [started] = await this.worker.startNodes([{ workflowId, nodeId }], workerSession);
    return started ?? null;
  }

  startNodes(requests: readonly StartRequest[], workerSession: string | null = null): Promise<(StartedNode | null)[]> {
    return this.worker.startNodes(requests, workerSession);
  }

  readQueued(requests: readonly StartRequest[]): Promise<QueuedRead[]> {
    return this.worker.readQueued(requests);
  }

  async recordResult(workflowId: string, nodeId: string, lease: string, result: NodeResult): Promise<RecordOutcome> {
    const { outcomes } = await this.worker.recordResults([{ workflowId, nodeId, lease, result }]);
    return outcomes[0]!;
  }

  recordResults(items: readonly ResultToRecord[], options: RecordOptions = {}): Promise<RecordedResults> {
    return this.worker.recordResults(items, options);
  }

  registerWorker(workerId: string, capabilities: readonly string[], hostname: string): Promise<string> {
    return this.worker.registerWorker(workerId, capabilities, hostname);
  }

  heartbeatWorker(workerId: string, session: string): Promise<boolean> {
    return this.worker.heartbeatWorker(workerId, session);
  }

  removeWorker(workerId: string, session?: string): Promise<void> {
    return this.worker.removeWorker(workerId, session);
  }

  runningOf(session: string, olderThanMs: number): Promise<HeldLease[]> {
    return this.worker.runningOf(session, olderThanMs);
  }

  releaseNodes(leases: readonly HeldLease[], message: string): Promise<QueuedNode[]> {
    return this.worker.releaseNodes(leases, message);
  }

  lostLeases(leases: readonly HeldLease[]): Promise<HeldLease[]> {
    return this.worker.lostLeases(leases);
  }

  requeueLostNodes(staleMs: number, limit: number): Promise<QueuedNode[]> {
    return this.scheduler.requeueLostNodes(staleMs, limit);
  }

  findQueuedNodes(olderThanMs: number, limit: number): Promise<QueuedNode[]> {
    return this.scheduler.findQueuedNodes(olderThanMs, limit);
  }

  requeueNodes(lost: readonly Pick<QueuedNode, "workflowId" | "nodeId" | "jobId">[]): Promise<QueuedNode[]> {
    return this.scheduler.requeueNodes(lost);
  }

  currentJobIds(jobIds: readonly string[]): Promise<Set<string>> {
    return this.scheduler.currentJobIds(jobIds);
  }

  liveCapabilities(maxAgeMs: number): Promise<Map<string, number>> {
    return this.scheduler.liveCapabilities(maxAgeMs);
  }

  listWorkers(maxAgeMs: number): Promise<WorkerInfo[]> {
    return this.scheduler.listWorkers(maxAgeMs);
  }

  reportUnroutable(served: ReadonlySet<string>): Promise<Map<string, number>> {
    return this.scheduler.reportUnroutable(served);
  }
}
