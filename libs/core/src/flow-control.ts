import type { Limit } from "@trellis/proto";
import { durationToMs, isValidDuration } from "./durations.js";
import { InvalidArgumentError } from "./errors.js";
import { assertCapability } from "./ids.js";
import { codePointLength, quoteForMessage } from "./text.js";

/** Highest node priority; 0 (the default) is the lowest. */
export const MAX_PRIORITY = 10;

/** Limit keys on one node, besides its implicit capability key. */
export const MAX_LIMIT_KEYS = 16;

/** Longest limit key, in characters. */
export const MAX_LIMIT_KEY_LENGTH = 200;

/** Longest usage unit ("tokens", "cost_usd"), in characters. */
export const MAX_USAGE_UNIT_LENGTH = 64;

/** Units in one workflow budget. */
export const MAX_BUDGET_UNITS = 64;

/** The prefix of the implicit key every node counts under: `capability:<its capability>`. */
export const CAPABILITY_KEY_PREFIX = "capability:";

/** A limit's rate period when none is given. */
export const DEFAULT_LIMIT_PERIOD_MS = 1_000;

/** Longest rate period: one day. */
export const MAX_LIMIT_PERIOD_MS = 86_400_000;

/**
 * A flow-control limit as stored, without its live state: the cap on nodes holding `key` at once and the token bucket
 * that paces their starts (or the usage they report).
 */
export interface LimitSpec {
  /** The key: a node's `limit_keys` entry, or `capability:<name>` for the implicit key of a capability. */
  key: string;
  /** QUEUED or RUNNING nodes holding the key at once; 0 = no cap. */
  maxConcurrency: number;
  /** Units per period; 0 = no rate cap. */
  rate: number;
  /** The rate's period in whole milliseconds. @default 1000 */
  periodMs: number;
  /** Bucket size in units; 0 means the rate. */
  burst: number;
  /** "" = one unit per node start; else a usage unit (e.g. "tokens") debited with what attempts report. */
  unit: string;
}

/** Control characters (C0, DEL, C1) and lone surrogates: what a printable key or unit must not hold. */
const UNPRINTABLE = /[\p{Cc}\p{Cs}]/u;

function validatePrintable(text: string, field: string, maxLength: number): void {
  if (text === "") throw new InvalidArgumentError(field, "required");
  if (text.length > maxLength && codePointLength(text) > maxLength) {
    throw new InvalidArgumentError(field, `must be at most ${maxLength} characters`);
  }
  if (UNPRINTABLE.test(text)) {
    throw new InvalidArgumentError(field, `${quoteForMessage(text)} must not contain control characters`);
  }
}

/** Throws InvalidArgumentError unless `priority` is an integer in 0..{@link MAX_PRIORITY}. */
export function validatePriority(priority: number, field: string): void {
  if (!Number.isInteger(priority) || priority < 0 || priority > MAX_PRIORITY) {
    throw new InvalidArgumentError(field, `must be between 0 and ${MAX_PRIORITY}, got ${priority}`);
  }
}

/**
 * Throws InvalidArgumentError unless `key` is 1..{@link MAX_LIMIT_KEY_LENGTH} printable characters. With
 * `implicit: "allowed"` (SetLimit, DeleteLimit) a key `capability:<name>` must name a well-formed capability; with
 * `"refused"` (a node's limit_keys) the prefix is refused, since every node counts under its capability's key already.
 */
export function validateLimitKey(key: string, field: string, implicit: "allowed" | "refused"): void {
  validatePrintable(key, field, MAX_LIMIT_KEY_LENGTH);
  if (!key.startsWith(CAPABILITY_KEY_PREFIX)) return;
  if (implicit === "refused") {
    throw new InvalidArgumentError(
      field,
      `the prefix "${CAPABILITY_KEY_PREFIX}" is reserved: every node counts under "${CAPABILITY_KEY_PREFIX}<its capability>"`,
    );
  }
  const capability = key.slice(CAPABILITY_KEY_PREFIX.length);
  if (capability === "") throw new InvalidArgumentError(field, `"${CAPABILITY_KEY_PREFIX}" must name a capability`);
  assertCapability(capability, field);
}

/**
 * Throws InvalidArgumentError unless a node's `limit_keys` are at most {@link MAX_LIMIT_KEYS} well-formed keys, none
 * repeated and none with the reserved prefix `capability:` (field `field[i]` for the key at fault).
 */
export function validateLimitKeys(keys: readonly string[], field: string): void {
  if (keys.length > MAX_LIMIT_KEYS) {
    throw new InvalidArgumentError(field, `at most ${MAX_LIMIT_KEYS} keys are allowed, got ${keys.length}`);
  }
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    validateLimitKey(key, `${field}[${i}]`, "refused");
    if (keys.indexOf(key) < i)
      throw new InvalidArgumentError(`${field}[${i}]`, `duplicate key ${quoteForMessage(key)}`);
  }
}

