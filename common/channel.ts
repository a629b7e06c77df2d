// A small unbounded async queue: producers push from callbacks, one consumer pulls with `for await`. Use it only where
// the producer is naturally bounded (progress ticks, a few control messages); bulk data uses backpressured streams.
export interface Channel<T> extends AsyncIterable<T> {
  push(value: T): void;
  /** Ends the stream after the values already pushed. */
  close(): void;
  /** Ends the stream with an error, thrown to the consumer after the values already pushed. */
  fail(error: unknown): void;
}

export function createChannel<T>(): Channel<T> {
  const values: T[] = [];
  let done = false;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  const notify = (): void => {
    wake?.();
    wake = undefined;
  };
  return {
    push(value) {
      if (done) return;
      values.push(value);
      notify();
    },
    close() {
      done = true;
      notify();
    },
    fail(error) {
      if (done) return;
      failure = { error };
      done = true;
      notify();
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (values.length > 0) {
          yield values.shift() as T;
          continue;
        }
        if (failure !== undefined) throw failure.error;
        if (done) return;
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
  };
}
