// The machine's memory read bandwidth, measured without native code: a buffer far larger than
// any cache is scanned for a byte it does not contain (Buffer#indexOf → memchr, a vectorised
// sequential read that stops only at the end), by one thread and by one worker thread per core
// over disjoint slices of a SharedArrayBuffer. measureBandwidth keeps the best of a few
// repetitions; an open probe (openBandwidthProbe) takes one reading at a time, so a benchmark
// can read the bandwidth between its timing runs, in the same window as the timings.
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { BandwidthResult, BandwidthSample } from '../schema/bench-json.js';

export type { BandwidthResult, BandwidthSample } from '../schema/bench-json.js';

export interface BandwidthOptions {
  /** Buffer size (default 512 MiB: far beyond any last-level cache). */
  bytes?: number;
  /** Repetitions per thread count; the best is kept (default 5). */
  reps?: number;
  /** Worker threads for the parallel figure (default: available parallelism). */
  threads?: number;
}

export interface BandwidthProbe {
  readonly threads: number;
  readonly bufferBytes: number;
  sample(): Promise<BandwidthSample>;
  close(): Promise<void>;
}

// Workers are plain CommonJS so this runs the same under tsx and from the compiled package.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const b = Buffer.from(workerData.sab, workerData.offset, workerData.length);
parentPort.on('message', () => parentPort.postMessage(b.indexOf(1)));
`;

/** Fills with a byte other than the one searched for: real pages (untouched ones alias the zero page). */
const FILL = 2;

export const nowEpochMs = (): number => performance.timeOrigin + performance.now();

function scanOnce(buf: Buffer): number {
  const t0 = performance.now();
  if (buf.indexOf(1) !== -1) throw new Error('bandwidth: the scanned buffer holds the searched byte');
  return (performance.now() - t0) / 1000;
}

/** Allocates the buffer, starts the workers and warms both paths up once. */
export async function openBandwidthProbe(opts: Omit<BandwidthOptions, 'reps'> = {}): Promise<BandwidthProbe> {
  const bytes = opts.bytes ?? 512 * 2 ** 20;
  const threads = Math.max(1, opts.threads ?? availableParallelism());
  if (!Number.isInteger(bytes) || bytes < 2 ** 20) throw new Error(`bandwidth: buffer must be at least 1 MiB, got ${bytes}`);
  const sab = new SharedArrayBuffer(bytes);
  const all = Buffer.from(sab);
  all.fill(FILL);
  const slice = Math.floor(bytes / threads);
  const workers = Array.from({ length: threads }, (_, k) => new Worker(WORKER_SOURCE, {
    eval: true, workerData: { sab, offset: k * slice, length: slice },
  }));
  const round = async (): Promise<number> => {
    // Both listeners go once either fires: a probe reads many rounds from the same workers.
    const done = workers.map((w) => new Promise<number>((res, rej) => {
      const onError = (e: Error): void => { w.off('message', onMessage); rej(e); };
      const onMessage = (i: number): void => {
        w.off('error', onError);
        if (i === -1) res(i);
        else rej(new Error('bandwidth: worker found the searched byte'));
      };
      w.once('message', onMessage);
      w.once('error', onError);
    }));
    const t0 = performance.now();
    for (const w of workers) w.postMessage(0);
    await Promise.all(done);
    return (performance.now() - t0) / 1000;
  };
  const close = async (): Promise<void> => { await Promise.all(workers.map((w) => w.terminate())); };
  try {
    scanOnce(all);
    await round();
  } catch (e) {
    await close();
    throw e;
  }
  return {
    threads,
    bufferBytes: bytes,
    async sample() {
      const at = nowEpochMs();
      const single = bytes / scanOnce(all);
      const parallel = (slice * threads) / await round();
      return { at, bytesPerSecond: Math.max(single, parallel), singleThreadBytesPerSecond: single, parallelBytesPerSecond: parallel };
    },
    close,
  };
}

/** The best of `reps` readings of an open probe, as the machine figure. */
export async function bestBandwidth(probe: BandwidthProbe, reps = 5): Promise<BandwidthResult> {
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`bandwidth: reps must be a positive integer, got ${reps}`);
  let single = 0, parallel = 0;
  for (let r = 0; r < reps; r++) {
    const s = await probe.sample();
    single = Math.max(single, s.singleThreadBytesPerSecond);
    parallel = Math.max(parallel, s.parallelBytesPerSecond);
  }
  return {
    bytesPerSecond: Math.max(single, parallel),
    singleThreadBytesPerSecond: single,
    parallelBytesPerSecond: parallel,
    threads: probe.threads,
    bufferBytes: probe.bufferBytes,
    reps,
    method: `sequential read of a ${Math.round(probe.bufferBytes / 2 ** 20)} MiB buffer (memchr through Buffer#indexOf for an absent byte), ` +
      `1 thread and ${probe.threads} worker threads on disjoint slices; best of ${reps}`,
  };
}

export async function measureBandwidth(opts: BandwidthOptions = {}): Promise<BandwidthResult> {
  const reps = opts.reps ?? 5;
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`bandwidth: reps must be a positive integer, got ${reps}`);
  const probe = await openBandwidthProbe(opts);
  try {
    return await bestBandwidth(probe, reps);
  } finally {
    await probe.close();
  }
}

/**
 * The largest CPU cache in bytes (Linux sysfs, cpu0), or null where it cannot be read: a decode
 * step whose bytes fit in it can run from cache, faster than the memory roofline.
 */
export function lastLevelCacheBytes(root = '/sys/devices/system/cpu/cpu0/cache'): number | null {
  let best: { level: number; bytes: number } | null = null;
  let entries: string[];
  try {
    entries = readdirSync(root).filter((e) => /^index\d+$/.test(e));
  } catch {
    return null;
  }
  for (const e of entries) {
    try {
      const level = Number(readFileSync(join(root, e, 'level'), 'utf8').trim());
      const type = readFileSync(join(root, e, 'type'), 'utf8').trim();
      const m = /^(\d+)([KMG]?)$/.exec(readFileSync(join(root, e, 'size'), 'utf8').trim());
      if (!m || type === 'Instruction') continue;
      const bytes = Number(m[1]) * (m[2] === 'K' ? 2 ** 10 : m[2] === 'M' ? 2 ** 20 : m[2] === 'G' ? 2 ** 30 : 1);
      if (!best || level > best.level || (level === best.level && bytes > best.bytes)) best = { level, bytes };
    } catch {
      // An entry without level/type/size (some virtual machines) says nothing; the others still count.
    }
  }
  return best?.bytes ?? null;
}
