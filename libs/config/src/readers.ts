import { readFileSync } from "node:fs";
import { ConfigError } from "./config-error.js";

/** The environment a settings reader looks at: `process.env` in an app's `config.ts`, a plain object in tests. */
export type Env = Readonly<Record<string, string | undefined>>;

/** The value of `name`, trimmed, or undefined when it is unset or blank (compose files often set `VAR=`). */
function raw(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === "" ? undefined : value;
}

/** Quotes a value for an error message. */
function quote(value: string): string {
  return JSON.stringify(value);
}

/** Hides the password of `scheme://user:password@host` so an error line never leaks a secret. */
export function redactUrl(value: string): string {
  return value.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#@:]*):[^/?#@]*@/, "$1:***@");
}

/** A string setting; unset or blank falls back to `fallback`, and without one throws `${name}: required`. */
export function readString(env: Env, name: string, fallback?: string): string {
  const value = raw(env, name);
  if (value !== undefined) return value;
  if (fallback !== undefined) return fallback;
  throw ConfigError.invalid(name, "required");
}

/** A string setting that may be absent (e.g. `API_TOKEN`): undefined when unset or blank. */
export function readOptionalString(env: Env, name: string): string | undefined {
  return raw(env, name);
}

/** Bounds for {@link readInt}; both inclusive. */
export interface IntBounds {
  /** Smallest accepted value. @default Number.MIN_SAFE_INTEGER */
  min?: number;
  /** Largest accepted value. @default Number.MAX_SAFE_INTEGER */
  max?: number;
}

/** Describes the accepted range of an integer setting for an error message. */
function describeInt({ min, max }: IntBounds): string {
  if (min !== undefined && max !== undefined) return `an integer between ${min} and ${max}`;
  if (min !== undefined) return `an integer >= ${min}`;
  if (max !== undefined) return `an integer <= ${max}`;
  return "an integer";
}

/** A decimal integer setting within `opts` bounds (inclusive); unset or blank gives `fallback`. */
export function readInt(env: Env, name: string, fallback: number, opts: IntBounds = {}): number {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  const parsed = /^[+-]?\d+$/.test(value) ? Number(value) : Number.NaN;
  const { min, max } = opts;
  if (!Number.isSafeInteger(parsed) || (min !== undefined && parsed < min) || (max !== undefined && parsed > max)) {
    throw ConfigError.invalid(name, `must be ${describeInt(opts)}, got ${quote(value)}`);
  }
  return parsed;
}

const TRUE_WORDS = new Set(["true", "1", "yes"]);
const FALSE_WORDS = new Set(["false", "0", "no"]);

/** A boolean setting: true/false, 1/0 or yes/no (any case); unset or blank gives `fallback`. */
export function readBool(env: Env, name: string, fallback: boolean): boolean {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  const word = value.toLowerCase();
  if (TRUE_WORDS.has(word)) return true;
  if (FALSE_WORDS.has(word)) return false;
  throw ConfigError.invalid(name, `must be one of true, false, 1, 0, yes, no, got ${quote(value)}`);
}

/** A comma-separated list, items trimmed and empty items dropped; unset or blank gives `fallback` (default []). */
export function readList(env: Env, name: string, fallback: string[] = []): string[] {
  const value = raw(env, name);
  if (value === undefined) return [...fallback];
  return value
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
}

/**
 * A URL setting whose protocol is one of `protocols` (with the colon, e.g. `["postgres:", "postgresql:"]`);
 * unset or blank gives `fallback`, which is validated the same way. Passwords never appear in the error.
 */
export function readUrl(env: Env, name: string, fallback: string, protocols: string[]): string {
  const value = raw(env, name) ?? fallback;
  const expected =
    protocols.length === 1 ? protocols[0] : `${protocols.slice(0, -1).join(", ")} or ${protocols.at(-1)}`;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw ConfigError.invalid(name, `must be a ${expected} URL, got ${quote(redactUrl(value))}`);
  }
  if (!protocols.includes(url.protocol)) {
    throw ConfigError.invalid(name, `must be a ${expected} URL, got ${quote(redactUrl(value))}`);
  }
  return value;
}

/** A parsed `host:port` listen address. */
export interface HostPort {
  /** Host name or IP, without brackets for IPv6 (`::1`). */
  host: string;
  /** TCP port, 0 (any free port) to 65535. */
  port: number;
  /** `host:port` as servers and clients take it, with brackets for IPv6 (`[::1]:80`). */
  address: string;
}

/** Parses `host:port`, `:port` (host 0.0.0.0), `[v6]:port` or a bare port; undefined when malformed. */
function parseHostPort(value: string): HostPort | undefined {
  const match = /^(?:\[([^[\]\s]+)\]|([^:[\]\s]*)):(\d{1,5})$/.exec(value) ?? /^()()(\d{1,5})$/.exec(value);
  if (match === null) return undefined;
  const host = match[1] || match[2] || "0.0.0.0";
  const port = Number(match[3]);
  if (port > 65_535) return undefined;
  const address = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  return { host, port, address };
}

/**
 * A listen or dial address: `0.0.0.0:50051`, `:9464` (host 0.0.0.0), `[::1]:80`, `localhost:50052`, or a bare
 * port; unset or blank gives `fallback`, which is parsed the same way.
 */
export function readHostPort(env: Env, name: string, fallback: string): HostPort {
  const value = raw(env, name) ?? fallback;
  const parsed = parseHostPort(value);
  if (parsed === undefined) {
    throw ConfigError.invalid(
      name,
      `must be host:port with a port from 0 to 65535 (e.g. 0.0.0.0:8080, :8080, [::1]:8080), got ${quote(value)}`,
    );
  }
  return parsed;
}

/** The pino log levels a setting may name. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Narrows a string to a {@link LogLevel}. */
function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

/** A pino log level (any case); unset or blank gives `info`. */
export function readLogLevel(env: Env, name = "LOG_LEVEL"): LogLevel {
  const value = raw(env, name);
  if (value === undefined) return "info";
  const level = value.toLowerCase();
  if (isLogLevel(level)) return level;
  throw ConfigError.invalid(name, `must be one of ${LOG_LEVELS.join(", ")}, got ${quote(value)}`);
}

/** Reads a file named by a setting (a certificate, a token file); tests pass a fake. */
export type ReadSettingFile = (path: string) => Buffer;

/** The file at `path`, named by setting `name`; a missing or unreadable file is a ConfigError naming the setting. */
export function readSettingFile(name: string, path: string, readFile: ReadSettingFile = readFileSync): Buffer {
  try {
    return readFile(path);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw ConfigError.invalid(name, `cannot read ${JSON.stringify(path)}: ${reason}`);
  }
}
