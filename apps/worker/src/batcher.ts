/** Options of a Batcher. */
export interface BatcherOptions {
  /** Items per flush at most. @default 64 */
  maxBatch?: number;
  /** Flushes running at once at most. @default 2 */
  maxInFlight?: number;
}

interface Pending<I, O> {
  item: I;
  resolve: (value: O) => void;
  reject: (error: unknown) => void;
}

/**
 * Opportunistic batching: an item is flushed at the end of the event loop's turn when a flush slot is free, and
 * items that arrive while flushes are running are flushed together next. No timer, so an idle system pays no
 * latency; a busy one pays one transaction per batch instead of one per item. When a batch fails, its items are
 * retried one by one, so one bad item fails alone.
 */
export class Batcher<I, O> {
  private readonly queue: Pending<I, O>[] = [];
  private inFlight = 0;
  private scheduled = false;
  private readonly maxBatch: number;
  private readonly maxInFlight: number;

  constructor(
    private readonly flush: (items: I[]) => Promise<O[]>,
    options: BatcherOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? 64;
    this.maxInFlight = options.maxInFlight ?? 2;
  }

  /** Queues one item; resolves with its own result. */
  run(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  /**
   * Flushes at the end of the current turn of the event loop (setImmediate runs after the I/O callbacks of this
   * turn), so items that arrive together, e.g. the jobs of one Redis reply or the gRPC responses read in one poll,
   * go in one batch rather than the first alone.
   */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      this.inFlight++;
      void this.flushBatch(batch).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private async flushBatch(batch: Pending<I, O>[]): Promise<void> {
    try {
      const results = await this.flush(batch.map((p) => p.item));
      for (const [i, p] of batch.entries()) p.resolve(results[i] as O);
    } catch (error) {
      if (batch.length === 1) {
        batch[0]!.reject(error);
        return;
      }
      await Promise.all(
        batch.map(async (p) => {
          try {
            const [result] = await this.flush([p.item]);
            p.resolve(result as O);
          } catch (single) {
            p.reject(single);
          }
        }),
      );
    }
  }
}
