import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ErrorKind, RetryPolicySchema } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_NODE_TIMEOUT_MS,
  DEFAULT_RETRY_POLICY,
  type EffectiveRetryPolicy,
  decideRetry,
  effectiveRetryPolicy,
  effectiveTimeoutMs,
  retryDelayMs,
} from "./retry.js";

describe("effectiveRetryPolicy", () => {
  it("uses 3 attempts, 1s doubling to at most 60s, and no task-error retries by default", () => {
    expect(DEFAULT_RETRY_POLICY).toEqual({
      maxAttempts: 3,
      initialBackoffMs: 1000,
      maxBackoffMs: 60_000,
      retryTaskErrors: false,
    });
    expect(effectiveRetryPolicy(undefined)).toEqual(DEFAULT_RETRY_POLICY);
    expect(effectiveRetryPolicy(create(RetryPolicySchema))).toEqual(DEFAULT_RETRY_POLICY);
  });

  it("treats zero durations and zero attempts as unset", () => {
    const policy = create(RetryPolicySchema, {
      maxAttempts: 0,
      initialBackoff: durationFromMs(0),
      maxBackoff: durationFromMs(0),
    });
    expect(effectiveRetryPolicy(policy)).toEqual(DEFAULT_RETRY_POLICY);
  });

  it("takes every field the policy sets", () => {
    const policy = create(RetryPolicySchema, {
      maxAttempts: 7,
      initialBackoff: durationFromMs(250),
      maxBackoff: durationFromMs(10_000),
      retryTaskErrors: true,
    });
    expect(effectiveRetryPolicy(policy)).toEqual({
      maxAttempts: 7,
      initialBackoffMs: 250,
      maxBackoffMs: 10_000,
      retryTaskErrors: true,
    });
  });

  it("raises the default cap to an initial backoff above it when max_backoff is unset", () => {
    const policy = create(RetryPolicySchema, { initialBackoff: durationFromMs(120_000) });
    expect(effectiveRetryPolicy(policy)).toMatchObject({ initialBackoffMs: 120_000, maxBackoffMs: 120_000 });
  });
});

describe("effectiveTimeoutMs", () => {
  it("is 5 minutes when the node sets no timeout", () => {
    expect(DEFAULT_NODE_TIMEOUT_MS).toBe(300_000);
    expect(effectiveTimeoutMs({ timeout: undefined })).toBe(300_000);
  });

  it("is the node's timeout in milliseconds when set", () => {
    expect(effectiveTimeoutMs({ timeout: durationFromMs(1500) })).toBe(1500);
  });

  it("rounds a sub-millisecond remainder up so a positive timeout never becomes 0", () => {
    expect(effectiveTimeoutMs({ timeout: { ...durationFromMs(0), nanos: 1 } })).toBe(1);
  });

  it("falls back to the default for a zero or negative timeout", () => {
    expect(effectiveTimeoutMs({ timeout: durationFromMs(0) })).toBe(300_000);
    expect(effectiveTimeoutMs({ timeout: durationFromMs(-10) })).toBe(300_000);
  });
});

describe("retryDelayMs", () => {
  const policy: EffectiveRetryPolicy = { ...DEFAULT_RETRY_POLICY };

  it("starts at the initial backoff and doubles after each failed attempt", () => {
    expect([1, 2, 3, 4, 5, 6].map((a) => retryDelayMs(policy, a))).toEqual([1000, 2000, 4000, 8000, 16_000, 32_000]);
  });

  it("is capped at the max backoff", () => {
    expect(retryDelayMs(policy, 7)).toBe(60_000);
    expect(retryDelayMs(policy, 50)).toBe(60_000);
  });

  it("stays finite and capped for enormous attempt numbers", () => {
    expect(retryDelayMs(policy, 1_000_000)).toBe(60_000);
    expect(retryDelayMs(policy, Number.MAX_SAFE_INTEGER)).toBe(60_000);
    expect(retryDelayMs({ ...policy, maxBackoffMs: Number.MAX_VALUE }, 5000)).toBe(1000 * 2 ** 60);
  });

  it("treats attempt numbers below 1 or not finite as the first attempt", () => {
    expect(retryDelayMs(policy, 0)).toBe(1000);
    expect(retryDelayMs(policy, -3)).toBe(1000);
    expect(retryDelayMs(policy, Number.NaN)).toBe(1000);
    expect(retryDelayMs(policy, Number.POSITIVE_INFINITY)).toBe(1000);
  });

  it("is never negative", () => {
    expect(retryDelayMs({ ...policy, initialBackoffMs: -5 }, 3)).toBe(0);
    expect(retryDelayMs({ ...policy, maxBackoffMs: -5 }, 3)).toBe(0);
    expect(retryDelayMs({ ...policy, initialBackoffMs: 0 }, 3)).toBe(0);
  });
});

describe("decideRetry", () => {
  it("retries an INFRA_ERROR while attempts remain, with the backoff delay", () => {
    expect(decideRetry(DEFAULT_RETRY_POLICY, 1, ErrorKind.INFRA_ERROR)).toEqual({ retry: true, delayMs: 1000 });
    expect(decideRetry(DEFAULT_RETRY_POLICY, 2, ErrorKind.INFRA_ERROR)).toEqual({ retry: true, delayMs: 2000 });
  });

  it("stops once max_attempts attempts have failed", () => {
    expect(decideRetry(DEFAULT_RETRY_POLICY, 3, ErrorKind.INFRA_ERROR)).toEqual({ retry: false });
    expect(decideRetry(DEFAULT_RETRY_POLICY, 4, ErrorKind.INFRA_ERROR)).toEqual({ retry: false });
  });

  it("never retries with max_attempts 1", () => {
    expect(decideRetry({ ...DEFAULT_RETRY_POLICY, maxAttempts: 1 }, 1, ErrorKind.INFRA_ERROR)).toEqual({
      retry: false,
    });
  });

  it("does not retry a TASK_ERROR unless retry_task_errors is set", () => {
    expect(decideRetry(DEFAULT_RETRY_POLICY, 1, ErrorKind.TASK_ERROR)).toEqual({ retry: false });
    const lenient = { ...DEFAULT_RETRY_POLICY, retryTaskErrors: true };
    expect(decideRetry(lenient, 1, ErrorKind.TASK_ERROR)).toEqual({ retry: true, delayMs: 1000 });
    expect(decideRetry(lenient, 3, ErrorKind.TASK_ERROR)).toEqual({ retry: false });
  });

  it("treats an unspecified or unknown error kind as a TASK_ERROR", () => {
    expect(decideRetry(DEFAULT_RETRY_POLICY, 1, ErrorKind.UNSPECIFIED)).toEqual({ retry: false });
    expect(decideRetry(DEFAULT_RETRY_POLICY, 1, 9 as ErrorKind)).toEqual({ retry: false });
    const lenient = { ...DEFAULT_RETRY_POLICY, retryTaskErrors: true };
    expect(decideRetry(lenient, 1, ErrorKind.UNSPECIFIED)).toEqual({ retry: true, delayMs: 1000 });
  });
});
