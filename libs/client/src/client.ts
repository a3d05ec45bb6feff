import * as grpc from "@grpc/grpc-js";
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import {
  type CreateScheduleRequestSchema,
  type CreateWorkflowRequestSchema,
  type DeleteLimitRequestSchema,
  type DeleteScheduleRequestSchema,
  type EditWorkflowRequestSchema,
  type ForkWorkflowRequestSchema,
  type GetNodeRequestSchema,
  type GetNodeResponse,
  type GetWorkflowRequestSchema,
  type GrpcClient,
  type Limit,
  type ListWorkflowsRequestSchema,
  type ListWorkflowsResponse,
  type Node,
  type Schedule,
  type SetLimitRequestSchema,
  type SignalNodeRequestSchema,
  type UpdateNodeRequestSchema,
  type UpdateScheduleRequestSchema,
  type UpdateWorkflowRequestSchema,
  type Workflow,
  WorkflowAction,
  type WorkflowEvent,
  WorkflowService,
  type WorkflowStatus,
  createGrpcClient,
} from "@trellis/proto";
import { TrellisClientError, toClientError } from "./client-error.js";
import { type WatchOptions, type WorkflowEventSource, resumingWatch } from "./watch.js";

/** PEM material for TLS to the api; `cert` and `key` together add a client certificate (mutual TLS). */
export interface ClientTlsOptions {
  /** CA bundle the api's certificate must chain to. @default the system's roots */
  ca?: Buffer | string;
  /** Client certificate chain, for an api that asks for one (`GRPC_TLS_CA` set on the api). */
  cert?: Buffer | string;
  /** Private key of `cert`. */
  key?: Buffer | string;
}

/** Options of {@link createClient}. */
export interface ClientOptions {
  /** The api's gRPC address, `host:port`. */
  address: string;
  /** Sent as `authorization: Bearer <token>` on every call (the api's `API_TOKEN` or a token of `API_TOKENS_FILE`). */
  token?: string;
  /** TLS to the api (the api's `GRPC_TLS_*`). @default plaintext */
  tls?: ClientTlsOptions;
  /** How long a unary call may take when the call does not say. grpc-js has no deadline of its own. @default 30000 */
  defaultDeadlineMs?: number;
  /**
   * grpc-js channel options (`grpc.max_receive_message_length`, ...), over {@link DEFAULT_CHANNEL_OPTIONS}.
   * @default DEFAULT_CHANNEL_OPTIONS
   */
  channelOptions?: grpc.ChannelOptions;
}

/** Options of one unary call. */
export interface CallOptions {
  /** This call's deadline, from now. @default the client's `defaultDeadlineMs` */
  deadlineMs?: number;
  /** Aborting cancels the call (it rejects with CANCELLED). */
  signal?: AbortSignal;
}

/** A request of a method, as a plain object (protobuf-es init shape). */
type Request<S extends DescMessage> = MessageInitShape<S>;

/** `pageSize` of {@link TrellisClient.listAllWorkflows} when the request has none: the api's largest page. */
const ALL_PAGE_SIZE = 500;

/**
 * Keepalive pings on an idle connection: a watch has no deadline, so a connection that died without a reset (a host
 * gone, a NAT entry dropped) must still be noticed, to be resumed. grpc-js halves the rate if a server asks it to.
 * The receive limit is set deliberately: grpc-js's 4 MiB would refuse GetWorkflow of a large workflow (up to 10,000
 * nodes with their inputs and outputs).
 */
export const DEFAULT_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 60_000,
  "grpc.keepalive_timeout_ms": 20_000,
  "grpc.max_receive_message_length": 256 * 1024 * 1024,
};

/** @default of {@link ClientOptions.defaultDeadlineMs}. */
export const DEFAULT_DEADLINE_MS = 30_000;

/** The client of a Trellis api: one method per WorkflowService RPC, plus action helpers and a resuming watch. */
export class TrellisClient {
  /** The generated grpc-js client underneath, for what this one does not cover. */
  readonly grpc: GrpcClient<typeof WorkflowService>;
  /** Single WatchWorkflow streams (no resuming) and the workflow's status: what {@link watch} resumes over. */
  readonly events: WorkflowEventSource;
  private readonly metadata: grpc.Metadata;
  private readonly defaultDeadlineMs: number;

