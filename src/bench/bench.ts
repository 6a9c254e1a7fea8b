// `transmla bench`: decode speed of a model against context length, with
// - its comparison model (for a converted MLA folder, the source recorded in transmla.json,
//   unless another is given), measured in the same run so the ratio compares like with like;
// - llama.cpp on the same weights for every model our GGUF exporters can write (Llama-family
//   folders; stock-semantics MLA folders as deepseek2);
// - the machine's memory bandwidth, measured in the same run, and per context the roofline:
//   the bytes a decode step must read (weights + cache) over that bandwidth is the fastest a
//   step can be; the engine's time is compared with it.
// Every engine runs in its own child process (bench-child.ts) so its peak RSS is its own.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, totalmem } from 'node:os';
import { extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { kernels } from '../kernels/index.js';
import { measureBandwidth } from './bandwidth.js';
import type { BenchJob } from './bench-child.js';
import { ggufExportUnsupported } from '../export/gguf.js';
import { ggufFor } from './bench-decode.js';
import type { BenchRatio, BenchReport, BenchRun, DecodeAtContext, DecodeBench, RooflinePoint } from '../schema/bench-json.js';

export type { BenchRatio, BenchReport, BenchRun, RooflinePoint } from '../schema/bench-json.js';

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

function runChild(job: BenchJob, log: (line: string) => void): Promise<DecodeBench> {
  // bench-child.ts under tsx, bench-child.js once compiled.
  const entry = fileURLToPath(new URL(`./bench-child${extname(fileURLToPath(import.meta.url))}`, import.meta.url));
  const env = { ...process.env };
  // A child of a node:test file must not think it is a test-runner child.
  delete env.NODE_TEST_CONTEXT;
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [...loaderArgs(), entry, JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '', err = '', partial = '';
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr.on('data', (b: Buffer) => {
      const s = b.toString();
      err += s;
      // Progress lines (indented) pass through whole; a chunk may end mid-line.
      const lines = (partial + s).split('\n');
      partial = lines.pop()!;
      for (const line of lines) if (line.startsWith('  ')) log(line);
    });
    child.on('error', rej);
    child.on('close', (code) => {
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

function roofline(contexts: DecodeAtContext[], bytesPerSecond: number): RooflinePoint[] {
  return contexts.map((c) => {
    const minMs = (c.bytesPerStep / bytesPerSecond) * 1000;
    return { context: c.context, minMsPerToken: minMs, fractionOfRoofline: minMs / c.msPerToken, achievedBytesPerSecond: c.bytesPerStep / (c.msPerToken / 1000) };
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
  const threads = o.threads ?? availableParallelism();
  const options = { contexts: o.contexts, decodeTokens: o.decodeTokens ?? 64, reps: o.reps ?? 3, threads };

  log(`memory bandwidth (${Math.round((o.bandwidthBytes ?? 512 * 2 ** 20) / 2 ** 20)} MiB sequential read)…`);
  const bandwidth = await measureBandwidth({ bytes: o.bandwidthBytes });
  log(`  ${(bandwidth.bytesPerSecond / 1e9).toFixed(1)} GB/s (1 thread ${(bandwidth.singleThreadBytesPerSecond / 1e9).toFixed(1)}, ${bandwidth.threads} threads ${(bandwidth.parallelBytesPerSecond / 1e9).toFixed(1)})`);

  const runs: BenchRun[] = [];
  const skipped: BenchReport['llamaCppSkipped'] = [];
  const targets: [string, BenchRun['role']][] = [[model, 'model']];
  if (compare) targets.push([compare, 'compare']);
  for (const [path, role] of targets) {
    log(`${path}: our engine, contexts ${[...options.contexts].sort((a, b) => a - b).join(', ')}…`);
    const ours = await runChild({ kind: 'engine', path, options }, log);
    runs.push({ ...ours, role, roofline: roofline(ours.contexts, bandwidth.bytesPerSecond) });
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
      const cpp = await runChild({ kind: 'llama.cpp', gguf: g.gguf, facts: ours, options }, log);
      runs.push({ ...cpp, model: path, role, roofline: roofline(cpp.contexts, bandwidth.bytesPerSecond) });
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
    'roofline: bytes a step must read = every weight once (one embedding row unless tied to the head) + the whole cache once, over the measured bandwidth',
    'ratios: our engine on the model ÷ our engine on the comparison model, same run',
  ];
  const loadAfter = loadavg()[0]!;
  if (Math.max(loadBefore, loadAfter) > availableParallelism()) {
    notes.push(`the machine was busy (1-minute load average ${loadBefore.toFixed(1)} before, ${loadAfter.toFixed(1)} after, on ${availableParallelism()} threads): other processes shared the cores, so absolute speeds are low and noisy${threads > 1 ? ' (multi-threaded kernels suffer most when cores are shared: --threads 1 measures one core)' : ''}`);
  }
  if (runs.some((r) => r.contexts.some((c) => c.beyondTrainedWindow))) {
    notes.push(`contexts past a model's trained window (${trained} positions) are measured for speed only: positions beyond it are extrapolated and the outputs are not meaningful`);
  }
  return {
    tool: 'transmla bench',
    created: new Date().toISOString(),
    machine: { cpuModel: cpus()[0]?.model ?? 'unknown', cpus: availableParallelism(), totalMemoryBytes: totalmem(), kernels: kernels().backend, node: process.version, loadAverageBefore: loadBefore, loadAverageAfter: loadAfter },
    bandwidth, model, compare, compareSource,
    contexts: mine.contexts.map((c) => c.context),
    runs, ratios, llamaCppSkipped: skipped, notes,
  };
}

function mib(n: number): string {
  return `${(n / 2 ** 20).toFixed(n >= 10 * 2 ** 20 ? 0 : 1)} MiB`;
}

/** The human-readable table of a bench report. */
export function formatBenchReport(r: BenchReport): string {
  const lines: string[] = [];
  lines.push(`memory bandwidth ${(r.bandwidth.bytesPerSecond / 1e9).toFixed(1)} GB/s (${r.bandwidth.method})`);
  for (const run of r.runs) {
    lines.push('');
    lines.push(`${run.engine} · ${run.role === 'model' ? 'model' : 'comparison'} ${run.model}`);
    lines.push(`  ${run.attention}, ${(run.params / 1e6).toFixed(1)} M params ${run.weightDtype}; cache ${run.cacheBytesPerToken} B/token (${run.cacheDtype}), ` +
      `${run.cacheBytesPerTokenAtModelDtype} B/token at ${run.weightDtype}; weights read per step ${mib(run.weightBytesPerStep)}; peak RSS ${mib(run.peakRssBytes)}`);
    lines.push('  context   tok/s   ms/token   cache      roofline ms   of roofline');
    run.contexts.forEach((c, i) => {
      const rf = run.roofline[i]!;
      lines.push(`  ${String(c.context).padStart(7)} ${c.tokensPerSecond.toFixed(1).padStart(7)} ${c.msPerToken.toFixed(3).padStart(10)}   ${mib(c.cacheBytes).padEnd(10)} ` +
        `${rf.minMsPerToken.toFixed(3).padStart(11)}   ${(100 * rf.fractionOfRoofline).toFixed(0).padStart(5)} %${c.beyondTrainedWindow ? '   (past trained window)' : ''}`);
    });
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
