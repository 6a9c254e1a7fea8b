// Main side of the fuzzer. Cases run in one worker thread; the main thread watches the time
// since the worker last reported. The parsers are synchronous, so a case stuck in a loop would
// block any in-process timer forever: the watchdog terminates the worker instead (V8 can stop a
// busy loop), records a hang, and starts a new worker at the next case. A worker that dies
// (uncaught error, out of memory) is handled the same way. Cases are reproducible from
// (seed, target, index) alone, so the main thread regenerates them to write reproducers.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { DEFAULT_MEM_LIMIT, writeReproducer } from './exec.js';
import { buildSeeds } from './seeds.js';
import { makeCase, targetOf } from './targets.js';
import { TARGET_NAMES, type CaseResult, type Outcome, type SeedSet, type TargetName } from './types.js';
import type { WorkerInput, WorkerMessage } from './worker.js';

export interface FuzzOptions {
  iterations: number;
  seed: number;
  target: TargetName | 'all';
  /** Wall-clock limit per case; slower cases are reported as hangs. */
  timeLimitMs: number;
  memLimitBytes?: number;
  /** Where reproducers of bad cases and hangs go; null: not written. */
  crashDir: string | null;
  /** First case index (to resume or replay a range). Default 0. */
  start?: number;
  /** Progress lines (default: none). */
  progress?: (line: string) => void;
  progressEveryMs?: number;
  /** Prebuilt seeds (tests reuse them across runs). */
  seeds?: SeedSet;
}

export interface TargetStats {
  cases: number;
  outcomes: Record<Outcome, number>;
  totalMs: number;
  maxMs: number;
  maxMemGrowth: number;
  /** Typed-error messages normalised (paths, quoted names and numbers blanked) → count. */
  errorKinds: Record<string, number>;
}

export interface Problem extends CaseResult {
  reproducer: string | null;
}

export interface FuzzReport {
  seed: number;
  target: TargetName | 'all';
  start: number;
  iterations: number;
  timeLimitMs: number;
  memLimitBytes: number;
  wallMs: number;
  workerStarts: number;
  stats: Partial<Record<TargetName, TargetStats>>;
  totals: Record<Outcome, number>;
  problems: Problem[];
  /** The slowest cases (descending), to see how close the run came to the time limit. */
  slowest: { target: TargetName; index: number; ms: number; outcome: Outcome; seedName: string; ops: string[] }[];
  seeds: Record<TargetName, string[]>;
}

const MAX_ERROR_KINDS = 300;

function normaliseMessage(msg: string, workDir: string): string {
  return msg
    .split(workDir).join('<dir>')
    .replace(/"(?:[^"\\]|\\.)*"/g, '"…"')
    .replace(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi, 'N')
    .slice(0, 160);
}

/** Bootstraps a TypeScript worker: registers tsx inside the worker, then imports worker.ts. */
function startWorker(input: WorkerInput): Worker {
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const workerUrl = new URL('./worker.ts', import.meta.url).href;
  const boot = `import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(workerUrl)}); });`;
  // A JS-heap blow-up kills only the worker, which is then reported as a bad case.
  return new Worker(boot, { eval: true, workerData: input, resourceLimits: { maxOldGenerationSizeMb: 2048 } });
}

