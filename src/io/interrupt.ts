// Cooperative SIGINT/SIGTERM handling for long jobs. Conversion is mostly synchronous compute,
// so a signal handler only runs when the pipeline yields: long loops call interruptPoint()
// (per layer, per tensor written), which lets the handler run and then throws InterruptedError,
// so every finally block (temp folders, calibration files) runs on the way out. A second
// signal does not wait: it removes the registered temp paths synchronously and exits.
import { rmSync } from 'node:fs';

export class InterruptedError extends Error {
  override name = 'InterruptedError';
  constructor(readonly signal: NodeJS.Signals, readonly stage: string) {
    super(`interrupted by ${signal} during ${stage}`);
  }
}

/** Conventional exit status of a process ended by a signal: 128 + its number. */
export function signalExitCode(signal: NodeJS.Signals): number {
  return signal === 'SIGINT' ? 130 : signal === 'SIGTERM' ? 143 : 1;
}

let stage = 'startup';
let pending: NodeJS.Signals | null = null;
const tempPaths = new Set<string>();

/** Records what the job is doing, for the interruption message. */
export function setStage(s: string): void {
  stage = s;
}

export function currentStage(): string {
  return stage;
}

export function interruptedBy(): NodeJS.Signals | null {
  return pending;
}

/** Throws InterruptedError if a signal has arrived (without yielding). */
export function throwIfInterrupted(): void {
  if (pending) throw new InterruptedError(pending, stage);
}

/** Yields to the event loop (so a pending signal is delivered), then throws if one arrived. */
export async function interruptPoint(): Promise<void> {
  await new Promise<void>((res) => setImmediate(res));
  throwIfInterrupted();
}

/**
 * A temp path to delete if the process is forced out (second signal, process.exit) before its
 * owner removes it. Returns the unregister function; call it once the owner has cleaned up or
 * renamed the path into place.
 */
export function registerTempPath(p: string): () => void {
  tempPaths.add(p);
  return () => { tempPaths.delete(p); };
}

function removeTempPaths(): void {
  for (const p of tempPaths) {
    try {
      rmSync(p, { recursive: true, force: true });
    } catch {
      // best effort on the way out
    }
  }
  tempPaths.clear();
}

let installed = false;

/**
 * Installs the handlers (once). The first signal prints `what` and the stage and marks the job
 * interrupted; the next interruptPoint() throws. A second signal exits at once.
 */
export function installInterruptHandlers(what: string, write: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): void {
  if (installed) return;
  installed = true;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (pending) {
      write(`${what}: second ${sig}, stopping now (during ${stage})`);
      removeTempPaths();
      process.exit(signalExitCode(pending));
    }
    pending = sig;
    write(`${what}: ${sig} received during ${stage}; stopping and removing temporary files (send again to stop at once)`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', removeTempPaths);
}

/**
 * Test hook: when TRANSMLA_TEST_PAUSE_AT names this point, announce it on stderr and wait
 * (yielding) until a signal arrives, so tests can interrupt at an exact stage. No-op otherwise.
 */
export async function testPause(point: string): Promise<void> {
  if (process.env.TRANSMLA_TEST_PAUSE_AT !== point) return;
  process.stderr.write(`[test] paused at ${point}\n`);
  const until = Date.now() + 60_000;
  while (!pending && Date.now() < until) await new Promise<void>((res) => setTimeout(res, 20));
  throwIfInterrupted();
}
