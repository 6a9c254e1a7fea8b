// `npm run bench -- memory [--models kjv-mha] [--scales 4,8] [--samples 16] [--seqlen 128] [--modes stream,full]`
//
// Peak memory of a conversion, measured in a child process (VmHWM from /proc/self/status, which
// starts afresh at exec) for the largest real model and for synthetic models of the same family
// several times larger (random weights, written to a temp folder). Two modes:
// - stream: `convert --no-eval` (convertStreaming): one layer in memory at a time;
// - full: convertModel with a minimal evaluation (1 chunk): the same streaming sweeps plus the
//   stage evaluation (eval/stage-sweep.ts), whose states also wait on disk between layers.
// Each run reports per-layer weight bytes, the largest tensor, calibration statistic bytes, the
// peak RSS after each stage, and checks the stream peak against
//   setup + 8·(one layer's weights) + 2·(largest tensor) + one layer's statistics
// (setup: the peak once tokenizer and calibration samples are loaded, before any weight; the
// baseline child only imports the converter). The JSON goes to bench/results/.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ASSETS = resolve(REPO, '..', 'shared', 'assets');
const CALIB = join(ASSETS, 'text', 'kjv-old-testament-calib.txt');
const MiB = 2 ** 20;

interface ChildJob { mode: 'stream' | 'full' | 'baseline'; model: string; out: string; samples: number; seqLen: number; ropeDim: number; kvFraction: number }
interface Mark { stage: string; peakRssBytes: number; rssBytes: number }

function procStatus(): { hwm: number; rss: number } {
  const s = readFileSync('/proc/self/status', 'utf8');
  const kb = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? 0) * 1024;
  return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
}

async function child(job: ChildJob): Promise<void> {
  const { convertModel } = await import('../src/convert/transmla.js');
  const { convertStreaming } = await import('../src/convert/transmla.js');
  await import('../src/report/report.js'); // loaded by every conversion that writes a folder
  const marks: Mark[] = [];
  const mark = (stage: string): void => {
    const p = procStatus();
    marks.push({ stage, peakRssBytes: p.hwm, rssBytes: p.rss });
  };
  mark('start (modules loaded)');
  if (job.mode !== 'baseline') {
    const opts = {
      model: job.model, out: job.out, kvFraction: job.kvFraction, ropeDim: job.ropeDim, freqFold: 2,
      calib: CALIB, calibSamples: job.samples, calibSeqLen: job.seqLen, seed: 42, evalCtx: job.seqLen, evalChunks: 1,
      log: (line: string) => {
        if (/^calibration:/.test(line)) mark('loaded + calibration samples');
        else if (/pass 1 \(original model\) layer (\d+)\/\1$/.test(line)) mark('pass 1 done');
        else if (/pass [12] layer (\d+)\/\1:/.test(line)) mark('conversion done');
        else if (/^KV cache per token/.test(line)) mark('evaluation done');
        else if (/^wrote model/.test(line)) mark('weights written');
      },
    };
    if (job.mode === 'stream') await convertStreaming(opts);
    else await convertModel(opts);
    mark('end (folder written)');
  }
  process.stdout.write(`RESULT ${JSON.stringify(marks)}\n`);
}

function runChild(job: ChildJob): Mark[] {
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', JSON.stringify(job)], { cwd: REPO, encoding: 'utf8', maxBuffer: 64 * MiB });
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  if (r.status !== 0 || !line) throw new Error(`child ${job.mode} ${job.model} failed (${r.status}):\n${r.stderr}`);
  return JSON.parse(line.slice(7)) as Mark[];
}

interface Shape { hidden: number; heads: number; kvHeads: number; headDim: number; inter: number; layers: number; vocab: number; bpe: number; tied: boolean }

function shapeOf(dir: string): Shape {
  const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, number | boolean | string>;
  const heads = Number(c.num_attention_heads);
  return {
    hidden: Number(c.hidden_size), heads, kvHeads: Number(c.num_key_value_heads ?? heads),
    headDim: Number(c.head_dim ?? Number(c.hidden_size) / heads), inter: Number(c.intermediate_size), layers: Number(c.num_hidden_layers),
    vocab: Number(c.vocab_size), bpe: c.torch_dtype === 'bfloat16' || c.torch_dtype === 'float16' ? 2 : 4, tied: c.tie_word_embeddings === true,
  };
}

