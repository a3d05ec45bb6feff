import type { Duration } from "@bufbuild/protobuf/wkt";

/** The largest magnitude of `Duration.seconds` protobuf allows (about 10,000 years). */
export const MAX_DURATION_SECONDS = 315_576_000_000n;

/** A `google.protobuf.Duration`, or any value with the same two fields. */
export type DurationLike = Pick<Duration, "seconds" | "nanos">;

/** Whether `d` is a well-formed protobuf Duration: in range, nanos below one second, both parts of one sign. */
export function isValidDuration(d: DurationLike): boolean {
  const seconds = BigInt(d.seconds);
  if (seconds > MAX_DURATION_SECONDS || seconds < -MAX_DURATION_SECONDS) return false;
  if (!Number.isInteger(d.nanos) || d.nanos > 999_999_999 || d.nanos < -999_999_999) return false;
  return !((seconds > 0n && d.nanos < 0) || (seconds < 0n && d.nanos > 0));
}

/** `d` in milliseconds, exactly (fractional below a millisecond). */
export function durationToMs(d: DurationLike): number {
  return Number(d.seconds) * 1000 + d.nanos / 1_000_000;
}
