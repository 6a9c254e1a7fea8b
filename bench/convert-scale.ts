// `npm run bench -- convert-scale [--sections forward,kjv,search,validate,synthetic,8b] [--8b-layers 4] [--8b-no-eval]
//   [--synthetic qwen2.5-0.5b,llama-3.2-1b]`
//
// The default `transmla convert` at the sizes users bring (issue #18), every figure measured here:
//  forward   calibration forward throughput: one decoder layer of each real shape (random weights)
//            run over 256-token samples as the sweeps run it, its FLOP/s against the peak of our
//            sgemm on the same machine in the same minutes (the two alternate; best of each).
//  kjv       kjv-gqa at 31.25 % KV, default profile, with and without the stage evaluation.
//  search    proxy vs perplexity search of (d_R, FreqFold) at 12.5 % KV on every shared model: the
//            shape each picks, the held-out perplexities, seconds.
//  synthetic Qwen2.5-0.5B and Llama-3.2-1B shapes (random bf16 weights, all layers), default
//            convert with evaluation: wall time and peak RSS per stage.
//  validate  the default output (stock folder, 31.25 % KV, --no-eval) of every shared model through
//            `transmla validate --json`: per engine, loads / computes the same / fast path.
//  8b        Llama-3.1-8B's shape with 2 and N layers, the default path (with its stage evaluation;
//            --8b-no-eval for --no-eval): per-layer time and memory, and the extrapolation to its 32
//            layers, by stage (the proxy search scores at most 8 layers, so it is not linear in L).
// Every conversion is its own `transmla convert` child; its RSS is sampled from /proc every 100 ms
// and attributed to the stage its last progress line named. The plan line's time estimate is
// compared with the measured wall time. The load average is recorded around every measurement.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { kernels } from '../src/kernels/index.js';
import { openSource } from '../src/convert/pipeline.js';
import { layerFlopsPerToken } from '../src/convert/estimate.js';
import { proxyLayers } from '../src/convert/transmla.js';
import { HiddenStates } from '../src/eval/hidden-states.js';
import type { ConvertReport, StockExportReport } from '../src/schema/transmla-json.js';
import { SHAPES, writeSyntheticModel, paramCount, type Shape } from './lib/synthetic.js';
import { hfFolderOf, domainOf } from './transmla.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ASSETS = resolve(REPO, '..', 'shared', 'assets');
const MODELS = ['kjv-gqa', 'kjv-mha', 'kjv-qwen3', 'kjv-mixtral', 'TinyStories-656K', 'stories260K', 'babyllama-tok105'];
const MiB = 2 ** 20;
const log = (s: string) => process.stderr.write(`${s}\n`);
const load = () => loadavg().map((x) => Number(x.toFixed(2)));
const r1 = (x: number) => Number(x.toFixed(1));

interface StageMark { stage: string; seconds: number; peakRssMiB: number; maxSampledRssMiB: number }
interface ConvertRun {
  args: string[]; ok: boolean; error?: string; wallSeconds: number; peakRssMiB: number; stages: StageMark[];
  estimateSeconds: number | null; report: ConvertReport | null; stock: StockExportReport | null; loadBefore: number[]; loadAfter: number[];
}

