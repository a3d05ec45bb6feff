import { createHash, timingSafeEqual } from "node:crypto";
import { type FSWatcher, readFileSync, statSync, watch } from "node:fs";
import type { Logger } from "pino";
import { parse as parseYaml } from "yaml";

/** What a token may do: `read` < `write` < `admin` (docs/security.md). */
export type TokenRole = "read" | "write" | "admin";

const ROLES: readonly TokenRole[] = ["read", "write", "admin"];

/** One entry of `API_TOKENS_FILE`, validated. */
export interface TokenEntry {
  /** Unique name: the `actor` of the events its calls cause and the `token` label of the denied-calls metric. */
  name: string;
  /** SHA-256 of the token, lowercase hex. */
  sha256: string;
  role: TokenRole;
  /** The token's scope: it sees only workflows carrying every one of these labels. Empty: every workflow. */
  labels: Readonly<Record<string, string>>;
}

/** The name `API_TOKEN` gets as an admin token. */
export const LEGACY_TOKEN_NAME = "api-token";

/** Whether `role` allows what `needed` requires. */
export function roleAllows(role: TokenRole, needed: TokenRole): boolean {
  return ROLES.indexOf(role) >= ROLES.indexOf(needed);
}

/** Whether a token is scoped to labels (a tenant). */
export function isScoped(entry: Pick<TokenEntry, "labels">): boolean {
  return Object.keys(entry.labels).length > 0;
}

/** A problem of the token file; its message names the entry. */
export class TokenFileError extends Error {}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$/;
const HEX64 = /^[0-9a-f]{64}$/;

function describe(index: number, name: unknown): string {
  return typeof name === "string" && name !== "" ? `entry ${index} (${JSON.stringify(name)})` : `entry ${index}`;
}

function entryOf(raw: unknown, index: number): TokenEntry {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new TokenFileError(`entry ${index}: must be an object { name, token_sha256, role, labels }`);
  }
  const fields = raw as Record<string, unknown>;
  const where = describe(index, fields.name);
  if ("token" in fields) {
    throw new TokenFileError(`${where}: a plaintext "token" is refused; store its SHA-256 hex as "token_sha256"`);
  }
  for (const key of Object.keys(fields)) {
    if (!["name", "token_sha256", "role", "labels"].includes(key)) {
      throw new TokenFileError(`${where}: unknown field ${JSON.stringify(key)}`);
    }
  }
  if (typeof fields.name !== "string" || !NAME.test(fields.name)) {
    throw new TokenFileError(`${where}: "name" must be 1-128 characters of [A-Za-z0-9_.@-]`);
  }
  const sha = fields.token_sha256;
  if (typeof sha !== "string" || !HEX64.test(sha.toLowerCase())) {
    throw new TokenFileError(`${where}: "token_sha256" must be 64 hex characters (the SHA-256 of the token)`);
  }
  const role = fields.role;
  if (typeof role !== "string" || !ROLES.includes(role as TokenRole)) {
    throw new TokenFileError(`${where}: unknown role ${JSON.stringify(role)} (read, write or admin)`);
  }
  const labels: Record<string, string> = {};
  if (fields.labels !== undefined && fields.labels !== null) {
    if (typeof fields.labels !== "object" || Array.isArray(fields.labels)) {
      throw new TokenFileError(`${where}: "labels" must be a map of strings`);
    }
    for (const [key, value] of Object.entries(fields.labels as Record<string, unknown>)) {
      if (key === "" || typeof value !== "string") {
        throw new TokenFileError(`${where}: label ${JSON.stringify(key)} must be a non-empty key with a string value`);
      }
      labels[key] = value;
    }
  }
  if (role === "admin" && Object.keys(labels).length > 0) {
    // Limits and schedules are global: an admin scoped to a tenant would reach every tenant through them.
    throw new TokenFileError(`${where}: role "admin" cannot have labels (limits and schedules are global)`);
  }
  return { name: fields.name, sha256: sha.toLowerCase(), role: role as TokenRole, labels };
}

/**
 * Parses the token file's text: a JSON or YAML list (JSON is YAML, so one parser reads both). Throws a TokenFileError
 * naming the first bad entry.
 */
export function parseTokenFile(text: string): TokenEntry[] {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (error) {
    throw new TokenFileError(`not JSON or YAML: ${error instanceof Error ? error.message.split("\n")[0] : error}`);
  }
  if (!Array.isArray(raw)) throw new TokenFileError("must be a list of { name, token_sha256, role, labels }");
  const entries = raw.map(entryOf);
  const names = new Set<string>();
  const digests = new Set<string>();
  entries.forEach((entry, i) => {
    if (names.has(entry.name) || entry.name === LEGACY_TOKEN_NAME) {
      throw new TokenFileError(`${describe(i, entry.name)}: duplicate name`);
    }
    if (digests.has(entry.sha256)) throw new TokenFileError(`${describe(i, entry.name)}: duplicate token_sha256`);
    names.add(entry.name);
    digests.add(entry.sha256);
  });
  return entries;
}

