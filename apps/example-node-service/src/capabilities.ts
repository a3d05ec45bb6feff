import { createHash } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { create, fromJson, type JsonObject, type JsonValue, type MessageInitShape, toJson } from "@bufbuild/protobuf";
import { type Value, ValueSchema, durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  EditType,
  type ExecuteNodeRequest,
  type ExecuteNodeResponse,
  ExecuteNodeResponseSchema,
  ExecutionStatus,
  type NodeEditSchema,
  type OutputChunkSchema,
} from "@trellis/proto";

/** The capabilities the example NodeService implements, as a worker lists them in `WORKER_CAPABILITIES`. */
export const EXAMPLE_CAPABILITIES = [
  "echo",
  "sleep",
  "fail",
  "flaky",
  "llm.mock",
  "llm.metered",
  "llm.stream",
  "plan",
] as const;

/** One of {@link EXAMPLE_CAPABILITIES}. */
export type ExampleCapability = (typeof EXAMPLE_CAPABILITIES)[number];

/** Longest `sleep` (`input.ms`) and `llm.mock` delay (`input.delay_ms`) accepted: 10 minutes. */
export const MAX_SLEEP_MS = 600_000;

/** The tasks `plan` fans out into when `input.tasks` is absent. */
export const DEFAULT_PLAN_TASKS: readonly string[] = ["research the question", "draft an answer", "review the draft"];

/** Most tasks one `plan` call may insert. */
export const MAX_PLAN_TASKS = 1000;

/** The model name `llm.mock` and `llm.metered` report. */
export const MOCK_MODEL = "trellis-mock-1";

/** What `llm.metered` charges per token, in US dollars ($2 per million tokens). */
export const METERED_USD_PER_TOKEN = 0.000002;

/** Most attempts `llm.metered` may be asked to throttle (`input.throttle_first_n`). */
export const MAX_THROTTLED_ATTEMPTS = 1000;

/** Most tokens `llm.metered` may be asked to report (`input.tokens`). */
export const MAX_REPORTED_TOKENS = 1_000_000_000;

/** A node input the capability cannot use; answered as TASK_ERROR since retrying cannot help. */
class InvalidInputError extends Error {
  constructor(field: string, reason: string) {
    super(`input.${field} ${reason}`);
    this.name = "InvalidInputError";
  }
}

/** Receives the output chunks of a streaming call (ExecuteNodeStream), in order. */
export type ChunkSink = (chunk: MessageInitShape<typeof OutputChunkSchema>) => void;

/**
 * One capability: answers a request or rejects when `signal` aborts. `onChunk` is set when the caller streams
 * (ExecuteNodeStream); a capability that writes its output piece by piece sends the pieces there.
 */
type CapabilityHandler = (
  request: ExecuteNodeRequest,
  signal: AbortSignal,
  onChunk?: ChunkSink,
) => Promise<ExecuteNodeResponse>;

type NodeEditInit = MessageInitShape<typeof NodeEditSchema>;

function success(output: JsonValue, edits: NodeEditInit[] = []): ExecuteNodeResponse {
  return create(ExecuteNodeResponseSchema, {
    status: ExecutionStatus.SUCCESS,
    output: fromJson(ValueSchema, output),
    edits,
  });
}

function failure(
  status: ExecutionStatus.TASK_ERROR | ExecutionStatus.INFRA_ERROR,
  message: string,
): ExecuteNodeResponse {
  return create(ExecuteNodeResponseSchema, { status, errorMessage: message });
}

function inputOf(request: ExecuteNodeRequest): JsonObject {
  return request.node?.input ?? {};
}

