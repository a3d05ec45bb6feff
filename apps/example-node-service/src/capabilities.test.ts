import { create, fromJson, type JsonObject, type JsonValue, toJson } from "@bufbuild/protobuf";
import { ValueSchema, durationMs } from "@bufbuild/protobuf/wkt";
import {
  EditType,
  type ExecuteNodeRequest,
  ExecuteNodeRequestSchema,
  type ExecuteNodeResponse,
  ExecutionStatus,
} from "@trellis/proto";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_PLAN_TASKS,
  executeExample,
  MAX_SLEEP_MS,
  METERED_USD_PER_TOKEN,
  MOCK_MODEL,
  mockCompletion,
} from "./capabilities.js";

interface RequestParts {
  id?: string;
  input?: JsonObject;
  attempt?: number;
  parents?: Record<string, JsonValue>;
  workflowInput?: JsonObject;
}

function request(capability: string, parts: RequestParts = {}): ExecuteNodeRequest {
  const id = parts.id ?? "n1";
  const parentOutputs = Object.fromEntries(
    Object.entries(parts.parents ?? {}).map(([parentId, output]) => [parentId, fromJson(ValueSchema, output)]),
  );
  return create(ExecuteNodeRequestSchema, {
    node: { id, workflowId: "wf-1", capability, input: parts.input ?? {}, attempt: parts.attempt ?? 1 },
    context: {
      workflowId: "wf-1",
      workflowName: "test",
      workflowInput: parts.workflowInput ?? {},
      parentOutputs,
      attempt: parts.attempt ?? 1,
      idempotencyKey: `wf-1/${id}`,
    },
  });
}

function run(req: ExecuteNodeRequest, signal = new AbortController().signal): Promise<ExecuteNodeResponse> {
  return executeExample(req, signal);
}

function outputOf(response: ExecuteNodeResponse): JsonValue {
  expect(response.output).toBeDefined();
  return toJson(ValueSchema, response.output!);
}

describe("echo", () => {
  it("returns the node's input, its parents' outputs, the attempt and the workflow input", async () => {
    const response = await run(
      request("echo", {
        input: { text: "hi", n: 2 },
        attempt: 3,
        parents: { a: { x: 1 }, b: "plain" },
        workflowInput: { topic: "t" },
      }),
    );

    expect(response.status).toBe(ExecutionStatus.SUCCESS);
    expect(outputOf(response)).toEqual({
      input: { text: "hi", n: 2 },
      parents: { a: { x: 1 }, b: "plain" },
      attempt: 3,
      workflow_input: { topic: "t" },
    });
    expect(response.edits).toEqual([]);
  });

  it("reads a parent output that was never set as null", async () => {
    const req = request("echo");
    req.context!.parentOutputs.empty = create(ValueSchema);

    expect(outputOf(await run(req))).toMatchObject({ parents: { empty: null } });
  });
});