function procKiB(pid: number, key: string): number {
  try {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** The stage a progress/log line starts, if any. */
function stageOf(line: string): string | null {
  if (/^pass 1|^\s+pass 1 /.test(line)) return 'pass 1';
  if (/search/.test(line) && !/^plan/.test(line)) return 'search';
  if (/^pass 2|^\s+pass 2 /.test(line)) return 'pass 2';
  if (/^writing|^saved/.test(line)) return 'writing';
  return null;
}

/** One `transmla convert … --json` child with stage-attributed RSS sampling. */
function convert(args: string[]): Promise<ConvertRun> {
  return new Promise((res) => {
    const loadBefore = load();
    const t0 = performance.now();
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'src', 'cli', 'main.ts'), 'convert', ...args, '--json'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    const stages: StageMark[] = [];
    let cur: StageMark = { stage: 'setup', seconds: 0, peakRssMiB: 0, maxSampledRssMiB: 0 };
    let tStage = t0, out = '', err = '', estimate: number | null = null, peak = 0;
    const sample = () => {
      const hwm = procKiB(child.pid!, 'VmHWM') / 1024, rss = procKiB(child.pid!, 'VmRSS') / 1024;
      if (hwm > 0) { peak = Math.max(peak, hwm); cur.peakRssMiB = r1(peak); }
      cur.maxSampledRssMiB = r1(Math.max(cur.maxSampledRssMiB, rss));
    };
    const timer = setInterval(sample, 100);
    const next = (stage: string) => {
      if (stage === cur.stage) return;
      sample();
      cur.seconds = r1((performance.now() - tStage) / 1e3);
      stages.push(cur);
      tStage = performance.now();
      cur = { stage, seconds: 0, peakRssMiB: r1(peak), maxSampledRssMiB: 0 };
    };
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr.on('data', (b: Buffer) => {
      const s = b.toString();
      err += s;
      for (const line of s.split(/[\r\n]+/)) {
        const e = /≈ ([\d.]+) (s|min|h) of GEMM work/.exec(line);
        if (e) estimate = Number(e[1]) * (e[2] === 'h' ? 3600 : e[2] === 'min' ? 60 : 1);
        const st = stageOf(line);
        if (st) next(st);
      }
    });
    child.on('close', (code, signal) => {
      clearInterval(timer);
      cur.seconds = r1((performance.now() - tStage) / 1e3);
      stages.push(cur);
      const wallSeconds = r1((performance.now() - t0) / 1e3);
      let report: ConvertReport | null = null, stock: StockExportReport | null = null;
      try {
        const j = code === 0 ? (JSON.parse(out) as { conversion: ConvertReport; stock: StockExportReport | null }) : null;
        report = j?.conversion ?? null;
        stock = j?.stock ?? null;
      } catch { report = null; }
      // A failure says how it ended: the exit code or signal, the last non-progress stderr line,
      // or, when the process succeeded, that its stdout was not the --json report.
      const lastLine = err.trim().split('\n').filter((l) => !/\d+%/.test(l)).pop();
      const error = code === 0 && report !== null ? undefined
        : code === 0 ? `exit 0 but stdout is not the --json report: ${JSON.stringify(out.slice(0, 200))}`
        : `${signal ? `killed by ${signal}` : `exit ${code}`}${lastLine ? `: ${lastLine}` : ''}`;
      const peakRssMiB = report ? r1(report.peakRssBytes / MiB) : r1(peak);
      res({ args, ok: code === 0 && report !== null, error, wallSeconds, peakRssMiB, stages, estimateSeconds: estimate, report, stock, loadBefore, loadAfter: load() });
    });
  });
}

function summary(r: ConvertRun) {
  const rep = r.report;
  const ev = rep?.evaluations?.[0], sev = r.stock?.evaluations?.[0];
  return {
    ok: r.ok, error: r.error, wallSeconds: r.wallSeconds, estimateSeconds: r.estimateSeconds, peakRssMiB: r.peakRssMiB, stages: r.stages,
    seconds: rep?.seconds, latent: rep ? { kvLoraRank: rep.parameters.kvLoraRank, ropeDim: rep.parameters.qkRopeHeadDim, freqFold: rep.parameters.freqFold } : null,
    eval: ev ? { text: ev.text, original: ev.original.ppl, partialRope: ev.partialRope?.ppl, mla: ev.mla.ppl, mlaKl: ev.mla.kl, mlaTop1: ev.mla.top1, stock: sev?.stock.ppl ?? null, stockVsExactKl: sev?.stock.kl ?? null } : null,
    load: { before: r.loadBefore, after: r.loadAfter },
  };
}

// --- forward: calibration throughput against sgemm peak ------------------------------------------

function bestOf(n: number, fn: () => void): number {
  let best = Infinity;
  for (let i = 0; i < n; i++) { const t = performance.now(); fn(); best = Math.min(best, (performance.now() - t) / 1e3); }
  return best;
}

async function forwardSection(work: string) {
  const rows = [];
  for (const key of ['qwen2.5-0.5b', 'llama-3.2-1b', 'llama-3.1-8b']) {
    const shape = SHAPES[key]!;
    const dir = await writeSyntheticModel(join(work, `fwd-${key}`), { ...shape, vocab: 32000 }, 1);
    const src = openSource(dir, 'transmla', false);
    const layer = src.layer(0);
    const samples = key === 'llama-3.1-8b' ? 4 : 8, T = 256;
    const ids = Array.from({ length: samples }, (_, s) => Int32Array.from({ length: T }, (_, t) => (s * 7919 + t * 104729) % 32000));
    const states = HiddenStates.fromEmbedding(src.args, src.embedding(), ids);
    const D = shape.hidden, I = shape.intermediate;
    const A = new Float32Array(1024 * D).fill(0.5), B = new Float32Array(I * D).fill(0.25), C = new Float32Array(1024 * I);
    const flops = layerFlopsPerToken(src.args, T) * samples * T;
    const loadBefore = load();
    let fwd = Infinity, peak = Infinity;
    for (let i = 0; i < 3; i++) {
      fwd = Math.min(fwd, bestOf(1, () => states.advance(layer)));
      peak = Math.min(peak, bestOf(1, () => kernels().matmul(A, B, 'f32', C, 1024, I, D, true)));
    }
    states.close();
    const peakRate = (2 * 1024 * I * D) / peak, fwdRate = flops / fwd;
    rows.push({ shape: shape.name, tokens: samples * T, forwardSeconds: fwd, forwardGflops: r1(fwdRate / 1e9), sgemmPeakGflops: r1(peakRate / 1e9), ratio: Number((fwdRate / peakRate).toFixed(3)), load: { before: loadBefore, after: load() } });
    log(`forward ${shape.name}: ${(fwdRate / 1e9).toFixed(1)} GFLOP/s vs sgemm peak ${(peakRate / 1e9).toFixed(1)} (${(100 * fwdRate / peakRate).toFixed(0)} %)`);
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

// --- sections that spawn conversions --------------------------------------------------------------

const calibOf = (name: string) => domainOf(name).calib;

async function kjvSection(work: string) {
  const m = join(ASSETS, 'models', 'kjv-gqa');
  const base = [m, '--kv-fraction', '0.3125', '--calib', calibOf('kjv-gqa')];
  const withEval = await convert([...base, '--no-save']);
  log(`kjv-gqa default with evaluation: ${withEval.wallSeconds} s (estimate ${withEval.estimateSeconds} s)`);
  const noEval = await convert([...base, '--no-eval', '--out', join(work, 'kjv-noeval'), '--overwrite']);
  log(`kjv-gqa default --no-eval: ${noEval.wallSeconds} s`);
  return { withEval: summary(withEval), noEval: summary(noEval) };
}

async function searchSection(work: string) {
  const rows = [];
  for (const name of MODELS) {
    const dir = join(ASSETS, 'models', name);
    if (!existsSync(dir)) continue;
    const folder = await hfFolderOf(dir, work);
    for (const search of ['proxy', 'perplexity']) {
      const r = await convert([folder, '--kv-fraction', '0.125', '--calib', calibOf(name), '--search', search, '--no-save']);
      rows.push({ model: name, search, ...summary(r) });
      log(`search ${name} ${search}: ${r.ok ? `d_R ${r.report!.parameters.qkRopeHeadDim} M ${r.report!.parameters.freqFold} stock ppl ${r.stock?.evaluations[0]?.stock.ppl.toFixed(2)} in ${r.wallSeconds} s` : r.error}`);
    }
  }
  return rows;
}

function validateJson(dir: string): Promise<{ engines: { engine: string; loads: boolean; correct: boolean | string; fastPath: boolean; reasons: string[] }[] } | null> {
  return new Promise((res) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'src', 'cli', 'main.ts'), 'validate', dir, '--json'], { cwd: REPO, stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    child.on('close', () => { try { res(JSON.parse(out)); } catch { res(null); } });
  });
}

async function validateSection(work: string) {
  const rows = [];
  for (const name of MODELS) {
    const dir = join(ASSETS, 'models', name);
    if (!existsSync(dir)) continue;
    const folder = await hfFolderOf(dir, work);
    const out = join(work, `validate-${name}`);
    const r = await convert([folder, '--kv-fraction', '0.3125', '--calib', calibOf(name), '--no-eval', '--out', out, '--overwrite']);
    const v = r.ok ? await validateJson(out) : null;
    rows.push({
      model: name, converted: r.ok, error: r.error,
      engines: v?.engines.map((e) => ({ engine: e.engine, loads: e.loads, correct: e.correct, fastPath: e.fastPath, reasons: e.reasons.filter((x) => !x.startsWith('note:')) })) ?? null,
    });
    log(`validate ${name}: ${v ? v.engines.map((e) => `${e.engine} ${e.loads ? 'loads' : 'no-load'}/${e.correct === true ? 'same' : String(e.correct)}`).join(', ') : r.error}`);
    rmSync(out, { recursive: true, force: true });
  }
  return rows;
}

async function syntheticSection(work: string, keys: string[]) {
  const rows = [];
  for (const key of keys) {
    const shape = SHAPES[key]!;
    const dir = await writeSyntheticModel(join(work, `syn-${key}`), shape);
    const r = await convert([dir, '--kv-fraction', '0.125', '--calib', calibOf('kjv-gqa'), '--out', join(work, `syn-${key}-out`), '--overwrite']);
    rows.push({ shape: shape.name, params: paramCount(shape), ...summary(r) });
    log(`synthetic ${shape.name}: ${r.ok ? `${r.wallSeconds} s, peak ${r.peakRssMiB} MiB` : r.error}`);
    rmSync(dir, { recursive: true, force: true });
    rmSync(join(work, `syn-${key}-out`), { recursive: true, force: true });
  }
  return rows;
}

async function eightBSection(work: string, layers: number, evaluate: boolean) {
  const shape: Shape = SHAPES['llama-3.1-8b']!;
  const runs = [];
  for (const n of [2, layers]) {
    const dir = await writeSyntheticModel(join(work, `syn8b-${n}`), shape, n);
    const r = await convert([dir, '--kv-fraction', '0.125', '--calib', calibOf('kjv-gqa'), ...(evaluate ? [] : ['--no-eval']), '--out', join(work, `syn8b-${n}-out`), '--overwrite']);
    runs.push({ layers: n, params: paramCount(shape, n), ...summary(r) });
    log(`8B shape, ${n} layers: ${r.ok ? `${r.wallSeconds} s, peak ${r.peakRssMiB} MiB` : r.error}`);
    rmSync(dir, { recursive: true, force: true });
    rmSync(join(work, `syn8b-${n}-out`), { recursive: true, force: true });
  }
  const [a, b] = runs as [typeof runs[0], typeof runs[0]];
  const perLayer = a.ok && b.ok ? (b.wallSeconds - a.wallSeconds) / (b.layers - a.layers) : null;
  const fixed = perLayer === null ? null : a.wallSeconds - perLayer * a.layers;
  return {
    runs, evaluate,
    byStage: a.ok && b.ok ? byStage(a, b, shape.layers) : null,
    extrapolation: perLayer === null ? null : {
      formula: 'wall(L) = fixed + L · perLayer, fitted on the two runs', perLayerSeconds: r1(perLayer), fixedSeconds: r1(fixed!),
      wallSeconds32: r1(fixed! + 32 * perLayer), peakRssMiB32: Math.max(a.peakRssMiB, b.peakRssMiB),
      note: 'peak RSS does not grow with layers when streaming (one layer of weights in memory); the larger of the two runs is quoted',
    },
  };
}

/**
 * Seconds at L layers, stage by stage, from runs at a < b layers: pass 1, pass 2 (conversion +
 * stock fit) and the evaluation as fixed + L·slope; the proxy search as b's seconds per scored
 * layer times the layers it scores at L; loading and saving as fixed + L·slope too.
 */
function byStage(a: ReturnType<typeof summary> & { layers: number }, b: ReturnType<typeof summary> & { layers: number }, L: number) {
  const sa = a.seconds!, sb = b.seconds!;
  const linear = (x: number, y: number) => { const slope = (y - x) / (b.layers - a.layers); return { slope: r1(slope), atL: r1(x + slope * (L - a.layers)) }; };
  const scored = (n: number) => proxyLayers(n).length;
  const stages = {
    pass1: linear(sa.pass1, sb.pass1),
    search: { perScoredLayer: r1(sb.freqFoldSearch / scored(b.layers)), scoredAtL: scored(L), atL: r1((sb.freqFoldSearch / scored(b.layers)) * scored(L)) },
    pass2: linear(sa.conversion, sb.conversion),
    evaluation: linear(sa.evaluation, sb.evaluation),
    loadAndSave: linear(sa.load + sa.save, sb.load + sb.save),
  };
  const total = Object.values(stages).reduce((t, s) => t + s.atL, 0);
  return { layers: L, stages, totalSeconds: r1(total), totalHours: Number((total / 3600).toFixed(2)) };
}

export async function run(argv: string[]): Promise<object> {
  const opt = (name: string, d: string) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1]! : d; };
  const sections = new Set(opt('--sections', 'forward,kjv,search,validate,synthetic,8b').split(','));
  const layers8b = Number(opt('--8b-layers', '4'));
  const work = mkdtempSync(join(tmpdir(), 'transmla-convert-scale-'));
  const result: Record<string, unknown> = {
    bench: 'convert-scale', date: new Date().toISOString(), machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memGiB: r1(totalmem() / 2 ** 30), kernels: kernels().backend },
    loadAtStart: load(),
  };
  try {
    if (sections.has('forward')) result.forward = await forwardSection(work);
    if (sections.has('kjv')) result.kjv = await kjvSection(work);
    if (sections.has('search')) result.search = await searchSection(work);
    if (sections.has('validate')) result.validate = await validateSection(work);
    if (sections.has('synthetic')) result.synthetic = await syntheticSection(work, opt('--synthetic', 'qwen2.5-0.5b,llama-3.2-1b').split(','));
    if (sections.has('8b')) result.llama8b = await eightBSection(work, layers8b, !argv.includes('--8b-no-eval'));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  result.loadAtEnd = load();
  return result;
}
