// `transmla bench`: decode speed of a model against context length, with
// - its comparison model (for a converted MLA folder, the source recorded in transmla.json,
//   unless another is given), measured in the same run so the ratio compares like with like;
// - llama.cpp on the same weights for every model our GGUF exporters can write (Llama-family
//   folders; stock-semantics MLA folders as deepseek2);
// - the machine's memory bandwidth, measured before the runs and again at every boundary between
//   timed repetitions (the engine child waits while the parent reads it), and per context the
//   roofline (roofline.ts): the bytes a decode step must read (weights + cache) over the bandwidth
//   read next to its fastest repetition is the fastest a step can be.
// Every engine runs in its own child process (bench-child.ts) so its peak RSS is its own.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, totalmem } from 'node:os';
import { extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { kernels } from '../kernels/index.js';
import { bestBandwidth, lastLevelCacheBytes, openBandwidthProbe, type BandwidthProbe } from './bandwidth.js';
import type { BenchJob, BoundaryMessage, ProbedMessage } from './bench-child.js';
import { ggufExportUnsupported } from '../export/gguf.js';
import { ggufFor } from './bench-decode.js';
import type { FloatDType, QuantDType } from '../kernels/types.js';
import { formatRooflineShare, rooflineOf } from './roofline.js';
import type { BenchRatio, BenchReport, BenchRun, DecodeBench, ProbeAtBoundary, RooflinePoint } from '../schema/bench-json.js';

export type { BenchRatio, BenchReport, BenchRun, ProbeAtBoundary, RooflinePoint } from '../schema/bench-json.js';

export interface BenchOptions {
  model: string;
  /** Another model to measure in the same run; default: an MLA folder's source (transmla.json); null: none. */
  compare?: string | null;
  contexts: number[];
  decodeTokens?: number;
  reps?: number;
  /** Measure llama.cpp on every GGUF-exportable model (default true). */
  llamaCpp?: boolean;
  /** Threads for our engine and llama.cpp alike (default: available parallelism). */
  threads?: number;
  /** Our engine's weight quantization at load (llama.cpp then runs a GGUF of that type); default: as stored. */
  weights?: QuantDType | null;
  /** Our engine's KV cache dtype (default f16, llama.cpp's default). */
  kvDtype?: FloatDType;
  /** How our engine's cache is filled (DecodeBenchOptions.fill). */
  fill?: 'prefill' | 'repeated-chunk';
  /** Buffer for the bandwidth measurement (default 512 MiB). */
  bandwidthBytes?: number;
  log?: (line: string) => void;
}

/** The source model recorded by the converter in an MLA folder, when it still exists. */
export function recordedSource(model: string): string | null {
  const f = join(model, 'transmla.json');
  if (!existsSync(f)) return null;
  try {
    const src = (JSON.parse(readFileSync(f, 'utf8')) as { source?: { path?: unknown } }).source?.path;
    return typeof src === 'string' && existsSync(src) ? src : null;
  } catch {
    return null;
  }
}

/** Node flags a child needs to load this code the way we were loaded (tsx under development), nothing else. */
function loaderArgs(): string[] {
  const keep: string[] = [];
  const a = process.execArgv;
  for (let i = 0; i < a.length; i++) {
    const f = a[i]!;
    if (['--import', '--require', '-r', '--loader', '--experimental-loader'].includes(f) && i + 1 < a.length) keep.push(f, a[++i]!);
    else if (/^--(import|require|loader|experimental-loader)=/.test(f) || f.startsWith('--max-old-space-size') || f === '--enable-source-maps') keep.push(f);
  }
  return keep;
}

/** Runs one engine in its child; at each repetition boundary the child waits while `probe` reads the bandwidth. */
function runChild(job: BenchJob, log: (line: string) => void, probe: BandwidthProbe, probes: ProbeAtBoundary[]): Promise<DecodeBench> {
  // bench-child.ts under tsx, bench-child.js once compiled.
  const entry = fileURLToPath(new URL(`./bench-child${extname(fileURLToPath(import.meta.url))}`, import.meta.url));
  const env = { ...process.env };
  // A child of a node:test file must not think it is a test-runner child.
  delete env.NODE_TEST_CONTEXT;
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [...loaderArgs(), entry, JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env });
    let out = '', err = '', partial = '', probeError: Error | null = null;
    child.on('message', (m: BoundaryMessage) => {
      if (m?.kind !== 'boundary') return;
      probe.sample().then((s) => {
        probes.push({ ...s, context: m.context, beforeRep: m.rep, previousMs: m.previousMs });
        if (child.connected) child.send({ kind: 'probed' } satisfies ProbedMessage);
      }, (e: unknown) => {
        probeError = e as Error;
        child.kill();
      });
    });
    child.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr!.on('data', (b: Buffer) => {
      const s = b.toString();
      err += s;
      // Progress lines (indented) pass through whole; a chunk may end mid-line.
      const lines = (partial + s).split('\n');
      partial = lines.pop()!;
      for (const line of lines) if (line.startsWith('  ')) log(line);
    });
    child.on('error', rej);
    child.on('close', (code) => {
      if (probeError) {
        rej(new Error(`bandwidth probe failed during the ${job.kind} benchmark: ${(probeError as Error).message}`));
        return;
      }
      if (code !== 0) {
        const why = err.trim().split('\n').filter((l) => !l.startsWith('  ')).slice(-5).join('\n');
        rej(new Error(`${job.kind} benchmark failed (exit ${code}): ${why}`));
        return;
      }
      try {
        res(JSON.parse(out.trim().split('\n').pop()!) as DecodeBench);
      } catch (e) {
        rej(new Error(`${job.kind} benchmark printed no result: ${(e as Error).message}`));
      }
    });
  });
}

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const log = o.log ?? (() => {});
  const loadBefore = loadavg()[0]!;
  const model = resolve(o.model);
  if (!existsSync(model)) throw new Error(`model ${o.model} does not exist`);
  let compare: string | null = null;
  let compareSource: BenchReport['compareSource'] = 'none';
  if (o.compare) {
    compare = resolve(o.compare);
    if (!existsSync(compare)) throw new Error(`comparison model ${o.compare} does not exist`);
    compareSource = 'given';
  } else if (o.compare === undefined) {
    compare = recordedSource(model);
    if (compare) compareSource = 'transmla.json source';
  }
  log(`memory bandwidth (${Math.round((o.bandwidthBytes ?? 512 * 2 ** 20) / 2 ** 20)} MiB sequential read)…`);
  // One buffer serves the up-front figure and every reading between timed repetitions.
  const probe = await openBandwidthProbe({ bytes: o.bandwidthBytes });
  try {
    return await benchWith(o, { log, loadBefore, model, compare, compareSource }, probe);
  } finally {
    await probe.close();
  }
}