/** Throws InvalidArgumentError unless `unit` is a usage unit: 1..{@link MAX_USAGE_UNIT_LENGTH} printable characters. */
export function validateUsageUnit(unit: string, field: string): void {
  validatePrintable(unit, field, MAX_USAGE_UNIT_LENGTH);
}

/**
 * Throws InvalidArgumentError unless `budget` maps at most {@link MAX_BUDGET_UNITS} usage units (field `field`) to
 * finite amounts greater than 0 (field `field["unit"]`).
 */
export function validateBudget(budget: Readonly<Record<string, number>>, field: string): void {
  const units = Object.keys(budget);
  if (units.length > MAX_BUDGET_UNITS) {
    throw new InvalidArgumentError(field, `at most ${MAX_BUDGET_UNITS} units are allowed, got ${units.length}`);
  }
  for (const unit of units) {
    validateUsageUnit(unit, field);
    const amount = budget[unit]!;
    if (typeof amount !== "number" || !Number.isFinite(amount) || amount <= 0) {
      throw new InvalidArgumentError(
        `${field}[${JSON.stringify(unit)}]`,
        `must be a finite number above 0, got ${amount}`,
      );
    }
  }
}

function validateAmount(value: number, field: string): void {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new InvalidArgumentError(field, `must be a finite number of at least 0, got ${value}`);
  }
}

/**
 * Validates a limit and returns it as stored: `burst` 0 becomes the rate. Rules: a key as
 * {@link validateLimitKey} (`capability:<name>` allowed), `max_concurrency` an integer >= 0, `rate` and `burst` finite
 * and >= 0, `period_ms` a whole number of ms in 1..{@link MAX_LIMIT_PERIOD_MS}, with a rate a burst (given or
 * defaulted) of at least 1, `unit` "" or a usage unit, and a cap or a rate (or both). Errors name the field under
 * `field` (`limit.burst`).
 */
export function validateLimitSpec(spec: LimitSpec, field = "limit"): LimitSpec {
  validateLimitKey(spec.key, `${field}.key`, "allowed");
  const { maxConcurrency, rate, periodMs, burst, unit } = spec;
  if (!Number.isInteger(maxConcurrency) || maxConcurrency < 0 || maxConcurrency > 2_147_483_647) {
    throw new InvalidArgumentError(
      `${field}.max_concurrency`,
      `must be an integer of at least 0, got ${maxConcurrency}`,
    );
  }
  validateAmount(rate, `${field}.rate`);
  if (!Number.isInteger(periodMs) || periodMs <= 0 || periodMs > MAX_LIMIT_PERIOD_MS) {
    throw new InvalidArgumentError(
      `${field}.period`,
      Number.isFinite(periodMs) && periodMs > 0 && periodMs <= MAX_LIMIT_PERIOD_MS
        ? `must be a whole number of milliseconds, got ${periodMs}ms`
        : "must be greater than 0 and at most 24h",
    );
  }
  validateAmount(burst, `${field}.burst`);
  const storedBurst = burst === 0 ? rate : burst;
  if (rate > 0 && storedBurst < 1) {
    throw new InvalidArgumentError(
      `${field}.burst`,
      burst === 0
        ? `must be at least 1 with a rate (it defaults to the rate, ${rate})`
        : `must be at least 1 with a rate, got ${burst}`,
    );
  }
  if (unit !== "") validateUsageUnit(unit, `${field}.unit`);
  if (maxConcurrency === 0 && rate === 0) {
    throw new InvalidArgumentError(field, "set max_concurrency, rate or both (0 means no cap)");
  }
  return { key: spec.key, maxConcurrency, rate, periodMs, burst: storedBurst, unit };
}

/**
 * A SetLimit request's Limit as {@link validateLimitSpec} checks and returns it: `period` unset means
 * {@link DEFAULT_LIMIT_PERIOD_MS}; the output-only fields are ignored.
 */
export function limitSpecFromProto(limit: Limit | undefined, field = "limit"): LimitSpec {
  if (limit === undefined) throw new InvalidArgumentError(field, "required");
  let periodMs = DEFAULT_LIMIT_PERIOD_MS;
  if (limit.period !== undefined) {
    if (!isValidDuration(limit.period)) throw new InvalidArgumentError(`${field}.period`, "must be a valid duration");
    periodMs = durationToMs(limit.period);
  }
  return validateLimitSpec(
    {
      key: limit.key,
      maxConcurrency: limit.maxConcurrency,
      rate: limit.rate,
      periodMs,
      burst: limit.burst,
      unit: limit.unit,
    },
    field,
  );
}
