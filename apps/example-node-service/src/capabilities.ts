import { createHash } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import {
  type ChunkSink,
  type ExecuteNodeRequest,
  type ExecuteNodeResponse,
  executeNode,
  type Handler,
  InfraError,
  type JsonObject,
  TaskError,
  Throttled,
} from "@trellis/node-sdk";

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

/** A node input the capability cannot use: a TASK_ERROR naming the field, since retrying cannot help. */
class InvalidInputError extends TaskError {
  override name = "InvalidInputError";
  constructor(field: string, reason: string) {
    super(`input.${field} ${reason}`);
  }
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

/** `echo`: hands back what the node received, so tests and demos can see the data flow. */
const echo: Handler = (input, ctx) => ({
  input,
  parents: ctx.parents,
  attempt: ctx.attempt,
  workflow_input: ctx.workflowInput,
});

/** `sleep`: waits `input.ms` (default 100) unless the call is cancelled first. */
const sleep: Handler = async (input, ctx) => {
  const ms = readInt(input, "ms", 100, 0, MAX_SLEEP_MS);
  await delay(ms, undefined, { signal: ctx.signal });
  return { slept_ms: ms };
};

/** `fail`: a TASK_ERROR with `input.message`. */
const fail: Handler = (input) => {
  throw new TaskError(readOptionalString(input, "message") ?? "failed on purpose");
};

/** `flaky`: an INFRA_ERROR for the first `input.failures` attempts (default 1), then SUCCESS. */
const flaky: Handler = (input, ctx) => {
  const failures = readInt(input, "failures", 1, 0, 1000);
  if (ctx.attempt <= failures) {
    throw new InfraError(`flaky: attempt ${ctx.attempt} fails on purpose (first ${failures} fail)`);
  }
  return { attempt: ctx.attempt };
};

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
const llmMock: Handler = (input, ctx) => mockChat(input, ctx.signal);

/**
 * `llm.stream`: `llm.mock`'s completion written word by word, as a chat model streams its tokens: each word (with the
 * space before it) is a chunk on channel "tokens", `input.word_delay_ms` apart (default 20), then the same output as
 * `llm.mock`. Called with ExecuteNode it waits as long and answers the output alone.
 */
const llmStream: Handler = async (input, ctx) => {
  const wordDelayMs = readInt(input, "word_delay_ms", 20, 0, 60_000);
  const output = await mockChat(input, ctx.signal);
  const words = output.completion.split(" ");
  for (const [i, word] of words.entries()) {
    if (wordDelayMs > 0) await delay(wordDelayMs, undefined, { signal: ctx.signal });
    ctx.emit(i === 0 ? word : ` ${word}`, { channel: "tokens" });
  }
  return output;
};

/**
 * `llm.metered`: a metered, rate-limited provider. Answers THROTTLED ("too many requests") to the first
 * `input.throttle_first_n` attempts (default 0; counted by `context.attempt`, which every start moves on, throttled
 * ones included), with `retry_after` = `input.retry_after_ms` when given (else none: the engine's default applies).
 * Then `llm.mock`'s completion, reporting `usage` {tokens, cost_usd}: the prompt's and completion's tokens, or
 * `input.tokens` when given, at {@link METERED_USD_PER_TOKEN}.
 */
const llmMetered: Handler = async (input, ctx) => {
  const throttled = readInt(input, "throttle_first_n", 0, 0, MAX_THROTTLED_ATTEMPTS);
  const retryAfterMs = readOptionalInt(input, "retry_after_ms", 0, MAX_SLEEP_MS);
  const tokens = readOptionalInt(input, "tokens", 0, MAX_REPORTED_TOKENS);
  if (ctx.attempt <= throttled) {
    throw new Throttled(
      retryAfterMs,
      `llm.metered: too many requests (attempt ${ctx.attempt} of the first ${throttled} is throttled)`,
    );
  }
  const output = await mockChat(input, ctx.signal);
  const spent = tokens ?? output.usage.total_tokens;
  // Rounded to a micro-dollar so the sums read cleanly.
  ctx.usage({ tokens: spent, cost_usd: Math.round(spent * METERED_USD_PER_TOKEN * 1e6) / 1e6 });
  return output;
};

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
const plan: Handler = (input, ctx) => {
  const tasks = readStringList(input, "tasks", DEFAULT_PLAN_TASKS, MAX_PLAN_TASKS);
  const join = readOptionalString(input, "join");
  const taskCapability = readOptionalString(input, "task_capability") ?? "llm.mock";
  const approval = readOptionalString(input, "approval") || undefined;
  const approvalTimeoutMs = readOptionalInt(input, "approval_timeout_ms", 1, MAX_APPROVAL_TIMEOUT_MS);
  if (approvalTimeoutMs !== undefined && approval === undefined) {
    throw new InvalidInputError("approval_timeout_ms", "needs input.approval (the approval node's id)");
  }
  const planner = ctx.node.id;
  const taskIds = tasks.map((_, i) => `${planner}.task-${i}`);
  if (approval !== undefined) {
    // A wait node: no capability, completed by SignalNode (or its timeout), never by a NodeService.
    ctx.edits.insert({
      id: approval,
      name: `approve the plan of ${planner}`,
      parents: [planner],
      input: { tasks, task_ids: taskIds },
      wait: approvalTimeoutMs === undefined ? {} : { timeoutMs: approvalTimeoutMs, failOnTimeout: true },
    });
  }
  const taskParent = approval ?? planner;
  tasks.forEach((task, i) => {
    ctx.edits.insert({ id: taskIds[i]!, capability: taskCapability, input: { prompt: task }, parents: [taskParent] });
  });
  if (join !== undefined && join !== "") {
    // The planner cannot see the join's current parents, so it names all it knows must come first.
    ctx.edits.update(join, { parents: [planner, ...(approval === undefined ? [] : [approval]), ...taskIds] });
  }
  const output: JsonObject = { planned: tasks.length, task_ids: taskIds };
  if (approval !== undefined) output.approval = approval;
  return output;
};

/** The example's handlers, by capability, as `serve()` takes them. */
export const EXAMPLE_HANDLERS: Readonly<Record<ExampleCapability, Handler>> = {
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
 * Runs the node of `request` by its capability, as the SDK's server does. Bad input and unknown capabilities are
 * TASK_ERROR responses; rejects (with an AbortError) only when `signal` aborts first, e.g. because the caller
 * cancelled the call. `onChunk` receives `llm.stream`'s words (ExecuteNodeStream).
 */
export function executeExample(
  request: ExecuteNodeRequest,
  signal: AbortSignal,
  onChunk?: ChunkSink,
): Promise<ExecuteNodeResponse> {
  return executeNode(EXAMPLE_HANDLERS, request, { signal, ...(onChunk ? { onChunk } : {}) });
}