interface Resolved { log: (line: string) => void; loadBefore: number; model: string; compare: string | null; compareSource: BenchReport['compareSource'] }

async function benchWith(o: BenchOptions, { log, loadBefore, model, compare, compareSource }: Resolved, probe: BandwidthProbe): Promise<BenchReport> {
  const threads = o.threads ?? availableParallelism();
  const options = { contexts: o.contexts, decodeTokens: o.decodeTokens ?? 64, reps: o.reps ?? 3, threads, weights: o.weights ?? null, kvDtype: o.kvDtype ?? 'f16', fill: o.fill ?? 'prefill' };
  const bandwidth = await bestBandwidth(probe);
  log(`  ${(bandwidth.bytesPerSecond / 1e9).toFixed(1)} GB/s (1 thread ${(bandwidth.singleThreadBytesPerSecond / 1e9).toFixed(1)}, ${bandwidth.threads} threads ${(bandwidth.parallelBytesPerSecond / 1e9).toFixed(1)})`);
  const llc = lastLevelCacheBytes();
  const measure = async (job: BenchJob): Promise<{ bench: DecodeBench; probes: ProbeAtBoundary[]; roofline: RooflinePoint[] }> => {
    const probes: ProbeAtBoundary[] = [];
    const bench = await runChild(job, log, probe, probes);
    return { bench, probes, roofline: rooflineOf(bench.contexts, probes, bandwidth.bytesPerSecond, llc) };
  };

  const runs: BenchRun[] = [];
  const skipped: BenchReport['llamaCppSkipped'] = [];
  const targets: [string, BenchRun['role']][] = [[model, 'model']];
  if (compare) targets.push([compare, 'compare']);
  for (const [path, role] of targets) {
    log(`${path}: our engine, contexts ${[...options.contexts].sort((a, b) => a - b).join(', ')}…`);
    const m = await measure({ kind: 'engine', path, options });
    const ours = m.bench;
    runs.push({ ...ours, role, roofline: m.roofline, bandwidthProbes: m.probes });
    if (o.llamaCpp === false) continue;
    const why = ggufExportUnsupported(path);
    if (why) {
      skipped.push({ model: path, reason: why });
      log(`  llama.cpp skipped: ${why}`);
      continue;
    }
    log(`${path}: llama.cpp (${ours.weightDtype} GGUF, ${threads} thread${threads === 1 ? '' : 's'})…`);
    let g: ReturnType<typeof ggufFor>;
    try {
      g = ggufFor(path, ours.weightDtype);
    } catch (e) {
      skipped.push({ model: path, reason: `GGUF export failed: ${(e as Error).message}` });
      log(`  llama.cpp skipped: ${(e as Error).message}`);
      continue;
    }
    try {
      const cpp = await measure({ kind: 'llama.cpp', gguf: g.gguf, facts: ours, options });
      runs.push({ ...cpp.bench, model: path, role, roofline: cpp.roofline, bandwidthProbes: cpp.probes });
    } catch (e) {
      skipped.push({ model: path, reason: (e as Error).message });
      log(`  llama.cpp failed: ${(e as Error).message}`);
    } finally {
      g.cleanup();
    }
  }

  const mine = runs.find((r) => r.role === 'model' && r.engine === 'transmla')!;
  const other = runs.find((r) => r.role === 'compare' && r.engine === 'transmla');
  const ratios: BenchRatio[] = other ? mine.contexts.map((c, i) => ({
    context: c.context,
    decodeSpeedup: c.tokensPerSecond / other.contexts[i]!.tokensPerSecond,
    cacheBytesRatio: c.cacheBytes / other.contexts[i]!.cacheBytes,
  })) : [];
  const trained = Math.min(...runs.map((r) => r.trainedContext));
  const notes = [
    `decode: greedy, one token per forward with logits; best of ${options.reps} × ${options.decodeTokens} steps per context, ${threads} thread${threads === 1 ? '' : 's'}; prompts are pseudo-random token ids (decode cost does not depend on them)`,
    'ours keeps the cache in f32; llama.cpp (node-llama-cpp prebuilt CPU binary) in its default f16; the GGUF holds the same weights in the same dtype, written by our exporter',
    'roofline: bytes a step must read = every weight once (one embedding row unless tied to the head) + the whole cache once, over the memory bandwidth ' +
      'read just before and just after the fastest timed repetition (the better of the two; the engine waits while it is read); the range is over every reading of the run',
    'ratios: our engine on the model ÷ our engine on the comparison model, same run',
  ];
  const loadAfter = loadavg()[0]!;
  const rates = runs.flatMap((r) => r.bandwidthProbes.map((p) => p.bytesPerSecond));
  if (Math.max(loadBefore, loadAfter) > availableParallelism()) {
    notes.push(`the machine was busy (1-minute load average ${loadBefore.toFixed(1)} before, ${loadAfter.toFixed(1)} after, on ${availableParallelism()} threads): other processes shared the cores, so absolute speeds are low and noisy${threads > 1 ? ' (multi-threaded kernels suffer most when cores are shared: --threads 1 measures one core)' : ''}`);
  }
  if (runs.some((r) => r.contexts.some((c) => c.beyondTrainedWindow))) {
    notes.push(`contexts past a model's trained window (${trained} positions) are measured for speed only: positions beyond it are extrapolated and the outputs are not meaningful`);
  }
  return {
    tool: 'transmla bench',
    created: new Date().toISOString(),
    machine: {
      cpuModel: cpus()[0]?.model ?? 'unknown', cpus: availableParallelism(), totalMemoryBytes: totalmem(), kernels: kernels().backend, node: process.version,
      loadAverageBefore: loadBefore, loadAverageAfter: loadAfter, lastLevelCacheBytes: llc,
    },
    bandwidth, bandwidthProbes: { count: rates.length, minBytesPerSecond: Math.min(...rates), maxBytesPerSecond: Math.max(...rates) },
    model, compare, compareSource,
    contexts: mine.contexts.map((c) => c.context),
    runs, ratios, llamaCppSkipped: skipped, notes,
  };
}

