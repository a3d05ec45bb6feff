import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** What `promtool check metrics` said about one exposition. */
export interface PromtoolResult {
  /** Exit code: 0 when the text is valid and lint-clean. */
  code: number;
  /** Its stdout and stderr together: the problems it found, one a line. */
  output: string;
}

/** Whether `promtool` (Debian package `prometheus`) is on the PATH. */
export function hasPromtool(): boolean {
  const probe = spawnSync("promtool", ["--version"], { stdio: "ignore" });
  return probe.error === undefined && probe.status === 0;
}

/**
 * Why promtool checks should be skipped, or undefined when they should run: they run whenever promtool is
 * installed, and under CI (`CI` set) a missing promtool fails the test instead of skipping it.
 */
export function promtoolSkipReason(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (hasPromtool()) return undefined;
  if (env.CI) throw new Error("promtool is missing under CI: install the Debian package `prometheus` (see .ci/run)");
  return "promtool is not installed (apt-get install -y prometheus); CI is unset, so the check is skipped";
}

/** Runs `promtool check metrics` (format and lint) over a Prometheus text exposition. */
export function promtoolCheckMetrics(exposition: string): PromtoolResult {
  const run = spawnSync("promtool", ["check", "metrics"], { input: exposition, encoding: "utf8" });
  if (run.error) throw run.error;
  return { code: run.status ?? -1, output: `${run.stdout}${run.stderr}`.trim() };
}

/**
 * Checks that PromQL expressions parse, with `promtool check rules` over a rules file recording each of them. Grafana
 * variables must be substituted first.
 */
export function promtoolCheckExpressions(expressions: readonly string[]): PromtoolResult {
  const dir = mkdtempSync(join(tmpdir(), "promtool-"));
  try {
    const rules = expressions.map((expr, i) => `  - record: check:expr${i}\n    expr: ${JSON.stringify(expr)}`);
    const file = join(dir, "rules.yml");
    writeFileSync(file, `groups:\n- name: check\n  rules:\n${rules.join("\n")}\n`);
    const run = spawnSync("promtool", ["check", "rules", file], { encoding: "utf8" });
    if (run.error) throw run.error;
    return { code: run.status ?? -1, output: `${run.stdout}${run.stderr}`.trim() };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
