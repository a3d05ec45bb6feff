import { existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { type Browser, chromium } from "playwright-core";

/** Debian's Chromium (`.ci/run` installs it). */
export const CHROMIUM = "/usr/bin/chromium";

/** Headless, without the background connections this machine's closed network refuses. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Starts Chromium for a test file's pages. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
}

/** Where a test's pictures go (test-artifacts/ at the repository's root, never committed). */
export function artifact(name: string): string {
  const path = fileURLToPath(new URL(`../../../test-artifacts/${name}`, import.meta.url));
  mkdirSync(dirname(path), { recursive: true });
  return path;
}

/**
 * Whether the browser tests of `what` are skipped: only where Chromium is missing outside CI (in CI, which installs
 * it, they run and fail without it). Says so loudly.
 */
export function skipWithoutChromium(what: string): boolean {
  const skip = !existsSync(CHROMIUM) && !process.env.CI;
  if (skip) console.warn(`${what} SKIPPED: ${CHROMIUM} is missing (apt-get install -y chromium); CI runs them`);
  return skip;
}