function mib(n: number): string {
  return `${(n / 2 ** 20).toFixed(n >= 10 * 2 ** 20 ? 0 : 1)} MiB`;
}

const gbs = (n: number): string => (n / 1e9).toFixed(1);

/** The human-readable table of a bench report. */
export function formatBenchReport(r: BenchReport): string {
  const lines: string[] = [];
  const p = r.bandwidthProbes;
  lines.push(`memory bandwidth ${gbs(r.bandwidth.bytesPerSecond)} GB/s before the runs (${r.bandwidth.method})` +
    (p.count > 0 ? `; ${gbs(p.minBytesPerSecond)}–${gbs(p.maxBytesPerSecond)} GB/s over ${p.count} readings between timed repetitions` : ''));
  for (const run of r.runs) {
    lines.push('');
    lines.push(`${run.engine} · ${run.role === 'model' ? 'model' : 'comparison'} ${run.model}`);
    lines.push(`  ${run.attention}, ${(run.params / 1e6).toFixed(1)} M params ${run.weightDtype}; cache ${run.cacheBytesPerToken} B/token (${run.cacheDtype}), ` +
      `${run.cacheBytesPerTokenAtModelDtype} B/token at ${run.weightDtype}; weights read per step ${mib(run.weightBytesPerStep)}; peak RSS ${mib(run.peakRssBytes)}`);
    lines.push('  context   tok/s   ms/token   cache      GB/s adj.   roofline ms (range)       of roofline');
    const why: string[] = [];
    run.contexts.forEach((c, i) => {
      const rf = run.roofline[i]!;
      const range = `${rf.minMsPerToken.toFixed(3)} (${rf.minMsPerTokenRange[0].toFixed(3)}–${rf.minMsPerTokenRange[1].toFixed(3)})`;
      lines.push(`  ${String(c.context).padStart(7)} ${c.tokensPerSecond.toFixed(1).padStart(7)} ${c.msPerToken.toFixed(3).padStart(10)}   ${mib(c.cacheBytes).padEnd(10)} ` +
        `${gbs(rf.bandwidthBytesPerSecond).padStart(9)}   ${range.padEnd(24)} ${formatRooflineShare(rf).padStart(7)}${c.beyondTrainedWindow ? '   (past trained window)' : ''}`);
      if (rf.aboveRoofline) why.push(`  * ${c.context}: ${rf.aboveRoofline}`);
    });
    lines.push(...why);
  }
  if (r.ratios.length > 0) {
    lines.push('');
    lines.push('model ÷ comparison (our engine):');
    for (const x of r.ratios) lines.push(`  ${String(x.context).padStart(7)}: decode ${x.decodeSpeedup.toFixed(2)}×, cache bytes ${x.cacheBytesRatio.toFixed(3)}×`);
  }
  for (const s of r.llamaCppSkipped) lines.push(`llama.cpp not run on ${s.model}: ${s.reason}`);
  lines.push('');
  for (const n of r.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}