export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const t0 = Date.now();
  const seeds = opts.seeds ?? (await buildSeeds());
  const memLimitBytes = opts.memLimitBytes ?? DEFAULT_MEM_LIMIT;
  const start = opts.start ?? 0;
  const end = start + opts.iterations;
  const workDir = mkdtempSync(join(tmpdir(), 'transmla-fuzz-'));
  const killAfterMs = opts.timeLimitMs * 2 + 1000;
  const stats: Partial<Record<TargetName, TargetStats>> = {};
  const totals: Record<Outcome, number> = { ok: 0, 'typed-error': 0, bad: 0, hang: 0 };
  const problems: Problem[] = [];
  const slowest: FuzzReport['slowest'] = [];
  let done = 0;
  let workerStarts = 0;
  let lastProgress = Date.now();

  const record = (result: CaseResult): void => {
    let r = result;
    const s = (stats[r.target] ??= { cases: 0, outcomes: { ok: 0, 'typed-error': 0, bad: 0, hang: 0 }, totalMs: 0, maxMs: 0, maxMemGrowth: 0, errorKinds: {} });
    s.cases++;
    s.outcomes[r.outcome]++;
    totals[r.outcome]++;
    s.totalMs += r.ms;
    s.maxMs = Math.max(s.maxMs, r.ms);
    s.maxMemGrowth = Math.max(s.maxMemGrowth, r.memGrowth);
    if (slowest.length < 10 || r.ms > slowest[slowest.length - 1]!.ms) {
      slowest.push({ target: r.target, index: r.index, ms: Math.round(r.ms), outcome: r.outcome, seedName: r.seedName, ops: r.ops });
      slowest.sort((a, b) => b.ms - a.ms);
      slowest.length = Math.min(slowest.length, 10);
    }
    if (r.outcome === 'typed-error') {
      let kind = normaliseMessage(r.detail, workDir);
      if (!(kind in s.errorKinds) && Object.keys(s.errorKinds).length >= MAX_ERROR_KINDS) kind = '(other)';
      s.errorKinds[kind] = (s.errorKinds[kind] ?? 0) + 1;
    }
    if (r.outcome === 'bad' || r.outcome === 'hang') {
      let reproducer: string | null = null;
      if (opts.crashDir !== null) {
        try {
          reproducer = writeReproducer(opts.crashDir, opts.seed, makeCase(seeds, opts.seed, r.target, r.index), r);
        } catch (err) {
          r = { ...r, detail: `${r.detail}; writing the reproducer failed: ${(err as Error).message}` };
        }
      }
      problems.push({ ...r, reproducer });
      opts.progress?.(`[fuzz] ${r.outcome.toUpperCase()} ${r.target} #${r.index}: ${r.detail.split('\n')[0]}${reproducer ? ` -> ${reproducer}` : ''}`);
    }
    done++;
    if (opts.progress && Date.now() - lastProgress >= (opts.progressEveryMs ?? 10_000)) {
      lastProgress = Date.now();
      const rate = done / ((Date.now() - t0) / 1000);
      opts.progress(`[fuzz] ${done}/${opts.iterations} cases (${rate.toFixed(0)}/s): ok ${totals.ok}, typed-error ${totals['typed-error']}, bad ${totals.bad}, hang ${totals.hang}`);
    }
  };

  /** Runs cases [from, end) in one worker; resolves with where to continue. */
  const runWorker = (from: number): Promise<number> =>
    new Promise((resolveNext, reject) => {
      workerStarts++;
      const w = startWorker({ seeds, runSeed: opts.seed, target: opts.target, from, to: end, timeLimitMs: opts.timeLimitMs, memLimitBytes, workDir });
      let current = from;
      let ready = false;
      let last = Date.now();
      let settled = false;
      const finish = (next: number | Error): void => {
        if (settled) return;
        settled = true;
        clearInterval(watchdog);
        void w.terminate().then(() => (next instanceof Error ? reject(next) : resolveNext(next)));
      };
      const failCurrent = (outcome: 'bad' | 'hang', detail: string): void => {
        const target = targetOf(opts.target, current);
        let described: { seedName: string; ops: string[] } = { seedName: '?', ops: [] };
        try {
          described = makeCase(seeds, opts.seed, target, current);
        } catch (err) {
          detail += `; regenerating the case failed: ${(err as Error).message}`;
        }
        record({ target, index: current, outcome, detail, ms: Date.now() - last, memGrowth: 0, seedName: described.seedName, ops: described.ops });
        finish(current + 1);
      };
      const watchdog = setInterval(() => {
        if (ready && Date.now() - last > killAfterMs) failCurrent('hang', `no result after ${Date.now() - last} ms (limit ${opts.timeLimitMs} ms); worker terminated`);
      }, 100);
      w.on('message', (m: WorkerMessage) => {
        if (m.type === 'ready') {
          ready = true;
          last = Date.now();
        } else if (m.type === 'result') {
          record(m.result);
          current = m.result.index + 1;
          last = Date.now();
        } else {
          finish(end);
        }
      });
      w.on('error', (err) => {
        if (!ready) finish(new Error(`fuzz worker failed to start: ${err.message}`, { cause: err }));
        else failCurrent('bad', `worker died: ${err.name}: ${err.message}`);
      });
      w.on('exit', (code) => {
        if (settled) return;
        if (!ready) finish(new Error(`fuzz worker exited with code ${code} before starting`));
        else failCurrent('bad', `worker exited with code ${code}`);
      });
    });

  try {
    let next = start;
    while (next < end) next = await runWorker(next);
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
  const seedNames = Object.fromEntries(TARGET_NAMES.map((t) => [t, seeds[t].map((s) => s.name)])) as Record<TargetName, string[]>;
  return { seed: opts.seed, target: opts.target, start, iterations: opts.iterations, timeLimitMs: opts.timeLimitMs, memLimitBytes, wallMs: Date.now() - t0, workerStarts, stats, totals, problems, slowest, seeds: seedNames };
}