  constructor(options: ClientOptions) {
    const credentials = options.tls
      ? grpc.credentials.createSsl(pem(options.tls.ca), pem(options.tls.key), pem(options.tls.cert))
      : grpc.credentials.createInsecure();
    this.grpc = createGrpcClient(WorkflowService, options.address, credentials, {
      ...DEFAULT_CHANNEL_OPTIONS,
      ...options.channelOptions,
    });
    this.metadata = new grpc.Metadata();
    if (options.token) this.metadata.set("authorization", `Bearer ${options.token}`);
    this.defaultDeadlineMs = options.defaultDeadlineMs ?? DEFAULT_DEADLINE_MS;
    this.events = {
      watch: (workflowId, afterSequence, signal, includeChunks = false) =>
        this.watchStream(workflowId, afterSequence, signal, includeChunks),
      status: async (workflowId, signal) => (await this.getWorkflow({ workflowId }, { signal })).status,
    };
  }

  /** Creates a workflow (CreateWorkflow); a repeated `requestId` answers with the workflow it created first. */
  async createWorkflow(request: Request<typeof CreateWorkflowRequestSchema>, options?: CallOptions): Promise<Workflow> {
    return required((await this.unary("createWorkflow", request, options)).workflow, "workflow");
  }

  /** A workflow and all its nodes (GetWorkflow). */
  async getWorkflow(request: Request<typeof GetWorkflowRequestSchema>, options?: CallOptions): Promise<Workflow> {
    return required((await this.unary("getWorkflow", request, options)).workflow, "workflow");
  }

  /** One page of workflows, newest first (ListWorkflows); `nextPageToken` asks for the next. */
  listWorkflows(
    request: Request<typeof ListWorkflowsRequestSchema> = {},
    options?: CallOptions,
  ): Promise<ListWorkflowsResponse> {
    return this.unary("listWorkflows", request, options);
  }

