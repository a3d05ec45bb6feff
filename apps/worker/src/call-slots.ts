/**
 * At most `size` NodeService calls of a capability at once (WORKER_CONCURRENCY), while its queue worker holds more
 * jobs than that: a job whose call has ended keeps its job active until its result commits, without holding a call
 * slot (FIFO among waiters).
 */
export class CallSlots {
  private free: number;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly size: number) {
    this.free = size;
  }

  /** Waits for a slot; the returned function gives it back (once). */
  async acquire(): Promise<() => void> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    };
  }

  /** Calls in progress. */
  get inUse(): number {
    return this.size - this.free;
  }
}