function sizes(s: Shape): { layerBytes: number; embeddingBytes: number; modelBytes: number; gramBytes: number; kvCovBytes: number; kvCovAllLayersBytes: number; params: number } {
  const D = s.hidden, hd = s.headDim;
  const layerParams = D * s.heads * hd * 2 + D * s.kvHeads * hd * 2 + 3 * D * s.inter + 2 * D;
  const embParams = s.vocab * D;
  const params = s.layers * layerParams + embParams * (s.tied ? 1 : 2) + D;
  const kv = 2 * s.kvHeads * hd;
  return {
    layerBytes: layerParams * s.bpe, embeddingBytes: embParams * s.bpe, modelBytes: params * s.bpe, params,
    gramBytes: (D + 1) ** 2 * 8, kvCovBytes: kv * kv * 8, kvCovAllLayersBytes: s.layers * kv * kv * 8,
  };
}

/** mulberry32 → roughly normal (sum of 4 uniforms), deterministic. */
function gaussian(seed: number): () => number {
  let a = seed >>> 0;
  const u = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => (u() + u() + u() + u() - 2) * Math.sqrt(3);
}

/** A random llama of the reference's family `scale`× its parameters (wider and deeper), with its tokenizer. */
async function syntheticModel(ref: string, scale: number, dir: string): Promise<string> {
  const { writeCheckpoint } = await import('../src/io/checkpoint.js');
  const r = shapeOf(ref);
  const k = scale >= 4 ? 2 : 1;
  const D = r.hidden * k, H = r.heads * k, I = r.inter * k;
  const target = scale * sizes(r).params;
  const perLayer = sizes({ ...r, hidden: D, heads: H, kvHeads: r.kvHeads * k, inter: I, layers: 1, vocab: 0 }).params;
  const L = Math.max(1, Math.round((target - r.vocab * D) / perLayer));
  const cfg = JSON.parse(readFileSync(join(ref, 'config.json'), 'utf8')) as Record<string, unknown>;
  Object.assign(cfg, { hidden_size: D, num_attention_heads: H, num_key_value_heads: r.kvHeads * k, intermediate_size: I, num_hidden_layers: L, torch_dtype: 'float32' });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg, null, 2));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json']) {
    try { copyFileSync(join(ref, f), join(dir, f)); } catch { /* optional */ }
  }
  const rnd = gaussian(1234 + scale);
  const mat = (rows: number, cols: number, std: number) => {
    const f = new Float32Array(rows * cols);
    for (let i = 0; i < f.length; i++) f[i] = rnd() * std;
    return { dtype: 'f32' as const, shape: [rows, cols], data: f };
  };
  const ones = (n: number) => ({ dtype: 'f32' as const, shape: [n], data: new Float32Array(n).fill(1) });
  const G = r.kvHeads * k, d = r.headDim, std = 1 / Math.sqrt(D);
  function* tensors() {
    yield { name: 'model.embed_tokens.weight', tensor: mat(r.vocab, D, 1) };
    for (let l = 0; l < L; l++) {
      const p = `model.layers.${l}`;
      yield { name: `${p}.input_layernorm.weight`, tensor: ones(D) };
      yield { name: `${p}.post_attention_layernorm.weight`, tensor: ones(D) };
      yield { name: `${p}.self_attn.q_proj.weight`, tensor: mat(H * d, D, std) };
      yield { name: `${p}.self_attn.k_proj.weight`, tensor: mat(G * d, D, std) };
      yield { name: `${p}.self_attn.v_proj.weight`, tensor: mat(G * d, D, std) };
      yield { name: `${p}.self_attn.o_proj.weight`, tensor: mat(D, H * d, std / Math.sqrt(2 * L)) };
      yield { name: `${p}.mlp.gate_proj.weight`, tensor: mat(I, D, std) };
      yield { name: `${p}.mlp.up_proj.weight`, tensor: mat(I, D, std) };
      yield { name: `${p}.mlp.down_proj.weight`, tensor: mat(D, I, 1 / Math.sqrt(I) / Math.sqrt(2 * L)) };
    }
    yield { name: 'model.norm.weight', tensor: ones(D) };
  }
  await writeCheckpoint(dir, tensors());
  return dir;
}

function opt(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
}

