// `npm run bench -- bias-fold [--massive 0,1,2,4,8,16,32] [--calib-samples 32] [--calib-seqlen 128]
//   [--eval-chunks 8] [--kjv-fraction 0.3125] [--skip-kjv]`
//
// The calibrated bias fold of the strict DeepSeek-V3 export (docs/methods.md#bias-fold), measured:
// 1. constants: for every model folder in ../shared/assets/models the engine reads, per layer
//    ε = E(1 − uᵀx)² over its calibration text — how well a linear function of the layer's normed
//    input reproduces a constant (what bounds every folded bias);
// 2. random Qwen2 models (q/k/v biases of amplitude 1/10/0.5 against O(1) projection outputs)
//    with a "massive activation" channel of growing size, converted with TransMLA and exported:
//    per-layer fold residuals and KL / perplexity / top-1 of the stock export against the exact
//    folder, folded vs the same export of the folder with its biases dropped;
// 3. kjv-gqa (real weights) given Qwen2.5-like q/k/v biases as a qwen2 model, converted at
//    --kjv-fraction and exported the same two ways, next to the unbiased kjv-gqa's export.
// Quality figures only (no timings); the load average is recorded all the same.
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/arch/load.js';
import { calibrationSamples, readDocuments } from '../src/convert/calibrate.js';
import { HiddenStates } from '../src/eval/hidden-states.js';
import { convertModel } from '../src/convert/transmla.js';
import { fidelity } from '../src/eval/fidelity.js';
import { tokenizeEnough } from '../src/eval/perplexity.js';
import { constantFit, constantResidual } from '../src/convert/bias-fold.js';
import { exportDeepseekV3 } from '../src/export/deepseek-v3.js';
import { openCheckpoint, writeCheckpoint } from '../src/io/checkpoint.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';
import { kernels } from '../src/kernels/index.js';
import type { StockExportReport } from '../src/schema/transmla-json.js';
import type { Tensor } from '../src/tensor.js';
import { mulberry32, randomLlama } from '../test/helpers/random-llama.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ASSETS = resolve(REPO, '..', 'shared', 'assets');
const TEXT = join(ASSETS, 'text');
const log = (s: string): void => { process.stderr.write(`bench bias-fold: ${s}\n`); };

interface Args { massive: number[]; calibSamples: number; calibSeqLen: number; evalChunks: number; kjvFraction: number; skipKjv: boolean }

