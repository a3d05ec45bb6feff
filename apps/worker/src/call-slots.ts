/**
 * At most `size` NodeService calls of a capability at once (WORKER_CONCURRENCY). A job whose call succeeded gives its
 * slot back before its result commits and keeps its job active meanwhile: `onLend(+1)` then lets the capability's
 * queue worker take one more job for the slot (its BullMQ concurrency is the calls plus the jobs recording), and
 * `onLend(-1)` takes that back once the job ends. So a worker holds no more jobs than it can call or is recording:
 * none waits here while another worker has a free slot. Waiters are served first come, first served.
 */
export class CallSlots {
  private free: number;
  private readonly waiting: (() => void)[] = [];
  /** Told +1 when a job lends its slot while it records, -1 when that job ends. */
  onLend: (delta: number) => void = () => undefined;

  constructor(readonly size: number) {
    this.free = size;
  }

  /** Waits for a slot; the job's hold on it until {@link CallSlot.release} or {@link CallSlot.end}. */
  async acquire(): Promise<CallSlot> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    let held = true;
    let lent = false;
    const giveBack = () => {
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    };
    return {
      release: () => {
        if (!held) return;
        held = false;
        lent = true;
        giveBack();
        this.onLend(1);
      },
      end: () => {
        if (held) {
          held = false;
          giveBack();
        }
        if (lent) {
          lent = false;
          this.onLend(-1);
        }
      },
    };
  }

  /** Calls in progress. */
  get inUse(): number {
    return this.size - this.free;
  }
}

/** A job's hold on a call slot. */
export interface CallSlot {
  /** Gives the slot back while the job goes on (recording its result); once. */
  release(): void;
  /** The job ended: gives the slot back if it still holds it; once. */
  end(): void;
}
