import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "./app-process.js";

/** Where {@link recordMeasurement} appends: `test-artifacts/measurements.jsonl` (git-ignored). */
export const MEASUREMENTS_FILE = join(REPO_ROOT, "test-artifacts", "measurements.jsonl");

/**
 * Keeps a figure a test measured (a recovery time, a soak's RSS) for the docs and the report: one JSON line in
 * {@link MEASUREMENTS_FILE} and one line on stdout.
 */
export function recordMeasurement(name: string, figures: Record<string, number | string | boolean>): void {
  const line = JSON.stringify({ name, at: new Date().toISOString(), ...figures });
  try {
    mkdirSync(join(REPO_ROOT, "test-artifacts"), { recursive: true });
    appendFileSync(MEASUREMENTS_FILE, `${line}\n`);
  } catch {
    // Measurements are a by-product; a read-only checkout must not fail the test.
  }
  console.log(`[measurement] ${line}`);
}
