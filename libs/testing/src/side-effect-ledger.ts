import { ExecutionStatus } from "@trellis/proto";
import type { ExecuteHandler, ExecuteResult } from "./node-service-server.js";

/**
 * What a NodeService with side effects keeps: the effects it applied per idempotency key. Trellis delivers a node
 * at least once (a dead worker's node runs again), always with the same key; a NodeService that deduplicates on
 * it applies each effect at most once, and answers a repeat with the answer of the first.
 */
export class SideEffectLedger {
  /** ExecuteNode calls per idempotency key. */
  readonly calls = new Map<string, number>();
  /** Effects applied per idempotency key. */
  readonly effects = new Map<string, number>();
  /** Deliveries of a key whose effect was already applied (answered from the ledger), per key. */
  readonly replays = new Map<string, number>();
  private readonly answers = new Map<string, ExecuteResult>();

  /** @param deduplicate Whether a repeated key reuses the first answer instead of applying the effect again. */
  constructor(readonly deduplicate = true) {}

  /**
   * Wraps a handler: each successful answer is one effect, applied once per key when deduplicating (a repeat gets
   * the first answer back, so the recorded output is the same whichever delivery wins).
   */
  wrap(handler: ExecuteHandler): ExecuteHandler {
    return async (request, call, signal) => {
      const key = request.context?.idempotencyKey ?? "";
      this.calls.set(key, (this.calls.get(key) ?? 0) + 1);
      const answered = this.deduplicate ? this.answers.get(key) : undefined;
      if (answered) {
        this.replays.set(key, (this.replays.get(key) ?? 0) + 1);
        return answered;
      }
      const result = await handler(request, call, signal);
      if (result.status !== ExecutionStatus.SUCCESS) return result;
      // No await between the check and the set: concurrent deliveries of one key cannot both apply the effect.
      const first = this.deduplicate ? this.answers.get(key) : undefined;
      if (first) {
        this.replays.set(key, (this.replays.get(key) ?? 0) + 1);
        return first;
      }
      this.effects.set(key, (this.effects.get(key) ?? 0) + 1);
      if (this.deduplicate) this.answers.set(key, result);
      return result;
    };
  }

  /** Keys whose effect was applied more than once. */
  duplicates(): string[] {
    return [...this.effects].filter(([, n]) => n > 1).map(([key]) => key);
  }

  /** Keys delivered again after their effect was applied (at-least-once delivery at work; retries not counted). */
  redelivered(): string[] {
    return [...this.replays.keys()];
  }
}
