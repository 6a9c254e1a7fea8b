// Admission of requests: up to `maxActive` run at once (their sequences share the batcher's
// steps); later ones wait in arrival order, and beyond `maxWaiting` waiting callers are told to
// come back (503).

export class QueueFullError extends Error {}

export class RequestQueue {
  private readonly waitingJobs: (() => void)[] = [];
  private active = 0;

  constructor(private readonly maxActive: number, private readonly maxWaiting: number) {
    if (!Number.isInteger(maxActive) || maxActive < 1) throw new Error(`queue: maxActive must be an integer ≥ 1, got ${maxActive}`);
    if (!Number.isInteger(maxWaiting) || maxWaiting < 0) throw new Error(`queue: maxWaiting must be an integer ≥ 0, got ${maxWaiting}`);
  }

  /** Jobs waiting for their turn (not counting those running). */
  get pending(): number {
    return this.waitingJobs.length;
  }

  /** Jobs running. */
  get running(): number {
    return this.active;
  }

  get busy(): boolean {
    return this.active > 0;
  }

  /** Runs `job` once fewer than maxActive run and every job queued before it has started; throws QueueFullError when too many wait. */
  run<T>(job: () => Promise<T>): Promise<T> {
    if (this.active >= this.maxActive && this.waitingJobs.length >= this.maxWaiting) throw new QueueFullError(`${this.waitingJobs.length} requests are already waiting`);
    return new Promise<T>((resolve, reject) => {
      const start = (): void => {
        this.active++;
        job().then(resolve, reject).finally(() => {
          this.active--;
          this.waitingJobs.shift()?.();
        });
      };
      if (this.active < this.maxActive && this.waitingJobs.length === 0) start();
      else this.waitingJobs.push(start);
    });
  }
}
