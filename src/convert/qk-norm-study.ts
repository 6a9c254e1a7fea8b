// The Qwen3 key-norm study (docs/methods.md#qk-norm): every way of handling the per-head q/k
// RMSNorm in a TransMLA conversion, side by side on the same tokens. It runs the default
// convert's two sweeps (faithful order, shapes given, not searched: convert/transmla.ts) and
// pushes six models through the evaluation chunks layer by layer:
//   original · partial RoPE (exact structure) · MLA (exact structure: per-head q norm, κ cached)
//   · the same with RoRoPE/BKV-PCA on the plain (not normaliser-weighted) statistics · naive MLA (the same weights, κ ≡ 1) · linear (both normalisers replaced by calibrated
//   constants: what stock DeepSeek-V3 can hold) · stock (the strict fit of the linear form:
//   calibrated kv_a_layernorm + kv_b_proj refit, what `convert` writes).
// `keyScale` multiplies every k_proj by a constant first: Qwen3 computes exactly the same
// function (RMSNorm is scale-invariant; use a power of two to stay exact in bf16), but the naive
// form's scores are multiplied by it — the experiment that shows why the naive path breaks.
import { readFileSync } from 'node:fs';
import type { ModelArgs } from '../models/model-args.js';
import { GqaAttention } from '../models/attention.js';
import type { DecoderLayer } from '../models/decoder.js';
import { Linear } from '../models/linear.js';
import { widen } from '../models/weights.js';
import { HiddenStates } from '../eval/hidden-states.js';
import { tokenizeEnough } from '../eval/perplexity.js';
import { evalChunks, StageSweep } from '../eval/stage-sweep.js';
import type { ModelScore } from '../schema/transmla-json.js';
import { mlaDecoderLayer, mlaRopeTable } from './mla-build.js';
import { calibrationSet, calibrationTokens, openSource } from './pipeline.js';
import { naiveQkNorm, qkNormConstants, stockStart } from './qk-norm.js';
import { keyBlock } from './shape-search.js';
import { stockLayer } from './stock-layer.js';
import { originalKvCov, transmlaLayer } from './transmla-layer.js';

export interface QkStudyOptions {
  model: string;
  calib: string;
  calibSamples: number;
  calibSeqLen: number;
  evalText: string;
  evalCtx: number;
  evalChunks: number;
  kvLoraRank: number;
  ropeDim: number;
  freqFold: number;
  /** Every k_proj multiplied by this (default 1). */
  keyScale?: number;
  log?: (line: string) => void;
}

export const QK_STAGES = [
  'original', 'partial RoPE (exact structure)', 'MLA (exact structure)', 'MLA (exact structure, unweighted statistics)',
  'naive MLA (κ ≡ 1)', 'linear (calibrated constants)', 'stock DeepSeek-V3',
] as const;

export interface QkStudyLayer {
  /** Spread (std/mean) of ρ per query head and per KV head; E[ρ_k] per KV head. */
  qRhoCv: number[];
  kRhoCv: number[];
  kRhoMean: number[];
  kvResidual: number;
}

export interface QkStudyResult {
  stages: { name: string; score: ModelScore }[];
  /** The stock model against the exact-structure MLA (its KL/top-1 with MLA as reference). */
  stockVsExact: ModelScore & { pplGapPercent: number };
  layers: QkStudyLayer[];
  predictions: number;
  /** Cached values per token per layer: the source (2·G·d), the stock MLA (r + d_R), the exact structure (r + d_R + G). */
  cacheValues: { source: number; stock: number; exactStructure: number };
}

function scaledKeys(layer: DecoderLayer, s: number): DecoderLayer {
  if (s === 1) return layer;
  const a = layer.attn as GqaAttention;
  const w = Float32Array.from(widen(a.k.weight), (x) => x * s);
  const k = new Linear({ dtype: 'f32', shape: a.k.weight.shape, data: w }, a.k.bias ? Float32Array.from(a.k.bias, (x) => x * s) : null);
  return { ...layer, attn: new GqaAttention({ ...a, k, q: a.q, v: a.v, o: a.o, qkNorm: a.qkNorm }) };
}

