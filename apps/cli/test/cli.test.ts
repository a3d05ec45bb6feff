import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startApiServer } from "@trellis/api";
import { PgStateManager } from "@trellis/db";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import { type TestDatabase, createTestDatabase, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestStack, startTestStack } from "../../worker/test/stack.js";

const ROOT = resolve(import.meta.dirname, "../../..");
const MAIN = "apps/cli/src/main.ts";
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;

let testDb: TestDatabase;
let stack: TestStack;
let scratch: string;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_cli");
  stack = await startTestStack(testDb);
  scratch = mkdtempSync(join(tmpdir(), "trellis-cli-"));
});

afterAll(async () => {
  await stack?.close();
  await testDb?.drop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** Environment of the child CLI: this process's, without TRELLIS_* unless given, with NO_COLOR. */
interface CliEnv {
  TRELLIS_ADDR?: string;
  TRELLIS_TOKEN?: string;
  TRELLIS_DASHBOARD_URL?: string;
}

/**
 * The CLI as a child process: `node --import tsx apps/cli/src/main.ts <args>`, with `--addr <the stack's api>` unless
 * the environment gives TRELLIS_ADDR.
 */
function spawnCli(args: readonly string[], extraEnv: CliEnv = {}): ChildProcessWithoutNullStreams {
  const { TRELLIS_ADDR: _addr, TRELLIS_TOKEN: _token, TRELLIS_DASHBOARD_URL: _dashboard, ...env } = process.env;
  const addr = extraEnv.TRELLIS_ADDR === undefined ? ["--addr", stack.apiAddr] : [];
  return spawn(process.execPath, ["--import", "tsx", MAIN, ...args, ...addr], {
    cwd: ROOT,
    env: { ...env, ...extraEnv, NO_COLOR: "1" },
  });
}

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI to its end (killed after 60 s: a generous bound, for a loaded machine). `onStdout` sees the output so
 * far each time more arrives; `stdin` is written to its standard input (closed at once without it).
 */
function cli(
  args: readonly string[],
  onStdout?: (soFar: string) => void,
  env: CliEnv = {},
  stdin = "",
): Promise<CliRun> {
  const child = spawnCli(args, env);
  child.stdin.end(stdin);
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
    onStdout?.(stdout);
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  return new Promise((done, fail) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      fail(new Error(`trellis ${args.join(" ")} did not end in time\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, 60_000);
    child.on("error", fail);
    child.on("close", (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
  });
}

function idOf(output: string): string {
  const id = UUID.exec(output)?.[0];
  if (id === undefined) throw new Error(`no workflow id in:\n${output}`);
  return id;
}

/** The lines of `stdout` that report `node` entering `label` (PASS, RUNNING, ...). */
function nodeLines(stdout: string, node: string, label: string): string[] {
  const escaped = node.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const pattern = new RegExp(`\\] \\S ${escaped}\\s+${label}\\b`);
  return stdout.split("\n").filter((line) => pattern.test(line));
}

describe("trellis run --watch", () => {
  it("follows the diamond example to SUCCEEDED over WatchWorkflow, with progress, and exits 0", async () => {
    const run = await cli(["run", "docs/examples/diamond.json", "--watch"]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^created workflow \S+ \(diamond, 4 nodes\)$/m);
    for (const node of ["a", "b", "c", "d"]) expect(nodeLines(run.stdout, node, "PASS")).toHaveLength(1);
    // c is `flaky`: its first attempt fails and is retried.
    expect(run.stdout).toMatch(/↻ c\s+RETRY\s+attempt 1 failed {2}INFRA_ERROR: flaky/);
    expect(run.stdout).toMatch(/✔ c\s+PASS\s+in \S+ \(attempt 2\)/);
    // The counter in front of each line is the progress: 4/4 only once the last node passed.
    expect(run.stdout).toMatch(/\[4\/4\] ✔ d\s+PASS/);
    expect(run.stdout).toMatch(/\[#{30}\] 4\/4 nodes done · SUCCEEDED · \S+/);
    expect(run.stdout.trimEnd().split("\n").at(-1)).toMatch(/^workflow \S+ SUCCEEDED \(4 PASS\)$/);
  });

  it("exits 1 when the workflow fails, showing the failure and what it skipped", async () => {
    const run = await cli(["run", "docs/examples/failing.json", "--watch"]);
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/✘ broken\s+FAIL\s+TASK_ERROR: this step fails on purpose/);
    expect(run.stdout).toMatch(/↷ never\s+SKIPPED\s+ancestor "broken" failed/);
    expect(run.stdout).toMatch(/3\/3 nodes done · FAILED/);
    expect(run.stdout).toMatch(/^workflow \S+ FAILED \(1 PASS, 1 FAIL, 1 SKIPPED\)$/m);
  });

  it("reads YAML files, snake_case fields included, and names an unnamed workflow after its file", async () => {
    const file = join(scratch, "yaml-chain.yaml");
    writeFileSync(
      file,
      [
        "nodes:",
        "  - id: first",
        "    capability: echo",
        "  - id: second",
        "    capability: echo",
        "    parent_ids: [first]",
      ].join("\n"),
    );
    const run = await cli(["run", file, "--watch"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/created workflow \S+ \(yaml-chain, 2 nodes\)/);
    expect(run.stdout).toMatch(/workflow \S+ SUCCEEDED \(2 PASS\)/);
  });

  it("says what is wrong with a bad workflow file and exits 1 without creating anything", async () => {
    const file = join(scratch, "bad.json");
    writeFileSync(file, '{"name": "bad", "nodes": [{"id": "a", "capability": "echo", "colour": "red"}]}');
    const run = await cli(["run", file]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^trellis run: .*bad\.json: not a CreateWorkflowRequest: .*colour/m);
    const invalid = join(scratch, "cycle.json");
    writeFileSync(
      invalid,
      JSON.stringify({
        nodes: [
          { id: "a", capability: "echo", parentIds: ["b"] },
          { id: "b", capability: "echo", parentIds: ["a"] },
        ],
      }),
    );
    const rejected = await cli(["run", invalid]);
    expect(rejected.code).toBe(1);
    expect(rejected.stderr).toContain("trellis run: INVALID_ARGUMENT: nodes: cycle a -> b -> a");
  });
});

describe("trellis watch", () => {
  it("resumes after the last event when the stream breaks, printing every change once", async () => {
    // A wait node holds the workflow until the test signals it, so the stream breaks while it runs however slowly the
    // CLI starts (a timed node could end before a loaded machine's watch even connects).
    const file = join(scratch, "gated.json");
    writeFileSync(
      file,
      JSON.stringify({
        name: "gated",
        nodes: [
          { id: "gate", wait: {} },
          { id: "after", capability: "echo", parentIds: ["gate"] },
        ],
      }),
    );
    const created = await cli(["run", file]);
    const id = idOf(created.stdout);
    let restarted: Promise<CliRun> | undefined;
    const watch = await cli(["watch", id], (soFar) => {
      // Break the stream while `gate` waits: the api goes away and comes back on the same port; then open the gate.
      if (restarted === undefined && nodeLines(soFar, "gate", "WAITING").length > 0) {
        restarted = stack.restartApi().then(() => cli(["signal", id, "gate"]));
      }
    });
    expect(restarted).toBeDefined();
    const signal = await restarted;
    expect(signal?.code).toBe(0);
    expect(watch.stderr).toMatch(/event stream interrupted \(\w+.*\); resuming after event \d+/);
    expect(watch.code).toBe(0);
    expect(nodeLines(watch.stdout, "gate", "WAITING")).toHaveLength(1);
    expect(nodeLines(watch.stdout, "gate", "PASS")).toHaveLength(1);
    expect(nodeLines(watch.stdout, "after", "PASS")).toHaveLength(1);
    expect(watch.stdout).toMatch(/workflow \S+ SUCCEEDED \(2 PASS\)/);
  }, 90_000);

  it("replays a finished workflow and exits with its outcome", async () => {
    const id = idOf((await cli(["run", "docs/examples/failing.json", "--watch"])).stdout);
    const watch = await cli(["watch", id]);
    expect(watch.code).toBe(1);
    expect(watch.stdout).toMatch(/^watching workflow \S+$/m);
    expect(watch.stdout).toMatch(/✘ broken\s+FAIL/);
    expect(watch.stdout).toMatch(/workflow \S+ FAILED/);
  });

  it("exits 1 with NOT_FOUND for an unknown workflow", async () => {
    const watch = await cli(["watch", "00000000-0000-4000-8000-000000000000"]);
    expect(watch.code).toBe(1);
    expect(watch.stderr).toContain("trellis watch: NOT_FOUND: workflow 00000000-0000-4000-8000-000000000000 not found");
  });
});

describe("trellis fork", () => {
  it("re-runs a failed workflow from the failed node with a new input, keeping the rest, to SUCCEEDED", async () => {
    const file = join(scratch, "publish.json");
    writeFileSync(
      file,
      JSON.stringify({
        name: "publish",
        nodes: [
          { id: "write", capability: "echo", input: { text: "draft" } },
          {
            id: "publish",
            capability: "flaky",
            parentIds: ["write"],
            input: { failures: 5 },
            retryPolicy: { maxAttempts: 1 },
          },
        ],
      }),
    );
    const failed = await cli(["run", file, "--watch"]);
    expect(failed.code).toBe(1);
    const source = idOf(failed.stdout);

    const fork = await cli(["fork", source, "--from", "publish", "--input", 'publish={"failures": 0}', "--watch"]);
    expect(fork.stderr).toBe("");
    expect(fork.code).toBe(0);
    expect(fork.stdout).toMatch(
      new RegExp(`^forked workflow \\S+ from ${source} \\(publish: 1 node kept, 1 to run again\\)$`, "m"),
    );
    expect(fork.stdout).toMatch(new RegExp(`= write\\s+KEPT\\s+output of ${source}`));
    expect(nodeLines(fork.stdout, "write", "RUNNING")).toEqual([]);
    expect(nodeLines(fork.stdout, "publish", "PASS")).toHaveLength(1);
    expect(fork.stdout.trimEnd().split("\n").at(-1)).toMatch(/^workflow \S+ SUCCEEDED \(2 PASS\)$/);

    const refused = await cli(["fork", source, "--from", "publish,nope"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('from_node_ids[1]: no node "nope"');
  });
});

describe("trellis signal", () => {
  /** Runs `file` with --watch and signals `approve` with `signalArgs` once the watch shows it WAITING. */
  async function runAndSignal(file: string, signalArgs: string[]): Promise<{ run: CliRun; signal: CliRun }> {
    let signal: Promise<CliRun> | undefined;
    const run = await cli(["run", file, "--watch"], (soFar) => {
      if (signal === undefined && nodeLines(soFar, "approve", "WAITING").length > 0) {
        signal = cli(["signal", idOf(soFar), "approve", ...signalArgs]);
      }
    });
    if (signal === undefined) throw new Error(`approve was never WAITING:\n${run.stdout}\n${run.stderr}`);
    return { run, signal: await signal };
  }

  it("approves the plan the planner made wait (docs/examples/approval.json): its tasks and the report run", async () => {
    const { run, signal } = await runAndSignal("docs/examples/approval.json", [
      "--output",
      '{"approved": true}',
      "--request-id",
      "cli-1",
    ]);
    expect(signal.stderr).toBe("");
    expect(signal.code).toBe(0);
    expect(signal.stdout).toBe("node approve PASS (signaled)\n");
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/\+ approve\s+ADDED\s+wait node after plan$/m);
    expect(nodeLines(run.stdout, "approve", "WAITING")).toEqual([
      expect.stringMatching(/WAITING\s+waiting for a signal$/),
    ]);
    expect(run.stdout).toMatch(/✉ approve\s+SIGNALED\s+pass request cli-1/);
    expect(nodeLines(run.stdout, "approve", "PASS")).toEqual([expect.stringMatching(/PASS\s+after waiting /)]);
    for (const task of ["plan.task-0", "plan.task-1", "plan.task-2", "report"]) {
      expect(nodeLines(run.stdout, task, "PASS"), task).toHaveLength(1);
    }
    expect(run.stdout.trimEnd().split("\n").at(-1)).toMatch(/^workflow \S+ SUCCEEDED \(6 PASS\)$/);

    const id = idOf(run.stdout);
    const again = await cli(["signal", id, "approve", "--output", '{"approved": true}', "--request-id", "cli-1"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toBe("node approve PASS (signaled)\n");
    const refused = await cli(["signal", id, "approve", "--reject"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("FAILED_PRECONDITION");
    const noWait = await cli(["signal", id, "report"]);
    expect(noWait.code).toBe(1);
    expect(noWait.stderr).toContain('node "report" does not wait for a signal');
  });

  it("rejects the plan with a message: the tasks and the report are skipped, the workflow FAILED", async () => {
    const { run, signal } = await runAndSignal("docs/examples/approval.json", ["--reject", "--message", "too broad"]);
    expect(signal.stdout).toBe("node approve FAIL (rejected)  TASK_ERROR: too broad\n");
    expect(run.code).toBe(1);
    expect(nodeLines(run.stdout, "approve", "FAIL")).toEqual([expect.stringMatching(/FAIL\s+TASK_ERROR: too broad$/)]);
    expect(nodeLines(run.stdout, "report", "SKIPPED")).toHaveLength(1);
    expect(run.stdout.trimEnd().split("\n").at(-1)).toMatch(/^workflow \S+ FAILED \(1 PASS, 1 FAIL, 4 SKIPPED\)$/);
  });
});

describe("trellis list, get and actions", () => {
  it("pauses, resumes, cancels and retries, printing the new status", async () => {
    const file = join(scratch, "steer.json");
    writeFileSync(
      file,
      JSON.stringify({
        name: "steer",
        nodes: [
          { id: "hold", capability: "sleep", input: { ms: 60_000 } },
          { id: "later", capability: "echo", parentIds: ["hold"] },
        ],
      }),
    );
    const id = idOf((await cli(["run", file])).stdout);
    expect((await cli(["pause", id])).stdout.trim()).toBe(`workflow ${id} PAUSED`);
    expect((await cli(["resume", id])).stdout.trim()).toBe(`workflow ${id} RUNNING`);
    const resumeAgain = await cli(["resume", id]);
    expect(resumeAgain.code).toBe(1);
    expect(resumeAgain.stderr).toContain("FAILED_PRECONDITION: cannot RESUME workflow in status RUNNING");
    expect((await cli(["cancel", id])).stdout.trim()).toBe(`workflow ${id} CANCELLED`);
    const watch = await cli(["watch", id]);
    expect(watch.code).toBe(1);
    expect(watch.stdout).toMatch(/■ later\s+CANCELLED\s+workflow cancelled/);
    expect(watch.stdout).toMatch(/workflow \S+ CANCELLED \(2 CANCELLED\)/);

    const failed = idOf((await cli(["run", "docs/examples/failing.json", "--watch"])).stdout);
    expect((await cli(["retry", failed])).stdout.trim()).toBe(`workflow ${failed} RUNNING`);
    await waitFor(async () => (await cli(["get", failed])).stdout.includes("  FAILED"), { timeoutMs: 15_000 });
  });

  it("lists workflows by status and shows one as a table or as protobuf JSON", async () => {
    const id = idOf((await cli(["run", "docs/examples/diamond.json", "--watch"])).stdout);
    const listed = await cli(["list", "--status", "succeeded", "--limit", "500"]);
    expect(listed.code).toBe(0);
    expect(listed.stdout.split("\n")[0]).toMatch(/^ID\s+STATUS\s+CREATED\s+NAME$/);
    expect(listed.stdout).toMatch(new RegExp(`^${id}\\s+SUCCEEDED\\s+\\S+\\s+diamond$`, "m"));
    expect(listed.stdout).not.toMatch(/\sFAILED\s/);

    const shown = await cli(["get", id]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(new RegExp(`^workflow ${id}  diamond  SUCCEEDED$`, "m"));
    expect(shown.stdout).toMatch(/^NODE\s+CAPABILITY\s+STATUS\s+ATTEMPTS\s+DURATION\s+PARENTS\s+OUTPUT\s+DETAIL$/m);
    // c failed once (flaky) and passed on its second attempt: two attempts, the duration of the last, its output.
    expect(shown.stdout).toMatch(/^c\s+flaky\s+PASS\s+2\s+\d+(\.\d+)?m?s\s+a\s+\S.*$/m);
    expect(shown.stdout).toMatch(/^d\s+echo\s+PASS\s+1\s+\d+(\.\d+)?m?s\s+b,c\s+\S.*$/m);

    const json = JSON.parse((await cli(["get", id, "--json"])).stdout) as { id: string; status: string };
    expect(json).toMatchObject({ id, status: "WORKFLOW_STATUS_SUCCEEDED" });

    const bad = await cli(["list", "--status", "done"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(
      '--status: "done" is not one of pending, running, paused, succeeded, failed, cancelled',
    );
  });
});

/** Tests that spawn several CLIs one after another get longer than one spawn's 25 s on a busy machine. */
const SPAWNS_TIMEOUT_MS = 120_000;

describe("trellis --version and --help", () => {
  it("prints the package's version, and each command's own flags", { timeout: SPAWNS_TIMEOUT_MS }, async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "apps/cli/package.json"), "utf8")) as { version: string };
    const version = await cli(["--version"]);
    expect(version.code).toBe(0);
    expect(version.stdout).toBe(`${pkg.version}\n`);

    const help = await cli(["run", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stderr).toBe("");
    expect(help.stdout).toMatch(/^Usage: trellis run \[options\] <FILE>$/m);
    for (const flag of ["--watch", "--chunks", "--input <JSON|@FILE>", "--addr <HOST:PORT>", "-h, --help"]) {
      expect(help.stdout, flag).toContain(flag);
    }
    const bad = await cli(["run", "x.json", "--status", "failed"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe(
      "trellis: run: --status is not an option of this command (`trellis run --help` shows its options)\n",
    );
  });
});

describe("trellis run: stdin, --input, the dashboard link and file errors", () => {
  const WORKFLOW = JSON.stringify({
    name: "piped",
    input: { topic: "from the file" },
    nodes: [{ id: "only", capability: "echo" }],
  });

  it("reads the workflow from standard input with -, takes --input @file, and links the dashboard", {
    timeout: SPAWNS_TIMEOUT_MS,
  }, async () => {
    const inputFile = join(scratch, "input.json");
    writeFileSync(inputFile, '{"topic": "from --input", "depth": 2}');
    const run = await cli(["run", "-", "--input", `@${inputFile}`], undefined, {}, WORKFLOW);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const id = idOf(run.stdout);
    expect(run.stdout).toBe(
      `created workflow ${id} (piped, 1 nodes)\ndashboard http://localhost:3000/workflows/${id}\n`,
    );
    const json = JSON.parse((await cli(["get", id, "--json"])).stdout) as { input: unknown };
    expect(json.input).toEqual({ topic: "from --input", depth: 2 });

    // --watch prints the link before it follows; TRELLIS_DASHBOARD_URL moves it.
    const env = { TRELLIS_DASHBOARD_URL: "https://trellis.example.com/ops/" };
    const watched = await cli(["run", "-", "--watch", "--input", '{"topic":"inline"}'], undefined, env, WORKFLOW);
    expect(watched.code).toBe(0);
    const lines = watched.stdout.split("\n");
    expect(lines[1]).toBe(`dashboard https://trellis.example.com/ops/workflows/${idOf(watched.stdout)}`);
    expect(watched.stdout.trimEnd().split("\n").at(-1)).toMatch(/^workflow \S+ SUCCEEDED \(1 PASS\)$/);
  });

  it("names --input when its JSON is bad or its file is missing, and exits 2 without creating anything", {
    timeout: SPAWNS_TIMEOUT_MS,
  }, async () => {
    const before = JSON.parse((await cli(["list", "--json", "--limit", "1000"])).stdout) as { workflows?: unknown[] };
    const badJson = await cli(["run", "-", "--input", "{topic: 1}"], undefined, {}, WORKFLOW);
    expect(badJson.code).toBe(2);
    expect(badJson.stderr).toMatch(/^trellis: --input: not JSON at line 1, column 2: /);
    const missing = await cli(["run", "-", "--input", "@/nonexistent/input.json"], undefined, {}, WORKFLOW);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("trellis: --input: /nonexistent/input.json: no such file");
    const after = JSON.parse((await cli(["list", "--json", "--limit", "1000"])).stdout) as { workflows?: unknown[] };
    expect(after.workflows?.length).toBe(before.workflows?.length);
  });

  it("shows a broken YAML file's whole parser message with the line and column, and exits 1", {
    timeout: SPAWNS_TIMEOUT_MS,
  }, async () => {
    const file = join(scratch, "broken.yaml");
    writeFileSync(
      file,
      ["name: broken", "nodes:", "  - id: a", "    capability: [echo", "  - id: b", "    capability: echo", ""].join(
        "\n",
      ),
    );
    const run = await cli(["run", file]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(/^trellis run: .*broken\.yaml: not valid YAML: .+ at line 5, column 3:$/m);
    // YAML's excerpt: the lines around the error and a caret under its column.
    expect(run.stderr).toContain("    capability: [echo\n  - id: b\n  ^");
  });
});

describe("trellis list --json and --label", () => {
  it("filters by labels through ListWorkflows and prints one JSON document", {
    timeout: SPAWNS_TIMEOUT_MS,
  }, async () => {
    const file = join(scratch, "labelled.json");
    const labelled = (team: string) =>
      JSON.stringify({
        name: `for-${team}`,
        labels: { team, suite: "cli-labels" },
        nodes: [{ id: "a", capability: "echo" }],
      });
    writeFileSync(file, labelled("ops"));
    const ops = idOf((await cli(["run", file])).stdout);
    writeFileSync(file, labelled("search"));
    const search = idOf((await cli(["run", file])).stdout);

    const table = await cli(["list", "--label", "suite=cli-labels", "--label", "team=ops"]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(new RegExp(`^${ops}\\s+\\S+\\s+\\S+\\s+for-ops$`, "m"));
    expect(table.stdout).not.toContain(search);

    const json = await cli(["list", "--json", "--label", "suite=cli-labels"]);
    expect(json.code).toBe(0);
    const document = JSON.parse(json.stdout) as { workflows: { id: string; labels: Record<string, string> }[] };
    expect(document.workflows.map((w) => w.id)).toEqual([search, ops]);
    expect(document.workflows[0]?.labels).toEqual({ team: "search", suite: "cli-labels" });

    const none = await cli(["list", "--label", "suite=nothing-here"]);
    expect(none.stdout).toBe("no workflows labelled suite=nothing-here\n");
    expect(JSON.parse((await cli(["list", "--json", "--label", "suite=nothing-here"])).stdout)).toEqual({
      workflows: [],
    });
  });
});

describe("trellis limits and flow control", () => {
  it("sets, lists and deletes limits, refusing bad ones with the api's reason", async () => {
    const cap = await cli(["limits", "set", "model:cli", "--max-concurrency", "2"]);
    expect(cap.stderr).toBe("");
    expect(cap.code).toBe(0);
    expect(cap.stdout.trim()).toBe("limit model:cli set: cap 2");
    const rate = await cli(["limits", "set", "tenant:cli", "--rate", "100000", "--period", "1m", "--unit", "tokens"]);
    expect(rate.stdout.trim()).toBe("limit tenant:cli set: rate 100000 tokens/1m, burst 100000");

    const listed = await cli(["limits"]);
    expect(listed.code).toBe(0);
    expect(listed.stdout.split("\n")[0]).toMatch(
      /^KEY\s+CAP\s+RUNNING\s+WAITING\s+RATE\s+BURST\s+AVAILABLE\s+THROTTLED UNTIL$/,
    );
    expect(listed.stdout).toMatch(/^model:cli\s+2\s+0\s+0\s+-\s+-\s+-\s+-$/m);
    expect(listed.stdout).toMatch(/^tenant:cli\s+-\s+0\s+0\s+100000 tokens\/1m\s+100000\s+100000\s+-$/m);

    const refused = await cli(["limits", "set", "tenant:cli", "--rate", "0.5"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^trellis limits set: INVALID_ARGUMENT: limit\.burst: /m);
    const usage = await cli(["limits", "set", "tenant:cli", "--burst", "5"]);
    expect(usage.code).toBe(2);

    expect((await cli(["limits", "delete", "tenant:cli"])).stdout.trim()).toBe("limit tenant:cli deleted");
    const again = await cli(["limits", "delete", "tenant:cli"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("trellis limits delete: NOT_FOUND");
    expect((await cli(["limits"])).stdout).not.toContain("tenant:cli");
    await cli(["limits", "delete", "model:cli"]);
  });

  it("says which limit holds a node back instead of a silent PENDING", async () => {
    await cli(["limits", "set", "model:hold", "--max-concurrency", "1"]);
    const file = join(scratch, "held.json");
    writeFileSync(
      file,
      JSON.stringify({
        name: "held",
        nodes: [
          { id: "first", capability: "sleep", input: { ms: 60_000 }, limitKeys: ["model:hold"], priority: 5 },
          { id: "second", capability: "sleep", input: { ms: 60_000 }, limitKeys: ["model:hold"] },
        ],
      }),
    );
    const id = idOf((await cli(["run", file])).stdout);
    const shown = await waitFor(
      async () => {
        const got = await cli(["get", id]);
        const held = /^second\s+sleep\s+PENDING\s+0\s+-\s+-\s+0\s+model:hold\s+-\s+held by model:hold$/m;
        return held.test(got.stdout) && got;
      },
      { timeoutMs: 15_000, description: "second to be held by model:hold" },
    );
    expect(shown.stdout).toMatch(
      /^NODE\s+CAPABILITY\s+STATUS\s+ATTEMPTS\s+DURATION\s+PARENTS\s+PRIORITY\s+LIMIT KEYS\s+OUTPUT\s+DETAIL$/m,
    );
    // A running node's duration so far ends with "…".
    expect(shown.stdout).toMatch(/^first\s+sleep\s+RUNNING\s+1\s+\S+…\s+-\s+5\s+model:hold\s+-$/m);
    const limits = await cli(["limits"]);
    expect(limits.stdout).toMatch(/^model:hold\s+1\s+1\s+1\s/m);
    const node = await cli(["get", id, "--node", "second"]);
    expect(node.stdout.split("\n")[0]).toBe("node second  sleep  PENDING  held by model:hold");
    await cli(["cancel", id]);
    await cli(["limits", "delete", "model:hold"]);
  });

  it("shows a throttled attempt, what the next one spent and the workflow's usage against its budget", async () => {
    const file = join(scratch, "metered.json");
    writeFileSync(
      file,
      JSON.stringify({
        name: "metered",
        budget: { tokens: 100_000 },
        nodes: [
          {
            id: "ask",
            capability: "llm.metered",
            limitKeys: ["tenant:metered"],
            input: { prompt: "Summarise", tokens: 500, throttle_first_n: 1, retry_after_ms: 200 },
          },
        ],
      }),
    );
    const run = await cli(["run", file, "--watch"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/⧖ ask\s+THROTTLED\s+retry in 200ms {2}pauses tenant:metered, capability:llm\.metered/);
    expect(run.stdout).toMatch(/✔ ask\s+PASS/);
    const id = idOf(run.stdout);

    const shown = await cli(["get", id]);
    expect(shown.stdout).toMatch(/^usage cost_usd=0\.001 tokens=500 · budget tokens=100000$/m);
    const node = await cli(["get", id, "--node", "ask"]);
    expect(node.code).toBe(0);
    expect(node.stdout).toMatch(/^ATTEMPT\s+STATUS\s+STARTED\s+TOOK\s+WORKER\s+USAGE\s+ERROR$/m);
    expect(node.stdout).toMatch(/^1\s+THROTTLED\s+\S+\s+\S+\s+\S+\s+-/m);
    expect(node.stdout).toMatch(/^2\s+PASS\s+\S+\s+\S+\s+\S+\s+cost_usd=0\.001 tokens=500$/m);
    const json = JSON.parse((await cli(["get", id, "--node", "ask", "--json"])).stdout) as {
      attempts: { status: string; usage?: Record<string, number> }[];
    };
    expect(json.attempts.map((a) => a.status)).toEqual(["THROTTLED", "PASS"]);
  });
});

describe("--token and TRELLIS_TOKEN", () => {
  it("send the bearer token an api with API_TOKEN wants, from the flag or the environment", async () => {
    const stateManager = new PgStateManager(testDb.db);
    const secured = await startApiServer({
      stateManager,
      logger: createLogger({ app: "api", level: "silent" }),
      registry: createMetricsRegistry({ app: "api", collectDefault: false }),
      settings: {
        grpcAddr: { host: "127.0.0.1", port: 0, address: "127.0.0.1:0" },
        apiToken: "s3cret",
        tls: undefined,
        maxReceiveBytes: 1024 * 1024,
      },
    });
    try {
      const TRELLIS_ADDR = `127.0.0.1:${secured.port}`;
      const refused = await cli(["list"], undefined, { TRELLIS_ADDR });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain("trellis list: UNAUTHENTICATED: authorization: required");
      expect(refused.stderr).toContain("--token or TRELLIS_TOKEN sets the token");
      expect((await cli(["list", "--token", "s3cret"], undefined, { TRELLIS_ADDR })).code).toBe(0);
      expect((await cli(["list"], undefined, { TRELLIS_ADDR, TRELLIS_TOKEN: "s3cret" })).code).toBe(0);
    } finally {
      await secured.close(500);
    }
  });
});

const TOUR_FILE = join(ROOT, "docs/cli-tour.txt");
const README = join(ROOT, "README.md");
const TOUR_START = "<!-- cli-tour:start (checked by apps/cli/test/cli.test.ts; UPDATE_TOUR=1 rewrites it) -->";
const TOUR_END = "<!-- cli-tour:end -->";

/**
 * The tour with what changes from run to run masked (ids, times, durations, progress counters and the order of lines,
 * since concurrent nodes interleave differently), to tell a real change of the CLI's output from noise.
 */
function shape(text: string): string {
  return text
    .replace(new RegExp(UUID.source, "g"), "<id>")
    .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/g, "<time>")
    .replace(/\d+(\.\d+)?(ms|s)\b|\d+m\d\ds\b/g, "<duration>")
    .replace(/\[\d+\/(\d+)\]/g, "[n/$1]")
    .replace(/ +/g, " ")
    .split("\n")
    .sort()
    .join("\n");
}

/** `UPDATE_TOUR=1`: the tour test rewrites docs/cli-tour.txt and README.md's block instead of failing on a change. */
const UPDATE_TOUR = process.env.UPDATE_TOUR === "1";

describe("the README's CLI tour", () => {
  it("is the output of real runs, as docs/cli-tour.txt and README.md show it (UPDATE_TOUR=1 rewrites them)", async () => {
    const parts: string[] = [];
    const step = async (args: string[], exitShown = false) => {
      const run = await cli(args);
      parts.push(`$ npx trellis ${args.join(" ")}`, run.stdout.trimEnd());
      if (exitShown) parts.push("$ echo $?", String(run.code));
      return run;
    };
    const diamond = await step(["run", "docs/examples/diamond.json", "--watch"]);
    expect(diamond.code).toBe(0);
    const failing = await step(["run", "docs/examples/failing.json", "--watch"], true);
    expect(failing.code).toBe(1);
    await step(["get", idOf(failing.stdout)]);
    await step(["list", "--limit", "2"]);
    const tour = `${parts.join("\n")}\n`;

    const previous = readFileSync(TOUR_FILE, { encoding: "utf8", flag: "a+" });
    if (shape(previous) !== shape(tour)) {
      if (!UPDATE_TOUR) {
        // A test never rewrites tracked files on its own: the docs would change under whoever runs it.
        expect(shape(tour), "docs/cli-tour.txt is stale: rerun this test with UPDATE_TOUR=1").toBe(shape(previous));
      }
      writeFileSync(TOUR_FILE, tour);
    }
    const current = readFileSync(TOUR_FILE, "utf8");
    const readme = readFileSync(README, "utf8");
    const start = readme.indexOf(TOUR_START);
    const end = readme.indexOf(TOUR_END);
    expect(start, `README.md has the ${TOUR_START} marker`).toBeGreaterThanOrEqual(0);
    expect(end).toBeGreaterThan(start);
    const block = `${TOUR_START}\n\n\`\`\`console\n${current}\`\`\`\n\n`;
    if (readme.slice(start, end) !== block) {
      expect(UPDATE_TOUR, "README.md's CLI tour is stale: rerun this test with UPDATE_TOUR=1").toBe(true);
      writeFileSync(README, readme.slice(0, start) + block + readme.slice(end));
    }
    expect(readFileSync(README, "utf8")).toContain(current);
  });
});
