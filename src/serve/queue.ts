// One model, one workspace: requests must run one at a time. A FIFO of jobs with one worker;
// a bounded number may wait, beyond which callers are told to come back (503).

export class QueueFullError extends Error {}

export class SerialQueue {
  private tail: Promise<void> = Promise.resolve();
  private waiting = 0;
  private running = false;

  constructor(private readonly maxWaiting: number) {
    if (!Number.isInteger(maxWaiting) || maxWaiting < 0) throw new Error(`queue: maxWaiting must be an integer ≥ 0, got ${maxWaiting}`);
  }

  /** Jobs waiting for their turn (not counting the one running). */
  get pending(): number {
    return this.waiting;
  }

  get busy(): boolean {
    return this.running;
  }

  /** Runs `job` after every job queued before it; throws QueueFullError when too many wait. */
  run<T>(job: () => Promise<T>): Promise<T> {
    if (this.running && this.waiting >= this.maxWaiting) throw new QueueFullError(`${this.waiting} requests are already waiting`);
    this.waiting++;
    const result = this.tail.then(async () => {
      this.waiting--;
      this.running = true;
      try {
        return await job();
      } finally {
        this.running = false;
      }
    });
    // The chain continues whether the job failed or not; the caller sees the failure.
    this.tail = result.then(() => undefined, () => undefined);
    return result;
  }
}