export async function run(args: string[]): Promise<object> {
  const models = opt(args, 'models', 'kjv-mha').split(',');
  const scales = opt(args, 'scales', '4,8').split(',').filter((x) => x !== '').map(Number);
  const modes = opt(args, 'modes', 'stream,full').split(',') as ('stream' | 'full')[];
  const samples = Number(opt(args, 'samples', '16')), seqLen = Number(opt(args, 'seqlen', '128'));
  const work = mkdtempSync(join(tmpdir(), 'transmla-bench-memory-'));
  const log = (s: string): void => { process.stderr.write(`${s}\n`); };
  try {
    const baseline = runChild({ mode: 'baseline', model: '', out: '', samples, seqLen, ropeDim: 0, kvFraction: 0 })[0]!.peakRssBytes;
    log(`baseline (node + tsx + converter modules): ${(baseline / MiB).toFixed(1)} MiB`);
    const subjects: { name: string; dir: string }[] = [];
    for (const m of models) {
      const dir = join(ASSETS, 'models', m);
      subjects.push({ name: m, dir });
      for (const s of scales) {
        log(`writing synthetic ${m} ×${s}…`);
        subjects.push({ name: `synthetic ${m} ×${s}`, dir: await syntheticModel(dir, s, join(work, `${m}-x${s}`)) });
      }
    }
    const results: { model: string; mode: string; modelBytes: number; layerWeightBytes: number; peakRssBytes: number }[] = [];
    for (const subj of subjects) {
      const shape = shapeOf(subj.dir);
      const sz = sizes(shape);
      // One layer's statistics are in memory (pass-1 [K;V] covariances wait on disk), in both modes.
      const statsBytes = sz.gramBytes + sz.kvCovBytes + seqLen * shape.hidden * 4;
      for (const mode of modes) {
        const out = join(work, `out-${results.length}`);
        const t0 = performance.now();
        const marks = runChild({ mode, model: subj.dir, out, samples, seqLen, ropeDim: shape.headDim / 2, kvFraction: 0.5 });
        rmSync(out, { recursive: true, force: true });
        const peak = marks[marks.length - 1]!.peakRssBytes;
        // Baseline of the bound: the process with tokenizer, calibration text and samples loaded
        // (no weights yet in stream mode), which does not depend on the model's size.
        const setup = marks.find((m) => m.stage === 'loaded + calibration samples')!.peakRssBytes;
        const bound = setup + 8 * sz.layerBytes + 2 * sz.embeddingBytes + statsBytes;
        const row = {
          model: subj.name, mode, params: sz.params, modelBytes: sz.modelBytes, layers: shape.layers, hidden: shape.hidden,
          layerWeightBytes: sz.layerBytes, largestTensorBytes: sz.embeddingBytes,
          calibrationStatsBytes: { gram: sz.gramBytes, kvCovarianceOneLayer: sz.kvCovBytes, kvCovariancesAllLayers: sz.kvCovAllLayersBytes, hiddenStateSample: seqLen * shape.hidden * 4 },
          peakRssBytes: peak, peakAboveBaselineBytes: peak - baseline, stages: marks,
          bound: mode === 'stream' ? { formula: 'setup (tokenizer + calibration samples) + 8·layer weights + 2·largest tensor + one layer\'s statistics', bytes: bound, within: peak <= bound } : null,
          seconds: (performance.now() - t0) / 1000,
        };
        results.push(row);
        log(`${subj.name} [${mode}]: model ${(sz.modelBytes / MiB).toFixed(1)} MiB (${shape.layers} layers × ${(sz.layerBytes / MiB).toFixed(2)} MiB, embedding ${(sz.embeddingBytes / MiB).toFixed(1)} MiB), ` +
          `stats ${(statsBytes / MiB).toFixed(1)} MiB → peak RSS ${(peak / MiB).toFixed(1)} MiB (${((peak - baseline) / MiB).toFixed(1)} above baseline)` +
          (row.bound ? `; bound ${(bound / MiB).toFixed(1)} MiB: ${row.bound.within ? 'within' : 'EXCEEDED'}` : '') + `; ${row.seconds.toFixed(0)} s`);
        for (const m of marks) log(`    ${m.stage.padEnd(30)} peak ${(m.peakRssBytes / MiB).toFixed(1)} MiB, current ${(m.rssBytes / MiB).toFixed(1)} MiB`);
      }
    }
    // Growth of the peak with the number of layers at a fixed layer size (the synthetic models share
    // a width): bytes of peak RSS per extra byte of weights, fewest → most layers. Streaming should
    // stay near 0 in both modes: both stream.
    const growth = Object.fromEntries(modes.map((mode) => {
      const rows = results.filter((r) => r.mode === mode);
      const widths = [...new Set(rows.map((r) => r.layerWeightBytes))];
      const same = widths.map((w) => rows.filter((r) => r.layerWeightBytes === w).sort((a, b) => a.modelBytes - b.modelBytes)).sort((x, y) => y.length - x.length)[0]!;
      const a = same[0]!, b = same[same.length - 1]!;
      const slope = same.length > 1 ? (b.peakRssBytes - a.peakRssBytes) / (b.modelBytes - a.modelBytes) : null;
      return [mode, { from: a.model, to: b.model, peakRssPerWeightByte: slope, bounded: slope === null ? null : slope < 0.1 }];
    }));
    return {
      bench: 'memory', growth, created: new Date().toISOString(), cpus: cpus().length, calibration: { file: CALIB, samples, seqLen },
      measure: 'VmHWM of the converting child process (/proc/self/status)', baselinePeakRssBytes: baseline, results,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

const ci = process.argv.indexOf('--child');
if (ci >= 0) await child(JSON.parse(process.argv[ci + 1]!) as ChildJob);
