// The machine's memory read bandwidth, measured without native code: a buffer far larger than
// any cache is scanned for a byte it does not contain (Buffer#indexOf → memchr, a vectorised
// sequential read that stops only at the end), by one thread and by one worker thread per core
// over disjoint slices of a SharedArrayBuffer. The best rate over a few repetitions is the
// figure: decode-time rooflines divide the bytes a step must read by it.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { BandwidthResult } from '../schema/bench-json.js';

export type { BandwidthResult } from '../schema/bench-json.js';

export interface BandwidthOptions {
  /** Buffer size (default 512 MiB: far beyond any last-level cache). */
  bytes?: number;
  /** Repetitions per thread count; the best is kept (default 5). */
  reps?: number;
  /** Worker threads for the parallel figure (default: available parallelism). */
  threads?: number;
}


// Workers are plain CommonJS so this runs the same under tsx and from the compiled package.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const b = Buffer.from(workerData.sab, workerData.offset, workerData.length);
parentPort.on('message', () => parentPort.postMessage(b.indexOf(1)));
`;

/** Fills with a byte other than the one searched for: real pages (untouched ones alias the zero page). */
const FILL = 2;

function scanOnce(buf: Buffer): number {
  const t0 = performance.now();
  if (buf.indexOf(1) !== -1) throw new Error('bandwidth: the scanned buffer holds the searched byte');
  return (performance.now() - t0) / 1000;
}

export async function measureBandwidth(opts: BandwidthOptions = {}): Promise<BandwidthResult> {
  const bytes = opts.bytes ?? 512 * 2 ** 20;
  const reps = opts.reps ?? 5;
  const threads = Math.max(1, opts.threads ?? availableParallelism());
  if (!Number.isInteger(bytes) || bytes < 2 ** 20) throw new Error(`bandwidth: buffer must be at least 1 MiB, got ${bytes}`);
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`bandwidth: reps must be a positive integer, got ${reps}`);
  const sab = new SharedArrayBuffer(bytes);
  const all = Buffer.from(sab);
  all.fill(FILL);

  let single = Infinity;
  scanOnce(all);
  for (let r = 0; r < reps; r++) single = Math.min(single, scanOnce(all));

  const slice = Math.floor(bytes / threads);
  const workers = Array.from({ length: threads }, (_, k) => new Worker(WORKER_SOURCE, {
    eval: true, workerData: { sab, offset: k * slice, length: slice },
  }));
  let parallel = Infinity;
  try {
    const round = async (): Promise<number> => {
      const done = workers.map((w) => new Promise<number>((res, rej) => {
        w.once('message', (i: number) => (i === -1 ? res(i) : rej(new Error('bandwidth: worker found the searched byte'))));
        w.once('error', rej);
      }));
      const t0 = performance.now();
      for (const w of workers) w.postMessage(0);
      await Promise.all(done);
      return (performance.now() - t0) / 1000;
    };
    await round();
    for (let r = 0; r < reps; r++) parallel = Math.min(parallel, await round());
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  const singleBps = bytes / single;
  const parallelBps = (slice * threads) / parallel;
  return {
    bytesPerSecond: Math.max(singleBps, parallelBps),
    singleThreadBytesPerSecond: singleBps,
    parallelBytesPerSecond: parallelBps,
    threads,
    bufferBytes: bytes,
    reps,
    method: `sequential read of a ${Math.round(bytes / 2 ** 20)} MiB buffer (memchr through Buffer#indexOf for an absent byte), ` +
      `1 thread and ${threads} worker threads on disjoint slices; best of ${reps}`,
  };
}