/** `input[field]` as an integer in [min, max]; absent or null gives `fallback`. */
function readInt(input: JsonObject, field: string, fallback: number, min: number, max: number): number {
  const value = input[field];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidInputError(field, `must be an integer between ${min} and ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** `input[field]` as an integer in [min, max]; absent or null gives undefined. */
function readOptionalInt(input: JsonObject, field: string, min: number, max: number): number | undefined {
  return input[field] === undefined || input[field] === null ? undefined : readInt(input, field, min, min, max);
}

/** `input[field]` as a string; absent or null gives undefined. */
function readOptionalString(input: JsonObject, field: string): string | undefined {
  const value = input[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw new InvalidInputError(field, `must be a string, got ${JSON.stringify(value)}`);
  return value;
}

/** `input[field]` as a list of strings of at most `maxItems`; absent or null gives `fallback`. */
function readStringList(input: JsonObject, field: string, fallback: readonly string[], maxItems: number): string[] {
  const value = input[field];
  if (value === undefined || value === null) return [...fallback];
  if (!Array.isArray(value) || !value.every((item): item is string => typeof item === "string")) {
    throw new InvalidInputError(field, "must be a list of strings");
  }
  if (value.length > maxItems) throw new InvalidInputError(field, `must have at most ${maxItems} items`);
  return value;
}

/** A stored output as JSON; an unset Value (no output recorded) reads as null rather than throwing. */
function valueToJson(value: Value): JsonValue {
  return value.kind.case === undefined ? null : toJson(ValueSchema, value);
}

/** `echo`: hands back what the node received, so tests and demos can see the data flow. */
async function echo(request: ExecuteNodeRequest): Promise<ExecuteNodeResponse> {
  const context = request.context;
  const parents: JsonObject = {};
  for (const [parentId, output] of Object.entries(context?.parentOutputs ?? {})) {
    parents[parentId] = valueToJson(output);
  }
  return success({
    input: inputOf(request),
    parents,
    attempt: context?.attempt ?? 0,
    workflow_input: context?.workflowInput ?? {},
  });
}

/** `sleep`: waits `input.ms` (default 100) unless the call is cancelled first. */
async function sleep(request: ExecuteNodeRequest, signal: AbortSignal): Promise<ExecuteNodeResponse> {
  const ms = readInt(inputOf(request), "ms", 100, 0, MAX_SLEEP_MS);
  await delay(ms, undefined, { signal });
  return success({ slept_ms: ms });
}

/** `fail`: a TASK_ERROR with `input.message`. */
async function fail(request: ExecuteNodeRequest): Promise<ExecuteNodeResponse> {
  const message = readOptionalString(inputOf(request), "message") ?? "failed on purpose";
  return failure(ExecutionStatus.TASK_ERROR, message);
}

/** `flaky`: an INFRA_ERROR for the first `input.failures` attempts (default 1), then SUCCESS. */
async function flaky(request: ExecuteNodeRequest): Promise<ExecuteNodeResponse> {
  const failures = readInt(inputOf(request), "failures", 1, 0, 1000);
  const attempt = request.context?.attempt ?? 0;
  if (attempt <= failures) {
    return failure(ExecutionStatus.INFRA_ERROR, `flaky: attempt ${attempt} fails on purpose (first ${failures} fail)`);
  }
  return success({ attempt });
}

const MOCK_WORDS = [
  "agents",
  "answer",
  "careful",
  "context",
  "data",
  "draft",
  "evidence",
  "graph",
  "insight",
  "model",
  "next",
  "node",
  "plan",
  "question",
  "result",
  "review",
  "signal",
  "step",
  "summary",
  "task",
  "therefore",
  "tool",
  "useful",
  "workflow",
];

/** A rough token count (about four characters a token), enough for a mock's usage numbers. */
function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4);
}

/** A deterministic completion for `prompt`: the same prompt always gives the same words. */
export function mockCompletion(prompt: string): string {
  const digest = createHash("sha256").update(prompt).digest();
  // 8 to 23 words, each picked by one byte of the digest, so the text depends only on the prompt.
  const count = 8 + (digest[0]! % 16);
  const words = Array.from({ length: count }, (_, i) => MOCK_WORDS[digest[i + 1]! % MOCK_WORDS.length]!);
  const sentence = words.join(" ");
  return `${sentence.charAt(0).toUpperCase()}${sentence.slice(1)}.`;
}

/** The output of a mock completion of `input.prompt`, after `input.delay_ms` (default 0). */
async function mockChat(input: JsonObject, signal: AbortSignal) {
  const prompt = readOptionalString(input, "prompt");
  if (prompt === undefined) throw new InvalidInputError("prompt", "is required (a string)");
  const delayMs = readInt(input, "delay_ms", 0, 0, MAX_SLEEP_MS);
  if (delayMs > 0) await delay(delayMs, undefined, { signal });
  const completion = mockCompletion(prompt);
  const promptTokens = estimateTokens(prompt);
  const completionTokens = estimateTokens(completion);
  return {
    model: MOCK_MODEL,
    completion,
    finish_reason: "stop",
    usage: {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
    },
  };
}

/** `llm.mock`: a deterministic fake completion of `input.prompt`, after `input.delay_ms` (default 0). */
async function llmMock(request: ExecuteNodeRequest, signal: AbortSignal): Promise<ExecuteNodeResponse> {
  return success(await mockChat(inputOf(request), signal));
}

/**
 * `llm.stream`: `llm.mock`'s completion written word by word, as a chat model streams its tokens: each word (with the
 * space before it) is a chunk on channel "tokens", `input.word_delay_ms` apart (default 20), then the same output as
 * `llm.mock`. Called with ExecuteNode it waits as long and answers the output alone.
 */
async function llmStream(request: ExecuteNodeRequest, signal: AbortSignal, onChunk?: ChunkSink) {
  const input = inputOf(request);
  const wordDelayMs = readInt(input, "word_delay_ms", 20, 0, 60_000);
  const output = await mockChat(input, signal);
  const words = output.completion.split(" ");
  for (const [i, word] of words.entries()) {
    if (wordDelayMs > 0) await delay(wordDelayMs, undefined, { signal });
    onChunk?.({ channel: "tokens", text: i === 0 ? word : ` ${word}` });
  }
  return success(output);
}

/**
 * `llm.metered`: a metered, rate-limited provider. Answers THROTTLED ("too many requests") to the first
 * `input.throttle_first_n` attempts (default 0; counted by `context.attempt`, which every start moves on, throttled
 * ones included), with `retry_after` = `input.retry_after_ms` when given (else none: the engine's default applies).
 * Then `llm.mock`'s completion, reporting `usage` {tokens, cost_usd}: the prompt's and completion's tokens, or
 * `input.tokens` when given, at {@link METERED_USD_PER_TOKEN}.
 */
async function llmMetered(request: ExecuteNodeRequest, signal: AbortSignal): Promise<ExecuteNodeResponse> {
  const input = inputOf(request);
  const throttled = readInt(input, "throttle_first_n", 0, 0, MAX_THROTTLED_ATTEMPTS);
  const retryAfterMs = readOptionalInt(input, "retry_after_ms", 0, MAX_SLEEP_MS);
  const tokens = readOptionalInt(input, "tokens", 0, MAX_REPORTED_TOKENS);
  const attempt = request.context?.attempt ?? 0;
  if (attempt <= throttled) {
    return create(ExecuteNodeResponseSchema, {
      status: ExecutionStatus.THROTTLED,
      errorMessage: `llm.metered: too many requests (attempt ${attempt} of the first ${throttled} is throttled)`,
      retryAfter: retryAfterMs === undefined ? undefined : durationFromMs(retryAfterMs),
    });
  }
  const output = await mockChat(input, signal);
  const spent = tokens ?? output.usage.total_tokens;
  const response = success(output);
  // Rounded to a micro-dollar so the sums read cleanly.
  response.usage = { tokens: spent, cost_usd: Math.round(spent * METERED_USD_PER_TOKEN * 1e6) / 1e6 };
  return response;
}

/** Longest `plan` approval wait (`input.approval_timeout_ms`): 366 days, the api's bound on a wait's timeout. */
export const MAX_APPROVAL_TIMEOUT_MS = 366 * 24 * 3_600_000;

/**
 * `plan`: the agent-planning pattern. Inserts one node per task of `input.tasks` (ids `<node id>.task-<i>`, from 0,
 * each a child of this node running `input.task_capability`, default `llm.mock`, on `{prompt: task}`) and, when
 * `input.join` names a PENDING node, rewires it to wait for this node and every inserted task.
 *
 * With `input.approval` (a node id, e.g. "approve"), the plan waits for a person first: a wait node of that id is
 * inserted as this node's child, with the plan as its input, and every task becomes its child instead of this node's.
 * A signal passes it (the tasks run, each seeing the approval's output) or rejects it (the tasks are skipped). With
 * `input.approval_timeout_ms`, an approval not given in time fails the wait node.
 */
async function plan(request: ExecuteNodeRequest): Promise<ExecuteNodeResponse> {
  const input = inputOf(request);
  const tasks = readStringList(input, "tasks", DEFAULT_PLAN_TASKS, MAX_PLAN_TASKS);
  const join = readOptionalString(input, "join");
  const taskCapability = readOptionalString(input, "task_capability") ?? "llm.mock";
  const approval = readOptionalString(input, "approval") || undefined;
  const approvalTimeoutMs = readOptionalInt(input, "approval_timeout_ms", 1, MAX_APPROVAL_TIMEOUT_MS);
  if (approvalTimeoutMs !== undefined && approval === undefined) {
    throw new InvalidInputError("approval_timeout_ms", "needs input.approval (the approval node's id)");
  }
  const planner = request.node?.id ?? "";
  const taskIds = tasks.map((_, i) => `${planner}.task-${i}`);
  const edits: NodeEditInit[] = [];
  if (approval !== undefined) {
    // A wait node: no capability, completed by SignalNode (or its timeout), never by a NodeService.
    edits.push({
      type: EditType.INSERT,
      node: {
        id: approval,
        name: `approve the plan of ${planner}`,
        parentIds: [planner],
        input: { tasks, task_ids: taskIds },
        wait:
          approvalTimeoutMs === undefined ? {} : { timeout: durationFromMs(approvalTimeoutMs), failOnTimeout: true },
      },
    });
  }
  const taskParent = approval ?? planner;
  edits.push(
    ...tasks.map(
      (task, i): NodeEditInit => ({
        type: EditType.INSERT,
        node: { id: taskIds[i], capability: taskCapability, input: { prompt: task }, parentIds: [taskParent] },
      }),
    ),
  );
  if (join !== undefined && join !== "") {
    // The planner cannot see the join's current parents, so it names all it knows must come first.
    edits.push({
      type: EditType.UPDATE,
      node: { id: join, parentIds: [planner, ...(approval === undefined ? [] : [approval]), ...taskIds] },
      updateMask: { paths: ["parent_ids"] },
    });
  }
  const output: JsonObject = { planned: tasks.length, task_ids: taskIds };
  if (approval !== undefined) output.approval = approval;
  return success(output, edits);
}

const HANDLERS: Record<ExampleCapability, CapabilityHandler> = {
  echo,
  sleep,
  fail,
  flaky,
  "llm.mock": llmMock,
  "llm.metered": llmMetered,
  "llm.stream": llmStream,
  plan,
};

/** Whether `capability` is one the example NodeService implements. */
export function isExampleCapability(capability: string): capability is ExampleCapability {
  return (EXAMPLE_CAPABILITIES as readonly string[]).includes(capability);
}

/**
 * Runs the node of `request` by its capability. Bad input and unknown capabilities are TASK_ERROR responses;
 * rejects (with an AbortError) only when `signal` aborts first, e.g. because the caller cancelled the call.
 */
export async function executeExample(
  request: ExecuteNodeRequest,
  signal: AbortSignal,
  onChunk?: ChunkSink,
): Promise<ExecuteNodeResponse> {
  signal.throwIfAborted();
  const capability = request.node?.capability ?? "";
  if (!isExampleCapability(capability)) {
    return failure(ExecutionStatus.TASK_ERROR, `unknown capability ${JSON.stringify(capability)}`);
  }
  try {
    return await HANDLERS[capability](request, signal, onChunk);
  } catch (error) {
    if (error instanceof InvalidInputError) return failure(ExecutionStatus.TASK_ERROR, error.message);
    throw error;
  }
}