function parse(argv: string[]): Args {
  const a: Args = { massive: [0, 1, 2, 4, 8, 16, 32], calibSamples: 32, calibSeqLen: 128, evalChunks: 8, kjvFraction: 0.3125, skipKjv: false };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${f} needs a value`); return v; };
    if (f === '--massive') a.massive = val().split(',').map(Number);
    else if (f === '--calib-samples') a.calibSamples = Number(val());
    else if (f === '--calib-seqlen') a.calibSeqLen = Number(val());
    else if (f === '--eval-chunks') a.evalChunks = Number(val());
    else if (f === '--kjv-fraction') a.kjvFraction = Number(val());
    else if (f === '--skip-kjv') a.skipKjv = true;
    else throw new Error(`bench bias-fold: unknown option ${f}`);
  }
  return a;
}

function texts(name: string): { calib: string; evalText: string } {
  if (name.startsWith('kjv')) return { calib: join(TEXT, 'kjv-old-testament-calib.txt'), evalText: join(TEXT, 'kjv-new-testament-eval.txt') };
  return { calib: join(TEXT, 'tinystories', 'tinystories_train_lowercased_sample.txt'), evalText: join(TEXT, 'tinystories', 'tinystories_val_sample.txt') };
}

/** Per layer ε of a model on its calibration text (the model's own layers produce the states). */
async function layerConstants(dir: string, calib: string, a: Args): Promise<number[]> {
  const { model, tokenizer } = loadModel(dir);
  const samples = await calibrationSamples(tokenizer!, readDocuments(calib), { samples: a.calibSamples, seqLen: a.calibSeqLen, seed: 42 });
  const states = HiddenStates.embed(model, samples);
  try {
    return model.layers.map((layer, l) => {
      const e = constantResidual(constantFit(states.gram(layer.inputNorm), model.config.hiddenSize));
      if (l + 1 < model.layers.length) states.advance(layer);
      return e;
    });
  } finally {
    states.close();
  }
}

/** A copy of an MLA folder without its bias tensors. */
async function withoutBiases(src: string, out: string): Promise<void> {
  mkdirSync(out, { recursive: true });
  const ck = openCheckpoint(src);
  try {
    await writeCheckpoint(out, ck.names().filter((n) => !n.endsWith('.bias')).map((n) => ({ name: n, tensor: ck.get(n) as Tensor })));
  } finally {
    ck.close();
  }
  for (const f of ['config.json', 'transmla.json']) writeFileSync(join(out, f), readFileSync(join(src, f)));
  writeHfFolderExtras(src, out);
}

interface Comparison { exactPpl: number; folded: object; dropped: object; foldErrors: (object | null)[]; constants: number[]; kvResiduals: number[] }

/** Exports `exact` with its biases folded and with them dropped; scores both against `exact`. */
async function foldVsDrop(exact: string, work: string, tag: string, calib: string, evalText: string, a: Args, ctx: number): Promise<Comparison> {
  const eo = { calibSamples: a.calibSamples, calibSeqLen: a.calibSeqLen, evalCtx: ctx, evalChunks: 1 };
  const folded = join(work, `${tag}-folded`), droppedExact = join(work, `${tag}-nobias-mla`), dropped = join(work, `${tag}-dropped`);
  const rep: StockExportReport = await exportDeepseekV3({ model: exact, out: folded, calib, ...eo, maxBiasResidual: Infinity });
  await withoutBiases(exact, droppedExact);
  await exportDeepseekV3({ model: droppedExact, out: dropped, calib, ...eo });
  const ref = loadModel(exact);
  const { ids, bos } = await tokenizeEnough(ref.tokenizer!, readFileSync(evalText, 'utf8'), a.evalChunks * ctx);
  const f = await fidelity(ref.model, [loadModel(folded).model, loadModel(dropped).model], ids, bos, { ctx, maxChunks: a.evalChunks });
  return {
    exactPpl: f.reference.ppl, folded: f.models[0]!, dropped: f.models[1]!,
    foldErrors: rep.layers.map((l) => l.biasFold ?? null), constants: rep.layers.map((l) => l.biasFold?.constant ?? NaN), kvResiduals: rep.layers.map((l) => l.kvResidual),
  };
}

/** kjv-gqa as a qwen2 folder with Qwen2.5-like biases: amplitudes × each projection's output RMS scale. */
async function biasedKjv(src: string, out: string, seed: number): Promise<void> {
  mkdirSync(out, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(out, 'config.json'), JSON.stringify({ ...cfg, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', attention_bias: true }));
  writeHfFolderExtras(src, out);
  const ck = openCheckpoint(src);
  const rnd = mulberry32(seed);
  const tensors: { name: string; tensor: Tensor }[] = [];
  try {
    for (const n of ck.names()) {
      const t = ck.get(n) as Tensor;
      tensors.push({ name: n, tensor: t });
      const m = /^(model\.layers\.\d+\.self_attn\.)([qkv])_proj\.weight$/.exec(n);
      if (!m) continue;
      const [rows, cols] = t.shape as [number, number];
      const w = new Float32Array(rows * cols);
      if (t.dtype === 'f32') w.set(t.data as Float32Array); else kernels().toF32(t.data as Uint16Array, t.dtype, w);
      // A row's output on a normed input of unit RMS has RMS ‖w_row‖.
      let ss = 0;
      for (const v of w) ss += v * v;
      const scale = Math.sqrt(ss / rows);
      const amp = { q: 1, k: 10, v: 0.5 }[m[2] as 'q' | 'k' | 'v'];
      tensors.push({ name: `${m[1]}${m[2]}_proj.bias`, tensor: { dtype: 'f32', shape: [rows], data: Float32Array.from({ length: rows }, () => amp * scale * (2 * rnd() - 1)) } });
    }
    await writeCheckpoint(out, tensors);
  } finally {
    ck.close();
  }
}

export async function run(argv: string[]): Promise<object> {
  const a = parse(argv);
  const load0 = loadavg();
  const work = mkdtempSync(join(tmpdir(), 'transmla-bench-bias-fold-'));
  const result: Record<string, unknown> = { args: a, loadavgStart: load0 };
  try {
    // 1. ε of the real models.
    const constants: Record<string, number[] | string> = {};
    const modelsDir = join(ASSETS, 'models');
    for (const name of readdirSync(modelsDir).sort()) {
      const dir = join(modelsDir, name);
      if (!existsSync(join(dir, 'config.json'))) continue;
      try {
        constants[name] = await layerConstants(dir, texts(name).calib, a);
        log(`${name}: ε per layer ${(constants[name] as number[]).map((e) => e.toExponential(2)).join(', ')}`);
      } catch (e) {
        constants[name] = `not measured: ${(e as Error).message.split('\n')[0]}`;
      }
    }
    result.constants = constants;

    // 2. Random Qwen2 models, massive channel sweep.
    const vocabDir = join(ASSETS, 'models', 'TinyStories-656K');
    const { calib: tsCalib, evalText: tsEval } = texts('TinyStories-656K');
    const sweep: Record<string, unknown>[] = [];
    for (const massive of a.massive) {
      const m = randomLlama({ hidden: 128, heads: 8, kvHeads: 2, inter: 256, vocab: 2048, layers: 4, modelType: 'qwen2', seed: 27, biasScale: { q: 1, k: 10, v: 0.5 }, massive });
      const src = join(work, `rand-${massive}-src`);
      mkdirSync(src);
      await writeCheckpoint(src, [...m.src.map].map(([name, tensor]) => ({ name, tensor })));
      writeFileSync(join(src, 'config.json'), JSON.stringify(m.json));
      writeHfFolderExtras(vocabDir, src);
      const exact = join(work, `rand-${massive}-mla`);
      await convertModel({ variant: 'exact', model: src, out: exact, kvFraction: 0.3125, ropeDim: 4, freqFold: 4, calib: tsCalib, calibSamples: a.calibSamples, calibSeqLen: a.calibSeqLen, evalCtx: 128, evalChunks: 1 });
      const c = await foldVsDrop(exact, work, `rand-${massive}`, tsCalib, tsEval, a, 128);
      sweep.push({ massive, ...c });
      log(`random Qwen2, massive ${massive}: ${JSON.stringify(c)}`);
    }
    result.randomQwen2 = sweep;

    // 3. kjv-gqa with Qwen2.5-like biases, and without.
    if (!a.skipKjv) {
      const kjv = join(ASSETS, 'models', 'kjv-gqa');
      const { calib, evalText } = texts('kjv-gqa');
      const conv = { variant: 'exact' as const, kvFraction: a.kjvFraction, ropeDim: 16, freqFold: 4, calib, calibSamples: a.calibSamples, calibSeqLen: a.calibSeqLen, evalCtx: 256, evalChunks: 1 };
      const biased = join(work, 'kjv-biased-src');
      await biasedKjv(kjv, biased, 5);
      const exactB = join(work, 'kjv-biased-mla');
      await convertModel({ model: biased, out: exactB, ...conv });
      const cb = await foldVsDrop(exactB, work, 'kjv-biased', calib, evalText, a, 256);
      log(`kjv-gqa + Qwen2.5-like biases: ${JSON.stringify(cb)}`);
      const exactU = join(work, 'kjv-plain-mla');
      await convertModel({ model: kjv, out: exactU, ...conv });
      const plain = join(work, 'kjv-plain-ds3');
      const rep = await exportDeepseekV3({ model: exactU, out: plain, calib, calibSamples: a.calibSamples, calibSeqLen: a.calibSeqLen, evalCtx: 256, evalChunks: 1 });
      const ref = loadModel(exactU);
      const { ids, bos } = await tokenizeEnough(ref.tokenizer!, readFileSync(evalText, 'utf8'), a.evalChunks * 256);
      const f = await fidelity(ref.model, [loadModel(plain).model], ids, bos, { ctx: 256, maxChunks: a.evalChunks });
      result.kjvGqa = { fraction: a.kjvFraction, biased: cb, unbiased: { exactPpl: f.reference.ppl, stock: f.models[0], kvResiduals: rep.layers.map((l) => l.kvResidual) } };
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  result.loadavgEnd = loadavg();
  return result;
}