/** SHA-256 hex of a token: what the file stores. */
export function tokenSha256(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** The bearer token of an `authorization` header value (`Bearer <token>`, scheme case-insensitive), or undefined. */
export function bearerOf(header: string | undefined): string | undefined {
  const match = header === undefined ? null : /^Bearer[ \t]+(.+)$/i.exec(header.trim());
  return match?.[1];
}

/**
 * The tokens the api accepts now: the file's entries plus `API_TOKEN` (admin, named "api-token"). Replaced whole on
 * reload. Lookups hash the presented token and compare its digest with every entry's in constant time
 * (timingSafeEqual, no early exit), so neither a token nor which entry matched leaks through timing.
 */
export class TokenRegistry {
  private entries: { entry: TokenEntry; digest: Buffer }[] = [];

  constructor(
    fileEntries: readonly TokenEntry[],
    private readonly legacyToken?: string | undefined,
  ) {
    this.replace(fileEntries);
  }

  /** Swaps the file's entries (API_TOKEN stays). */
  replace(fileEntries: readonly TokenEntry[]): void {
    const all = [...fileEntries];
    if (this.legacyToken !== undefined) {
      all.push({ name: LEGACY_TOKEN_NAME, sha256: tokenSha256(this.legacyToken), role: "admin", labels: {} });
    }
    this.entries = all.map((entry) => ({ entry, digest: Buffer.from(entry.sha256, "hex") }));
  }

  /** The names of the tokens accepted now. */
  names(): string[] {
    return this.entries.map((e) => e.entry.name);
  }

  /** The entry of a presented token, or undefined. */
  lookup(token: string | undefined): TokenEntry | undefined {
    const presented = createHash("sha256")
      .update(token ?? "", "utf8")
      .digest();
    let found: TokenEntry | undefined;
    for (const { entry, digest } of this.entries) {
      if (timingSafeEqual(presented, digest) && token !== undefined) found = entry;
    }
    return found;
  }

  /** The entry of an `authorization` header value, or undefined. */
  authenticate(header: string | undefined): TokenEntry | undefined {
    return this.lookup(bearerOf(header));
  }
}

/** Options of {@link watchTokenFile}. */
export interface WatchTokenFileOptions {
  /** How often the file's mtime and size are checked besides fs.watch (which can miss renames and network mounts). */
  pollMs?: number;
  /** Reads the file (tests). */
  readFile?: (path: string) => string;
}

/**
 * Reloads the registry when the file changes: fs.watch on its directory (editors and `mv` replace files) plus a
 * periodic stat as a fallback. A file that does not parse keeps the last good tokens and logs one error per bad
 * version. Returns a function that stops watching.
 */
export function watchTokenFile(
  path: string,
  registry: TokenRegistry,
  logger: Logger,
  options: WatchTokenFileOptions = {},
): () => void {
  const read = options.readFile ?? ((p: string) => readFileSync(p, "utf8"));
  const stamp = (): string => {
    try {
      const s = statSync(path);
      return `${s.mtimeMs}:${s.size}:${s.ino}`;
    } catch {
      return "missing";
    }
  };
  let lastStamp = stamp();
  let lastText: string | undefined;
  try {
    lastText = read(path);
  } catch {
    lastText = undefined;
  }
  // fs.watch events always re-read (the text decides); the poll only when the file's stamp moved.
  const reload = (force: boolean): void => {
    const now = stamp();
    if (now === lastStamp && !force) return;
    lastStamp = now;
    let text: string;
    try {
      text = read(path);
    } catch (error) {
      logger.error({ err: error, file: path }, "API_TOKENS_FILE: cannot read; keeping the last good tokens");
      return;
    }
    if (text === lastText) return;
    lastText = text;
    try {
      const entries = parseTokenFile(text);
      registry.replace(entries);
      logger.info({ file: path, tokens: entries.map((e) => e.name) }, "API_TOKENS_FILE reloaded");
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      logger.error({ file: path }, `API_TOKENS_FILE: ${reason}; keeping the last good tokens`);
    }
  };
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(path, { persistent: false }, () => reload(true));
    watcher.on("error", () => {
      watcher?.close();
      watcher = undefined;
    });
  } catch {
    watcher = undefined;
  }
  const timer = setInterval(() => reload(false), options.pollMs ?? 2_000);
  timer.unref();
  return () => {
    clearInterval(timer);
    watcher?.close();
  };
}
