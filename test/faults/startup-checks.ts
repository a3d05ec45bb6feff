// Shared by the fault tests of the startup path (PostgreSQL and Redis not up yet).
import type { AppProcess } from "@trellis/testing";
import { expect } from "vitest";

/**
 * Each process exited 1 and printed exactly one line besides its JSON logs, naming the app (one of `apps`), the
 * dependency and the time waited: `trellis worker: cannot start: Redis is not reachable after 1500 ms`.
 */
export async function expectGaveUpWaiting(
  processes: readonly AppProcess[],
  dependency: string,
  waitedMs: number,
  apps: readonly string[],
): Promise<void> {
  const line = new RegExp(
    `^trellis (${apps.join("|")}): cannot start: ${dependency} is not reachable after ${waitedMs} ms`,
  );
  for (const app of processes) {
    const status = await app.exited;
    expect(status.code, app.tail()).toBe(1);
    const plain = app.lines.filter((l) => l.trim() !== "" && !l.startsWith("{"));
    expect(plain, app.tail()).toHaveLength(1);
    expect(plain[0]).toMatch(line);
  }
}