  /** Every workflow the request selects, page after page (each page a ListWorkflows call with its own deadline). */
  async *listAllWorkflows(
    request: Request<typeof ListWorkflowsRequestSchema> = {},
    options?: CallOptions,
  ): AsyncGenerator<Workflow, void, undefined> {
    let pageToken = request.pageToken ?? "";
    do {
      const page = await this.listWorkflows(
        { ...request, pageSize: request.pageSize || ALL_PAGE_SIZE, pageToken },
        options,
      );
      yield* page.workflows;
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  }

  /** Applies an action and/or changes the fields named in `updateMask` (UpdateWorkflow). */
  async updateWorkflow(request: Request<typeof UpdateWorkflowRequestSchema>, options?: CallOptions): Promise<Workflow> {
    return required((await this.unary("updateWorkflow", request, options)).workflow, "workflow");
  }

  /** Stops dispatching new nodes; running nodes finish. */
  pauseWorkflow(workflowId: string, options?: CallOptions): Promise<Workflow> {
    return this.updateWorkflow({ workflowId, action: WorkflowAction.PAUSE }, options);
  }

  /** Dispatches again after a pause (or after raising a reached budget). */
  resumeWorkflow(workflowId: string, options?: CallOptions): Promise<Workflow> {
    return this.updateWorkflow({ workflowId, action: WorkflowAction.RESUME }, options);
  }

  /** Cancels every node that has not finished, running calls included. */
  cancelWorkflow(workflowId: string, options?: CallOptions): Promise<Workflow> {
    return this.updateWorkflow({ workflowId, action: WorkflowAction.CANCEL }, options);
  }

  /** Re-queues the FAIL nodes of a FAILED workflow and re-opens their SKIPPED descendants. */
  retryWorkflow(workflowId: string, options?: CallOptions): Promise<Workflow> {
    return this.updateWorkflow({ workflowId, action: WorkflowAction.RETRY }, options);
  }

  /** A node and every ended attempt of it, oldest first (GetNode). */
  getNode(request: Request<typeof GetNodeRequestSchema>, options?: CallOptions): Promise<GetNodeResponse> {
    return this.unary("getNode", request, options);
  }

  /** Changes the fields of a PENDING node named in `updateMask` (UpdateNode). */
  async updateNode(request: Request<typeof UpdateNodeRequestSchema>, options?: CallOptions): Promise<Node> {
    return required((await this.unary("updateNode", request, options)).node, "node");
  }

  /** Inserts, updates and deletes nodes in one transaction (EditWorkflow). */
  async editWorkflow(request: Request<typeof EditWorkflowRequestSchema>, options?: CallOptions): Promise<Workflow> {
    return required((await this.unary("editWorkflow", request, options)).workflow, "workflow");
  }

  /** Completes (PASS with `output`) or rejects a node with `wait` (SignalNode); kept until the node is ready. */
  async signalNode(request: Request<typeof SignalNodeRequestSchema>, options?: CallOptions): Promise<Node> {
    return required((await this.unary("signalNode", request, options)).node, "node");
  }

  /** A new workflow re-running `fromNodeIds` and what is downstream of them; the source is untouched. */
  async forkWorkflow(request: Request<typeof ForkWorkflowRequestSchema>, options?: CallOptions): Promise<Workflow> {
    return required((await this.unary("forkWorkflow", request, options)).workflow, "workflow");
  }

  /** Creates or replaces the limit of a key (SetLimit); returns it as stored, defaults filled in. */
  async setLimit(request: Request<typeof SetLimitRequestSchema>, options?: CallOptions): Promise<Limit> {
    return required((await this.unary("setLimit", request, options)).limit, "limit");
  }

  /** Every limit, with what holds each key now (ListLimits). */
  async listLimits(options?: CallOptions): Promise<Limit[]> {
    return (await this.unary("listLimits", {}, options)).limits;
  }

  /** Removes a key's limit (DeleteLimit). */
  async deleteLimit(request: Request<typeof DeleteLimitRequestSchema>, options?: CallOptions): Promise<void> {
    await this.unary("deleteLimit", request, options);
  }

  /** Creates a schedule (CreateSchedule); returns it with its next tick. */
  async createSchedule(request: Request<typeof CreateScheduleRequestSchema>, options?: CallOptions): Promise<Schedule> {
    return required((await this.unary("createSchedule", request, options)).schedule, "schedule");
  }

  /** Every schedule (ListSchedules). */
  async listSchedules(options?: CallOptions): Promise<Schedule[]> {
    return (await this.unary("listSchedules", {}, options)).schedules;
  }

  /** Changes the fields of a schedule named in `updateMask`, e.g. `paused` (UpdateSchedule). */
  async updateSchedule(request: Request<typeof UpdateScheduleRequestSchema>, options?: CallOptions): Promise<Schedule> {
    return required((await this.unary("updateSchedule", request, options)).schedule, "schedule");
  }

  /** Removes a schedule (DeleteSchedule); the workflows it created stay. */
  async deleteSchedule(request: Request<typeof DeleteScheduleRequestSchema>, options?: CallOptions): Promise<void> {
    await this.unary("deleteSchedule", request, options);
  }

  /**
   * A workflow's events as they are committed, replayed from its start (or after `afterSequence`), until it ends;
   * the generator's return value is the final status. A broken stream (the api restarting, a reset connection) is
   * reopened after the last event yielded, with backoff: no event is lost or yielded twice. The stream has no
   * deadline (it lasts as long as the workflow); `signal` stops it.
   */
  watch(workflowId: string, options: WatchOptions = {}): AsyncGenerator<WorkflowEvent, WorkflowStatus, undefined> {
    return resumingWatch(this.events, workflowId, options);
  }

  /** Closes the channel; calls in flight fail with CANCELLED or UNAVAILABLE. */
  close(): void {
    this.grpc.close();
  }

  /** One WatchWorkflow stream, its errors as {@link TrellisClientError}; leaving the loop early cancels the call. */
  private async *watchStream(
    workflowId: string,
    afterSequence: bigint,
    signal: AbortSignal,
    includeChunks: boolean,
  ): AsyncGenerator<WorkflowEvent, void, undefined> {
    const call = this.grpc.watchWorkflow(
      { workflowId, afterSequence, includeChunks },
      { metadata: this.metadata, signal },
    );
    try {
      for await (const event of call) yield event as WorkflowEvent;
    } catch (error) {
      throw toClientError(error);
    } finally {
      call.cancel();
    }
  }

  private async unary<K extends UnaryMethod>(
    method: K,
    request: Parameters<GrpcClient<typeof WorkflowService>[K]>[0],
    options: CallOptions = {},
  ): Promise<Awaited<ReturnType<GrpcClient<typeof WorkflowService>[K]>>> {
    const call = this.grpc[method] as (
      request: unknown,
      options: { deadline: number; metadata: grpc.Metadata; signal?: AbortSignal },
    ) => Promise<Awaited<ReturnType<GrpcClient<typeof WorkflowService>[K]>>>;
    try {
      return await call(request, {
        deadline: Date.now() + (options.deadlineMs ?? this.defaultDeadlineMs),
        metadata: this.metadata,
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      });
    } catch (error) {
      throw toClientError(error);
    }
  }
}

/** The unary methods of WorkflowService, by local name. */
type UnaryMethod = Exclude<keyof typeof WorkflowService.method, "watchWorkflow">;

function pem(value: Buffer | string | undefined): Buffer | null {
  if (value === undefined) return null;
  return typeof value === "string" ? Buffer.from(value) : value;
}

/** A response field the api always sets; its absence is a broken api, reported as INTERNAL. */
function required<T>(value: T | undefined, field: string): T {
  if (value === undefined) throw new TrellisClientError(grpc.status.INTERNAL, `the api's answer has no ${field}`);
  return value;
}

/** Creates a {@link TrellisClient}; it connects lazily, on the first call. */
export function createClient(options: ClientOptions): TrellisClient {
  return new TrellisClient(options);
}