export async function qkNormStudy(o: QkStudyOptions): Promise<QkStudyResult> {
  const log = o.log ?? (() => {});
  const src = openSource(o.model, 'transmla', false);
  const toClose: { close(): void }[] = [];
  try {
    const cfg: ModelArgs = src.args, n = cfg.numLayers, G = cfg.numKvHeads, d = cfg.headDim, dtype = src.dtype;
    const c = calibrationSet(o.calib, { calibSamples: o.calibSamples, calibSeqLen: o.calibSeqLen });
    const samples = await calibrationTokens(src.tokenizer, c);
    const { ids, bos } = await tokenizeEnough(src.tokenizer, readFileSync(o.evalText, 'utf8'), o.evalChunks * o.evalCtx);
    const data = evalChunks(ids, bos, Math.min(o.evalCtx, ids.length), o.evalChunks);
    const layerOf = (l: number): DecoderLayer => scaledKeys(src.layer(l), o.keyScale ?? 1);

    const covs: Float64Array[] = [], covsU: Float64Array[] = [];
    const s1 = HiddenStates.fromEmbedding(cfg, src.embedding(), samples);
    toClose.push(s1);
    for (let l = 0; l < n; l++) {
      const layer = layerOf(l);
      covs.push(originalKvCov(cfg, l, layer, s1, `study pass 1, layer ${l + 1}`));
      covsU.push(originalKvCov(cfg, l, layer, s1, `study pass 1, layer ${l + 1}`, false));
      if (l + 1 < n) s1.advance(layer);
    }

    const shape = { ropeDim: o.ropeDim, freqFold: o.freqFold, kvLoraRank: o.kvLoraRank, qLoraRank: null, balance: 1 };
    const rope = mlaRopeTable({ config: cfg, layers: [] }, o.ropeDim);
    const stats = HiddenStates.fromEmbedding(cfg, src.embedding(), samples);
    const stock = HiddenStates.fromEmbedding(cfg, src.embedding(), samples);
    const sweep = StageSweep.open(cfg, src.embedding(), data, QK_STAGES.length);
    toClose.push(stats, stock, sweep);
    const layers: QkStudyLayer[] = [];
    for (let l = 0; l < n; l++) {
      const layer = layerOf(l);
      const step = transmlaLayer(cfg, l, layer, stats, keyBlock(covs[l]!, G * d), shape, `study pass 2, layer ${l + 1}`);
      const view = { config: cfg, layers: Object.assign([], { [l]: layer }) };
      const partial = mlaDecoderLayer(view, l, step.partial, rope, { dtype });
      const mla = mlaDecoderLayer(view, l, step.weights, rope, { dtype });
      const stepU = transmlaLayer(cfg, l, layer, stats, keyBlock(covsU[l]!, G * d), { ...shape, qkWeighted: false }, `study pass 2, layer ${l + 1}`);
      const mlaU = mlaDecoderLayer(view, l, stepU.weights, rope, { dtype });
      const naive = mlaDecoderLayer(view, l, naiveQkNorm(step.weights), rope, { dtype });
      const lin = stockStart(view, l, step.weights, mla, layer, stock, rope, dtype).layer;
      const st = stockLayer(lin, l, stock, { stabilize: true, dtype, permute: false, fold: null });
      const k = qkNormConstants(stats, layer);
      layers.push({ qRhoCv: Array.from(k.qCv), kRhoCv: Array.from(k.kCv), kRhoMean: Array.from(k.kMean), kvResidual: st.kvResidual });
      sweep.advance([layer, partial, mla, mlaU, naive, lin, st.layer]);
      if (l + 1 < n) { stats.advance(partial); stock.advance(st.layer); }
      log(`  layer ${l + 1}/${n}: E[ρ_k] ${layers[l]!.kRhoMean.map((x) => x.toFixed(2)).join('/')}, spread of ρ_k ${layers[l]!.kRhoCv.map((x) => (100 * x).toFixed(1)).join('/')} %`);
    }
    const [f, g] = await sweep.finish(Array(QK_STAGES.length).fill(src.finals()), [{ reference: 0, models: [1, 2, 3, 4, 5, 6] }, { reference: 2, models: [6] }]);
    const s = g!.models[0]!;
    return {
      stages: QK_STAGES.map((name, i) => ({ name, score: i === 0 ? f!.reference : f!.models[i - 1]! })),
      stockVsExact: { ...s, pplGapPercent: 100 * (s.ppl / g!.reference.ppl - 1) },
      layers,
      predictions: f!.predictions,
      cacheValues: { source: 2 * G * d, stock: o.kvLoraRank + o.ropeDim, exactStructure: o.kvLoraRank + o.ropeDim + G },
    };
  } finally {
    for (const x of toClose) x.close();
    src.close();
  }
}