describe("sleep", () => {
  it("waits input.ms before succeeding with slept_ms", async () => {
    const started = performance.now();
    const response = await run(request("sleep", { input: { ms: 50 } }));

    expect(performance.now() - started).toBeGreaterThanOrEqual(45);
    expect(response.status).toBe(ExecutionStatus.SUCCESS);
    expect(outputOf(response)).toEqual({ slept_ms: 50 });
  });

  it("waits 100 ms when input.ms is absent", async () => {
    expect(outputOf(await run(request("sleep")))).toEqual({ slept_ms: 100 });
  });

  it("stops at once when the call is cancelled", async () => {
    const controller = new AbortController();
    const started = performance.now();
    const pending = run(request("sleep", { input: { ms: MAX_SLEEP_MS } }), controller.signal);
    setTimeout(() => controller.abort(), 20);

    await expect(pending).rejects.toMatchObject({ name: "AbortError" });
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it.each([
    [MAX_SLEEP_MS + 1, `input.ms must be an integer between 0 and ${MAX_SLEEP_MS}, got ${MAX_SLEEP_MS + 1}`],
    [-1, `input.ms must be an integer between 0 and ${MAX_SLEEP_MS}, got -1`],
    ["10", `input.ms must be an integer between 0 and ${MAX_SLEEP_MS}, got "10"`],
    [1.5, `input.ms must be an integer between 0 and ${MAX_SLEEP_MS}, got 1.5`],
  ])("answers TASK_ERROR for input.ms %j", async (ms, message) => {
    const response = await run(request("sleep", { input: { ms } }));

    expect(response.status).toBe(ExecutionStatus.TASK_ERROR);
    expect(response.errorMessage).toBe(message);
  });
});

describe("fail", () => {
  it("answers TASK_ERROR with input.message", async () => {
    const response = await run(request("fail", { input: { message: "bad input" } }));

    expect(response.status).toBe(ExecutionStatus.TASK_ERROR);
    expect(response.errorMessage).toBe("bad input");
    expect(response.output).toBeUndefined();
  });

  it('answers TASK_ERROR "failed on purpose" without a message', async () => {
    const response = await run(request("fail"));

    expect(response.status).toBe(ExecutionStatus.TASK_ERROR);
    expect(response.errorMessage).toBe("failed on purpose");
  });
});

describe("flaky", () => {
  it("answers INFRA_ERROR for the first input.failures attempts, then SUCCESS with the attempt", async () => {
    const statuses: ExecutionStatus[] = [];
    for (const attempt of [1, 2, 3]) {
      statuses.push((await run(request("flaky", { input: { failures: 2 }, attempt }))).status);
    }
    const last = await run(request("flaky", { input: { failures: 2 }, attempt: 3 }));

    expect(statuses).toEqual([ExecutionStatus.INFRA_ERROR, ExecutionStatus.INFRA_ERROR, ExecutionStatus.SUCCESS]);
    expect(outputOf(last)).toEqual({ attempt: 3 });
  });

  it("fails only the first attempt by default", async () => {
    const first = await run(request("flaky", { attempt: 1 }));
    const second = await run(request("flaky", { attempt: 2 }));

    expect(first.status).toBe(ExecutionStatus.INFRA_ERROR);
    expect(first.errorMessage).toContain("attempt 1");
    expect(second.status).toBe(ExecutionStatus.SUCCESS);
  });
});

describe("llm.mock", () => {
  it("answers the same completion for the same prompt, with token counts", async () => {
    const first = outputOf(await run(request("llm.mock", { input: { prompt: "Summarise the report" } })));
    const second = outputOf(await run(request("llm.mock", { input: { prompt: "Summarise the report" } })));

    expect(first).toEqual(second);
    expect(first).toMatchObject({
      model: MOCK_MODEL,
      completion: mockCompletion("Summarise the report"),
      finish_reason: "stop",
      usage: { prompt_tokens: 5 },
    });
    const usage = (first as { usage: Record<string, number> }).usage;
    expect(usage.completion_tokens).toBeGreaterThan(0);
    expect(usage.total_tokens).toBe(usage.prompt_tokens! + usage.completion_tokens!);
  });

  it("answers different completions for different prompts", () => {
    const completions = new Set(["a", "b", "c", "d", "e"].map((prompt) => mockCompletion(prompt)));

    expect(completions.size).toBe(5);
    for (const completion of completions) expect(completion).toMatch(/^[A-Z][a-z ]+\.$/);
  });

  it("waits input.delay_ms and stops when the call is cancelled", async () => {
    const controller = new AbortController();
    const pending = run(request("llm.mock", { input: { prompt: "p", delay_ms: 60_000 } }), controller.signal);
    setTimeout(() => controller.abort(), 20);

    await expect(pending).rejects.toMatchObject({ name: "AbortError" });
  });

  it("answers TASK_ERROR without a prompt", async () => {
    const response = await run(request("llm.mock"));

    expect(response.status).toBe(ExecutionStatus.TASK_ERROR);
    expect(response.errorMessage).toBe("input.prompt is required (a string)");
  });
});

describe("llm.metered", () => {
  it("answers llm.mock's completion and reports what it spent as usage: tokens and cost_usd", async () => {
    const input = { prompt: "Summarise the report" };
    const response = await run(request("llm.metered", { input }));
    const mock = outputOf(await run(request("llm.mock", { input })));

    expect(response.status).toBe(ExecutionStatus.SUCCESS);
    expect(outputOf(response)).toEqual(mock);
    const tokens = (mock as { usage: { total_tokens: number } }).usage.total_tokens;
    expect(response.usage).toEqual({ tokens, cost_usd: Math.round(tokens * METERED_USD_PER_TOKEN * 1e6) / 1e6 });
  });

  it("reports input.tokens instead of its own count when given", async () => {
    const response = await run(request("llm.metered", { input: { prompt: "p", tokens: 50_000 } }));

    expect(response.usage).toEqual({ tokens: 50_000, cost_usd: 0.1 });
  });

  it("answers THROTTLED with retry_after to the first input.throttle_first_n attempts, then succeeds", async () => {
    const input = { prompt: "p", throttle_first_n: 2, retry_after_ms: 1500 };
    const answers = [];
    for (const attempt of [1, 2, 3]) answers.push(await run(request("llm.metered", { input, attempt })));

    expect(answers.map((a) => a.status)).toEqual([
      ExecutionStatus.THROTTLED,
      ExecutionStatus.THROTTLED,
      ExecutionStatus.SUCCESS,
    ]);
    expect(durationMs(answers[0]!.retryAfter!)).toBe(1500);
    expect(answers[0]!.errorMessage).toBe("llm.metered: too many requests (attempt 1 of the first 2 is throttled)");
    // A throttled call spends nothing.
    expect(answers[0]!.usage).toEqual({});
    expect(answers[2]!.retryAfter).toBeUndefined();
  });

  it("leaves retry_after unset without input.retry_after_ms, so the engine's default applies", async () => {
    const response = await run(request("llm.metered", { input: { prompt: "p", throttle_first_n: 1 }, attempt: 1 }));

    expect(response.status).toBe(ExecutionStatus.THROTTLED);
    expect(response.retryAfter).toBeUndefined();
  });

  it.each([
    [{}, "input.prompt is required (a string)"],
    [{ prompt: "p", tokens: -1 }, "input.tokens must be an integer between 0 and 1000000000, got -1"],
    [{ prompt: "p", throttle_first_n: 1.5 }, "input.throttle_first_n must be an integer between 0 and 1000, got 1.5"],
    [
      { prompt: "p", throttle_first_n: 1, retry_after_ms: "1s" },
      `input.retry_after_ms must be an integer between 0 and ${MAX_SLEEP_MS}, got "1s"`,
    ],
  ])("answers TASK_ERROR for input %j", async (input, message) => {
    const response = await run(request("llm.metered", { input: input as JsonObject }));

    expect(response.status).toBe(ExecutionStatus.TASK_ERROR);
    expect(response.errorMessage).toBe(message);
  });
});

describe("plan", () => {
  it("inserts one llm.mock child per default task", async () => {
    const response = await run(request("plan", { id: "planner" }));

    expect(response.status).toBe(ExecutionStatus.SUCCESS);
    expect(outputOf(response)).toEqual({
      planned: 3,
      task_ids: ["planner.task-0", "planner.task-1", "planner.task-2"],
    });
    expect(response.edits).toHaveLength(3);
    response.edits.forEach((edit, i) => {
      expect(edit.type).toBe(EditType.INSERT);
      expect(edit.node?.id).toBe(`planner.task-${i}`);
      expect(edit.node?.capability).toBe("llm.mock");
      expect(edit.node?.input).toEqual({ prompt: DEFAULT_PLAN_TASKS[i] });
      expect(edit.node?.parentIds).toEqual(["planner"]);
    });
  });

  it("uses input.tasks and input.task_capability", async () => {
    const response = await run(request("plan", { id: "p", input: { tasks: ["one", "two"], task_capability: "echo" } }));

    expect(outputOf(response)).toMatchObject({ planned: 2 });
    expect(response.edits.map((edit) => [edit.node?.id, edit.node?.capability, edit.node?.input])).toEqual([
      ["p.task-0", "echo", { prompt: "one" }],
      ["p.task-1", "echo", { prompt: "two" }],
    ]);
  });

  it("rewires input.join to wait for the planner and every inserted task", async () => {
    const response = await run(request("plan", { id: "p", input: { tasks: ["x", "y"], join: "summary" } }));

    expect(response.edits).toHaveLength(3);
    const update = response.edits[2]!;
    expect(update.type).toBe(EditType.UPDATE);
    expect(update.node?.id).toBe("summary");
    expect(update.node?.parentIds).toEqual(["p", "p.task-0", "p.task-1"]);
    expect(update.updateMask?.paths).toEqual(["parent_ids"]);
  });

  it("with input.approval inserts a wait node holding the plan, the tasks its children, the join after it", async () => {
    const response = await run(
      request("plan", {
        id: "p",
        input: { tasks: ["x", "y"], join: "summary", approval: "approve", approval_timeout_ms: 3_600_000 },
      }),
    );

    expect(outputOf(response)).toEqual({ planned: 2, task_ids: ["p.task-0", "p.task-1"], approval: "approve" });
    const [wait, ...rest] = response.edits;
    expect(wait?.type).toBe(EditType.INSERT);
    expect(wait?.node).toMatchObject({ id: "approve", capability: "", parentIds: ["p"] });
    expect(wait?.node?.input).toEqual({ tasks: ["x", "y"], task_ids: ["p.task-0", "p.task-1"] });
    expect(wait?.node?.wait?.failOnTimeout).toBe(true);
    expect(Number(wait?.node?.wait?.timeout?.seconds)).toBe(3600);
    expect(rest.map((edit) => [edit.node?.id, edit.node?.parentIds])).toEqual([
      ["p.task-0", ["approve"]],
      ["p.task-1", ["approve"]],
      ["summary", ["p", "approve", "p.task-0", "p.task-1"]],
    ]);
  });

  it("with input.approval and no timeout, the wait node waits for ever", async () => {
    const response = await run(request("plan", { id: "p", input: { tasks: ["x"], approval: "ok" } }));

    expect(response.edits[0]?.node?.wait).toBeDefined();
    expect(response.edits[0]?.node?.wait?.timeout).toBeUndefined();
  });

  it("plans nothing for an empty task list", async () => {
    const response = await run(request("plan", { input: { tasks: [] } }));

    expect(outputOf(response)).toEqual({ planned: 0, task_ids: [] });
    expect(response.edits).toEqual([]);
  });

  it.each([
    [{ tasks: "one" }, "input.tasks must be a list of strings"],
    [{ tasks: [1, 2] }, "input.tasks must be a list of strings"],
    [{ tasks: Array.from({ length: 1001 }, () => "t") }, "input.tasks must have at most 1000 items"],
    [{ join: 3 }, "input.join must be a string, got 3"],
    [{ approval: true }, "input.approval must be a string, got true"],
    [{ approval_timeout_ms: 1000 }, "input.approval_timeout_ms needs input.approval (the approval node's id)"],
    [
      { approval: "a", approval_timeout_ms: 0 },
      "input.approval_timeout_ms must be an integer between 1 and 31622400000, got 0",
    ],
  ])("answers TASK_ERROR for input %j", async (input, message) => {
    const response = await run(request("plan", { input: input as JsonObject }));

    expect(response.status).toBe(ExecutionStatus.TASK_ERROR);
    expect(response.errorMessage).toBe(message);
    expect(response.edits).toEqual([]);
  });
});

describe("executeExample", () => {
  it("answers TASK_ERROR naming an unknown capability", async () => {
    const response = await run(request("translate"));

    expect(response.status).toBe(ExecutionStatus.TASK_ERROR);
    expect(response.errorMessage).toBe('unknown capability "translate"');
  });

  it("rejects at once when the signal is already aborted", async () => {
    const controller = new AbortController();
    controller.abort(new DOMException("gone", "AbortError"));

    await expect(run(request("echo"), controller.signal)).rejects.toMatchObject({ name: "AbortError" });
  });
});
