/** Observes the events of one committed transaction, after commit (PgStateManager's `onEvents`). */
export type EventHook<E> = (events: readonly E[]) => void;

/**
 * One hook that hands every batch to each of `hooks` in order, e.g. the event log and the event metrics. A hook that
 * throws does not keep the batch from the others: observing a committed change must never undo or hide it.
 */
export function composeEventHooks<E>(...hooks: readonly EventHook<E>[]): EventHook<E> {
  return (events) => {
    for (const hook of hooks) {
      try {
        hook(events);
      } catch {
        // An observer's failure is its own; the next one still sees the batch.
      }
    }
  };
}
