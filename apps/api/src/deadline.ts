import type { Deadline } from "@grpc/grpc-js";

/** Whether a call's deadline (a Date, epoch ms, or Infinity for none) has passed. */
export function deadlinePassed(deadline: Deadline, now: number = Date.now()): boolean {
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) && ms <= now;
}
