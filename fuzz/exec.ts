// Runs one case: lays its files out in a folder, loads it through the target, and classifies the
// result with its wall time and memory growth.
import { mkdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { FileImage } from './mutate.js';
import { classifyError, TARGETS } from './targets.js';
import type { CaseResult, FuzzCase } from './types.js';

/** Growth above this during one case marks it as a length-driven allocation. */
export const DEFAULT_MEM_LIMIT = 256 * 1024 * 1024;

/** Recreates `dir` holding exactly `files` (tails are sparse zero extensions). */
export function materialize(dir: string, files: Record<string, FileImage>): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const [rel, img] of Object.entries(files)) {
    const p = join(dir, rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, img.bytes);
    if (img.tail > 0) truncateSync(p, img.bytes.length + img.tail);
  }
}

// Peak RSS per case: Linux resets VmHWM when "5" is written to /proc/self/clear_refs.
let peakRssWorks: boolean | null = null;

function procStatusKb(field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

function resetPeakRss(): number | null {
  if (peakRssWorks === false) return null;
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    peakRssWorks = true;
    return procStatusKb('VmRSS');
  } catch {
    peakRssWorks = false;
    return null;
  }
}

function heapAndBuffers(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

export interface ExecOptions {
  timeLimitMs: number;
  memLimitBytes: number;
}

/** Executes a case in `dir` (recreated). Synchronous: a true hang needs the caller's watchdog. */
export function executeCase(c: FuzzCase, dir: string, opts: ExecOptions): CaseResult {
  const spec = TARGETS[c.target];
  materialize(dir, c.files);
  const entry = resolve(dir, c.entry);
  const rss0 = resetPeakRss();
  const mem0 = heapAndBuffers();
  const t0 = performance.now();
  let outcome: CaseResult['outcome'] = 'ok';
  let detail = '';
  try {
    spec.load(entry);
  } catch (err) {
    ({ outcome, detail } = classifyError(err, spec, entry));
  }
  const ms = performance.now() - t0;
  // ArrayBuffers stay accounted until collected, so an allocation that failed later still shows.
  let memGrowth = heapAndBuffers() - mem0;
  if (rss0 !== null) memGrowth = Math.max(memGrowth, procStatusKb('VmHWM') - rss0);
  const memNote = memGrowth > opts.memLimitBytes ? `memory grew by ${(memGrowth / 2 ** 20).toFixed(0)} MiB (limit ${(opts.memLimitBytes / 2 ** 20).toFixed(0)} MiB); ` : '';
  if (ms > opts.timeLimitMs) {
    outcome = 'hang';
    detail = `took ${ms.toFixed(0)} ms (limit ${opts.timeLimitMs} ms); ${memNote}${detail || 'loaded'}`;
  } else if (memNote) {
    outcome = 'bad';
    detail = `${memNote}${detail || 'loaded'}`;
  }
  return { target: c.target, index: c.index, outcome, detail, ms, memGrowth, seedName: c.seedName, ops: c.ops };
}

/** Writes a reproducer folder: the case files plus case.json describing it. Returns its path. */
export function writeReproducer(crashDir: string, runSeed: number, c: FuzzCase, r: CaseResult): string {
  const dir = join(crashDir, `${c.target}-s${runSeed}-i${c.index}`);
  materialize(dir, c.files);
  const info = { target: c.target, runSeed, index: c.index, entry: c.entry, seed: c.seedName, ops: c.ops, outcome: r.outcome, detail: r.detail, ms: Math.round(r.ms) };
  writeFileSync(join(dir, 'case.json'), JSON.stringify(info, null, 2) + '\n');
  return dir;
}
