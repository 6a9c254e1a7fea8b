// Strict DeepSeek-V3 export (`transmla export <mla-folder> --target deepseek-v3`, and
// `transmla convert … --target deepseek-v3`): the exact MLA folder written by `convert` (no
// kv_a_layernorm) becomes a folder stock DeepSeek-V3 code loads with no custom keys:
//
// - kv_a_layernorm (and q_a_layernorm with q_lora_rank) added and calibrated, and kv_b_proj
//   (q_b_proj) refit by least squares over calibration latents to absorb what the per-token
//   normalisation changes, after a per-channel rescaling of the latent that steadies its RMS
//   (latent-norm.ts); layer inputs come from the already-exported layers (sequential calibration);
// - q_pe/k_pe rows permuted to interleaved pairs when the source folder is rotate-half
//   (rope_interleave: false), so stock interleaved RoPE reproduces it exactly;
// - biases: stock DeepSeek-V3 (attention_bias false) has none. What is exact is folded: the part
//   of the latent bias that only feeds the NoPE keys adds q·W_UK·b to every key's score alike and
//   drops out of the softmax. Everything else is refused with the reason (a query bias varies
//   with the key; a RoPE-key bias rotates with position; a value bias becomes the constant
//   output W_o·W_UV·b, for which stock DeepSeek has no slot);
// - config.json with DeepseekV3Config keys only, every MLP dense (first_k_dense_replace =
//   num_hidden_layers), lm_head.weight always written, rope_scaling carried as is (absent, linear
//   or llama3: the stock rotary embedding computes the same frequencies over qk_rope_head_dim);
// - transmla.json (variant "deepseek-v3") and README.md with the perplexity of the exact model
//   and of the stock-semantics model side by side.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { withAtomicDir } from '../io/atomic-dir.js';
import { openCheckpoint, writeCheckpoint } from '../io/checkpoint.js';
import { writeHfFolderExtras, type LlamaConfig } from '../io/hf-config.js';
import { ropeScalingJson, STOCK_VARIANT, type MlaFields } from '../io/mla-config.js';
import type { NamedTensor } from '../io/safetensors.js';
import type { FloatDType } from '../kernels/types.js';
import { fidelity, type ModelScore } from '../eval/fidelity.js';
import { readEvalText } from '../eval/perplexity.js';
import { Linear } from '../models/linear.js';
import { LlamaModel, type DecoderLayer } from '../models/llama.js';
import { loadModel } from '../models/load.js';
import { MlaAttention } from '../models/mla-attention.js';
import { halfToInterleavedPerm } from '../models/rope.js';
import { widen } from '../models/weights.js';
import type { Tensor } from '../tensor.js';
import { calibrationSamples, HiddenStates, readDocuments } from './calibrate.js';
import { HELD_OUT_FRACTION, sha256File, tokenizeEnough, type CalibEvalOptions } from './convert.js';
import { fitLatentNorm, fitResidual, LatentMomentStats, latentScale, LatentNormStats, refit, stabilizingScales } from './latent-norm.js';
import { tensorOf } from './mla-build.js';

/** The keys DeepseekV3Config (transformers) defines, plus PretrainedConfig's identity/dtype keys. */
export const STOCK_DEEPSEEK_V3_KEYS: readonly string[] = [
  'architectures', 'model_type', 'torch_dtype',
  'vocab_size', 'hidden_size', 'intermediate_size', 'moe_intermediate_size', 'num_hidden_layers',
  'num_attention_heads', 'num_key_value_heads', 'n_shared_experts', 'n_routed_experts', 'routed_scaling_factor',
  'kv_lora_rank', 'q_lora_rank', 'qk_rope_head_dim', 'v_head_dim', 'qk_nope_head_dim', 'n_group', 'topk_group',
  'num_experts_per_tok', 'first_k_dense_replace', 'norm_topk_prob', 'hidden_act', 'max_position_embeddings',
  'initializer_range', 'rms_norm_eps', 'use_cache', 'pad_token_id', 'bos_token_id', 'eos_token_id',
  'pretraining_tp', 'tie_word_embeddings', 'rope_theta', 'rope_scaling', 'rope_interleave',
  'attention_bias', 'attention_dropout',
];

const TORCH_DTYPE: Record<FloatDType, string> = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' };

/** A stock DeepSeek-V3 config.json for an all-dense MLA model. */
export function stockDeepseekV3Config(c: LlamaConfig, m: MlaFields, dtype: FloatDType): Record<string, unknown> {
  const out: Record<string, unknown> = {
    architectures: ['DeepseekV3ForCausalLM'],
    model_type: 'deepseek_v3',
    torch_dtype: TORCH_DTYPE[dtype],
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    // MoE fields: no layer is MoE (first_k_dense_replace = num_hidden_layers); the values are
    // the smallest valid ones, for loaders that read them unconditionally.
    moe_intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numHeads,
    n_shared_experts: 1,
    n_routed_experts: 1,
    routed_scaling_factor: 1.0,
    kv_lora_rank: m.kvLoraRank,
    q_lora_rank: m.qLoraRank,
    qk_rope_head_dim: m.qkRopeHeadDim,
    v_head_dim: m.vHeadDim,
    qk_nope_head_dim: m.qkNopeHeadDim,
    n_group: 1,
    topk_group: 1,
    num_experts_per_tok: 1,
    first_k_dense_replace: c.numLayers,
    norm_topk_prob: true,
    hidden_act: 'silu',
    max_position_embeddings: c.maxPositionEmbeddings,
    initializer_range: 0.02,
    rms_norm_eps: c.rmsNormEps,
    use_cache: true,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    tie_word_embeddings: c.tieWordEmbeddings,
    rope_theta: c.ropeTheta,
    rope_scaling: ropeScalingJson(c.ropeScaling),
    rope_interleave: true,
    attention_bias: false,
    attention_dropout: 0.0,
  };
  const pad = c.raw.pad_token_id;
  if (typeof pad === 'number') out.pad_token_id = pad;
  return out;
}

export interface StockExportOptions extends CalibEvalOptions {
  /** The exact MLA folder (written by `transmla convert`). */
  model: string;
  out: string;
  overwrite?: boolean;
  /** Calibration text; default: the one recorded in the folder's transmla.json. */
  calib?: string;
  /** Per-channel latent scales that steady the latent's per-token RMS before the fit (default true). */
  stabilize?: boolean;
}

export interface StockEvalReport {
  text: string;
  sha256: string;
  ctx: number;
  chunks: number;
  predictions: number;
  convention: string;
  /** The exact MLA model (the input folder) is the reference of KL/top-1. */
  exact: ModelScore;
  stock: ModelScore;
  /** 100·(ppl_stock / ppl_exact − 1). */
  pplGapPercent: number;
}

export interface StockExportReport {
  tool: 'transmla';
  variant: typeof STOCK_VARIANT;
  method: string;
  created: string;
  /** path: the original (GQA/MHA) model recorded by the conversion, if known; exactFolder: the exported folder. */
  source: { path: string | null; exactFolder: string };
  output: string;
  /** The source folder's transmla.json (its conversion report), when it has one. */
  conversion: Record<string, unknown> | null;
  parameters: {
    kvLoraRank: number; qLoraRank: number | null; qkRopeHeadDim: number; qkNopeHeadDim: number; vHeadDim: number;
    dtype: FloatDType; ropePermuted: boolean; ropeScaling: string; latentNormFit: string; softmaxScale: string;
  };
  /** Per layer: relative least-squares output error of the refit kv_b_proj (and q_b_proj), and the latent bias folded. */
  layers: { kvResidual: number; qResidual: number | null; kvNormKept: boolean; latentBiasFolded: boolean }[];
  calibration: { file: string; sha256: string; samples: number; seqLen: number; tokens: number; seed: number; order: 'sequential' };
  evaluations: StockEvalReport[];
  notes: string[];
  seconds: { calibration: number; evaluation: number; save: number };
}

function f64(t: Tensor): Float64Array {
  return Float64Array.from(widen(t));
}

function maxAbs(x: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]!));
  return m;
}

/**
 * Checks the biases of one exact MLA layer against stock DeepSeek-V3 (attention_bias false) and
 * returns whether a latent bias is folded (dropped exactly). Throws with the reason otherwise.
 */
export function foldAttentionBiases(a: MlaAttention, layer: number): boolean {
  const p = a.p, r = p.kvLoraRank, dR = p.qkRopeHeadDim, H = p.nHeads, dn = p.qkNopeHeadDim, dv = p.vHeadDim;
  const where = `layer ${layer}`;
  const nz = (b: Float32Array | null | undefined): boolean => !!b && maxAbs(b) > 0;
  const why = 'stock DeepSeek-V3 (attention_bias false; llama.cpp\'s deepseek2 has no attention biases at all)';
  if (nz(p.q?.bias) || nz(p.qB?.bias) || nz(p.qA?.bias)) {
    throw new Error(`${where}: the query projection has a bias, which ${why} cannot hold: a query bias b adds b·k_j to the score of key j, which differs from key to key, so it does not drop out of the softmax and cannot be folded. Refusing rather than dropping it`);
  }
  if (nz(p.o.bias)) throw new Error(`${where}: o_proj has a bias, which ${why} cannot hold. Refusing rather than dropping it`);
  const b = p.kvA.bias;
  if (!nz(b)) return false;
  if (p.kvANorm) {
    throw new Error(`${where}: kv_a_proj_with_mqa has a bias and the folder already has kv_a_layernorm: a bias inside the norm cannot be separated from the latent. Refusing rather than dropping it`);
  }
  if (maxAbs(b!.subarray(r, r + dR)) > 0) {
    throw new Error(`${where}: kv_a_proj_with_mqa has a bias on its RoPE key rows, which ${why} cannot hold: it is rotated with the position, so its score contribution varies per key. Refusing rather than dropping it`);
  }
  // The latent bias b feeds k_nope^h (+W_UK^h·b: the same for every key, drops out of the
  // softmax exactly) and v^h (+W_UV^h·b: a constant output W_o·W_UV·b). Only the first folds.
  const B = widen(p.kvB.weight);
  let vMax = 0, wMax = 0;
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < dv; i++) {
      const row = (h * (dn + dv) + dn + i) * r;
      let s = 0;
      for (let j = 0; j < r; j++) { s += B[row + j]! * b![j]!; wMax = Math.max(wMax, Math.abs(B[row + j]!)); }
      vMax = Math.max(vMax, Math.abs(s));
    }
  }
  if (vMax > 1e-6 * Math.max(1, wMax * maxAbs(b!.subarray(0, r)))) {
    throw new Error(`${where}: the latent bias of kv_a_proj_with_mqa reaches the values (max |W_UV·b| = ${vMax.toExponential(3)}; e.g. a Qwen2 value bias). Since the softmax weights sum to 1 it would become a constant output vector W_o·W_UV·b, and ${why} has no o_proj bias to hold it. Refusing rather than dropping it (the key part alone would fold exactly: it drops out of the softmax)`);
  }
  return true;
}

/** Rows [off, off+dR) of each of `blocks` blocks of `stride` rows, permuted half → interleaved. */
function permuteRows(W: Float64Array, cols: number, blocks: number, stride: number, off: number, dR: number): void {
  const perm = halfToInterleavedPerm(dR);
  for (let b = 0; b < blocks; b++) {
    const base = (b * stride + off) * cols;
    const old = W.slice(base, base + dR * cols);
    for (let j = 0; j < dR; j++) W.set(old.subarray(perm[j]! * cols, (perm[j]! + 1) * cols), base + j * cols);
  }
}

interface StockLayer {
  tensors: { name: string; data: Float64Array; shape: number[] }[];
  attn: MlaAttention;
}

function readJson(path: string): Record<string, unknown> | null {
  if (!existsSync(path)) return null;
  try {
    const j = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    return typeof j === 'object' && j !== null && !Array.isArray(j) ? (j as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** Why an MHA2MLA folder cannot be exported, and the conversion that gives a stock folder (its source, through TransMLA). */
function mha2mlaHasNoStockForm(folder: string, report: Record<string, unknown> | null): string {
  const source = (report?.source as { path?: unknown } | undefined)?.path;
  const fraction = (report?.parameters as { kvFraction?: unknown } | undefined)?.kvFraction;
  const calib = (report?.calibration as { file?: unknown } | undefined)?.file;
  return `${folder} is an MHA2MLA folder (RoPE keys per KV head); stock DeepSeek-V3 code has one RoPE key shared by all heads, so it has no stock form. ` +
    `Convert the source with TransMLA (the default method) instead: transmla convert ${typeof source === 'string' ? source : '<source model>'} --target deepseek-v3 ` +
    `${typeof fraction === 'number' ? `--kv-fraction ${Number(fraction.toFixed(6))}` : '--kv-fraction F'} --calib ${typeof calib === 'string' ? calib : 'FILE'} --out DIR`;
}

export async function exportDeepseekV3(o: StockExportOptions): Promise<StockExportReport> {
  const log = o.log ?? (() => {});
  const loaded = loadModel(o.model);
  if (loaded.mha2mla) throw new Error(mha2mlaHasNoStockForm(o.model, readJson(join(o.model, 'transmla.json'))));
  if (!loaded.mla) throw new Error(`${o.model} is not an MLA (DeepSeek-V3) folder; convert it first (\`transmla convert … --target deepseek-v3\`)`);
  if (loaded.mla.semantics !== 'exact') throw new Error(`${o.model} already runs in stock DeepSeek-V3 semantics (no transmla.json marking it as the exact variant); there is nothing to export`);
  const tok = loaded.tokenizer;
  if (!tok) throw new Error(`${o.model} has no tokenizer; calibration needs one`);
  const exact = loaded.model, cfg = loaded.config, mla = loaded.mla;
  const dtype = exact.weightDtype;
  const conversion = readJson(join(o.model, 'transmla.json'));
  const calibFile = o.calib ?? (() => {
    const f = (conversion?.calibration as Record<string, unknown> | undefined)?.file;
    if (typeof f === 'string' && existsSync(f)) return f;
    throw new Error(`give --calib FILE (${o.model}/transmla.json records no calibration file that exists here)`);
  })();
  const H = cfg.numHeads, dn = mla.qkNopeHeadDim, dR = mla.qkRopeHeadDim, dv = mla.vHeadDim, r = mla.kvLoraRank, rq = mla.qLoraRank;
  const qh = dn + dR, D = cfg.hiddenSize;
  const permute = !mla.ropeInterleave;
  const notes: string[] = [];
  const stabilize = o.stabilize ?? true;

  // Biases first: refuse before any work.
  const attns = exact.layers.map((l, i) => {
    if (!(l.attn instanceof MlaAttention)) throw new Error(`layer ${i} is not MLA attention`);
    return l.attn;
  });
  const folded = attns.map((a, l) => foldAttentionBiases(a, l));
  if (folded.some((x) => x)) notes.push('A latent bias of kv_a_proj_with_mqa that reaches only the NoPE keys was dropped: it adds the same amount to every key\'s score and drops out of the softmax (exact).');
  if (permute) notes.push('q_pe/k_pe rows were permuted from rotate-half to interleaved pairs (exact: same scores).');
  if (cfg.ropeScaling) notes.push(`rope_scaling ${cfg.ropeScaling.type} carried as is: the stock rotary embedding applies it over qk_rope_head_dim, as this engine does (exact). llama.cpp GGUF export refuses llama3 scaling.`);

  // --- Calibration (sequential: each layer sees the inputs of the exported layers before it).
  const t0 = performance.now();
  const docs = readDocuments(calibFile);
  const nHeld = docs.length >= 2 ? Math.max(1, Math.round(docs.length * HELD_OUT_FRACTION)) : 0;
  const calibDocs = docs.slice(0, docs.length - nHeld), heldDocs = docs.slice(docs.length - nHeld);
  const calib = { samples: o.calibSamples ?? 128, seqLen: o.calibSeqLen ?? 256, seed: o.seed ?? 42 };
  const samples = calibrationSamples(tok, calibDocs, calib);
  log(`calibration: ${calib.samples} × ${calib.seqLen} tokens from ${calibFile} (seed ${calib.seed}, ${nHeld} documents held out)`);
  const stockLayers: DecoderLayer[] = [];
  const built: StockLayer[] = [];
  const stats: StockExportReport['layers'] = [];
  const states = HiddenStates.embed(exact, samples);
  try {
    for (let l = 0; l < exact.layers.length; l++) {
      const layer = exact.layers[l]!, a = attns[l]!, p = a.p;
      const kvA = f64(p.kvA.weight);
      if (permute) permuteRows(kvA, D, 1, r + dR, r, dR);
      const kvA0 = new Linear(p.kvA.weight, null);
      let qW: Float64Array, qRows = H * qh, qCols: number;
      if (p.q) { qW = f64(p.q.weight); qCols = D; } else { qW = f64(p.qB!.weight); qCols = rq!; }
      if (permute) permuteRows(qW, qCols, H, qh, dn, dR);
      // Pass 1: per-channel scales that make each latent's per-token RMS as steady as possible
      // (a free reparametrisation); pass 2: the norm statistics of the rescaled latent. ε = 0
      // here: the latent is rescaled to mean square 1 below, where ε no longer matters.
      const kvFit = !p.kvANorm, qFit = !!p.qA && !p.qANorm;
      const kvBuf = new Float32Array(calib.seqLen * (r + dR));
      const qBuf = qFit ? new Float32Array(calib.seqLen * rq!) : null;
      const visit = (fn: (kv: Float32Array, q: Float32Array | null, T: number) => void): void => {
        states.visitNormed(layer.inputNorm, (xn, T) => {
          if (kvFit) kvA0.forward(xn, T, kvBuf);
          if (qFit) p.qA!.forward(xn, T, qBuf!);
          fn(kvBuf, qBuf, T);
        });
      };
      let kvS: Float64Array | null = null, qS: Float64Array | null = null;
      if (stabilize && (kvFit || qFit)) {
        const km = kvFit ? new LatentMomentStats(r) : null, qm = qFit ? new LatentMomentStats(rq!) : null;
        visit((kv, q, T) => { km?.add(kv, T, r + dR); qm?.add(q!, T, rq!); });
        kvS = km && stabilizingScales(km);
        qS = qm && stabilizingScales(qm);
      }
      const kvStats = kvFit ? new LatentNormStats(r, 0) : null;
      const qStats = qFit ? new LatentNormStats(rq!, 0) : null;
      if (kvFit || qFit) visit((kv, q, T) => { kvStats?.add(kv, T, r + dR, 0, kvS); qStats?.add(q!, T, rq!, 0, qS); });
      /** W·diag(1/s): the exact up-projection seen from the rescaled latent. */
      const unscale = (W: Float64Array, rows: number, cols: number, sc: Float64Array | null): Float64Array => {
        if (!sc) return W;
        const out = new Float64Array(W);
        for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[i * cols + j]! /= sc[j]!;
        return out;
      };
      let kvB = f64(p.kvB.weight), kvNorm: Float64Array = p.kvANorm ? Float64Array.from(p.kvANorm) : new Float64Array(0);
      let kvResidual = 0, qResidual: number | null = null;
      if (kvStats) {
        const alpha = latentScale(kvStats);
        for (let i = 0; i < r; i++) for (let j = 0; j < D; j++) kvA[i * D + j]! *= alpha * (kvS ? kvS[i]! : 1);
        const fit = fitLatentNorm(kvStats, alpha);
        const Wt = unscale(kvB, H * (dn + dv), r, kvS);
        kvResidual = fitResidual(Wt, H * (dn + dv), kvStats);
        kvB = refit(Wt, H * (dn + dv), fit);
        kvNorm = fit.weight;
      }
      let qNorm: Float64Array | null = p.qANorm ? Float64Array.from(p.qANorm) : null;
      let qA: Float64Array | null = p.qA ? f64(p.qA.weight) : null;
      if (qStats) {
        const alpha = latentScale(qStats);
        for (let i = 0; i < rq!; i++) for (let j = 0; j < D; j++) qA![i * D + j]! *= alpha * (qS ? qS[i]! : 1);
        const fit = fitLatentNorm(qStats, alpha);
        const Wt = unscale(qW, qRows, rq!, qS);
        qResidual = fitResidual(Wt, qRows, qStats);
        qW = refit(Wt, qRows, fit);
        qNorm = fit.weight;
      }
      const pre = `model.layers.${l}.self_attn`;
      const ts: StockLayer['tensors'] = [];
      if (p.q) ts.push({ name: `${pre}.q_proj.weight`, data: qW, shape: [qRows, D] });
      else {
        ts.push({ name: `${pre}.q_a_proj.weight`, data: qA!, shape: [rq!, D] });
        ts.push({ name: `${pre}.q_a_layernorm.weight`, data: qNorm!, shape: [rq!] });
        ts.push({ name: `${pre}.q_b_proj.weight`, data: qW, shape: [qRows, rq!] });
      }
      ts.push({ name: `${pre}.kv_a_proj_with_mqa.weight`, data: kvA, shape: [r + dR, D] });
      ts.push({ name: `${pre}.kv_a_layernorm.weight`, data: kvNorm, shape: [r] });
      ts.push({ name: `${pre}.kv_b_proj.weight`, data: kvB, shape: [H * (dn + dv), r] });
      ts.push({ name: `${pre}.o_proj.weight`, data: f64(p.o.weight), shape: [D, H * dv] });
      // The engine runs exactly what is saved (rounded to the output dtype).
      const t = new Map(ts.map((x) => [x.name.slice(pre.length + 1), tensorOf(x.data, x.shape, dtype)]));
      const lin = (n: string): Linear | null => (t.has(`${n}.weight`) ? new Linear(t.get(`${n}.weight`)!, null) : null);
      const attn = new MlaAttention({
        ...p,
        q: lin('q_proj'), qA: lin('q_a_proj'), qB: lin('q_b_proj'),
        qANorm: t.has('q_a_layernorm.weight') ? widen(t.get('q_a_layernorm.weight')!) : null,
        kvA: lin('kv_a_proj_with_mqa')!, kvANorm: widen(t.get('kv_a_layernorm.weight')!), kvB: lin('kv_b_proj')!, o: lin('o_proj')!,
        ropeLayout: 'interleaved',
      });
      const stockLayer: DecoderLayer = { ...layer, attn };
      stockLayers.push(stockLayer);
      built.push({ tensors: ts, attn });
      stats.push({ kvResidual, qResidual, kvNormKept: !kvStats, latentBiasFolded: folded[l]! });
      if (l + 1 < exact.layers.length) states.advance(stockLayer);
      log(`  layer ${l + 1}/${exact.layers.length}: kv_b_proj refit residual ${(100 * kvResidual).toFixed(3)} %${qResidual === null ? '' : `, q_b_proj ${(100 * qResidual).toFixed(3)} %`}`);
    }
  } finally {
    states.close();
  }
  const stock = new LlamaModel(cfg, exact.embed, stockLayers, exact.norm, exact.head);
  const calSecs = (performance.now() - t0) / 1000;

  // --- Evaluation: exact (reference) vs stock semantics on the same tokens.
  const t1 = performance.now();
  const evalCtx = o.evalCtx ?? Math.min(2048, cfg.maxPositionEmbeddings);
  const texts = (o.evalTexts ?? []).map((t) => ({ name: resolve(t.path), sha: sha256File(t.path), text: readEvalText(t.path, t.mode).text }));
  if (texts.length === 0) {
    if (heldDocs.length === 0) throw new Error('no --eval-text and no held-out calibration documents to evaluate on');
    const text = heldDocs.join('\n\n');
    texts.push({ name: `${resolve(calibFile)} (last ${nHeld} documents, held out)`, sha: createHash('sha256').update(text).digest('hex'), text });
  }
  const evaluations: StockEvalReport[] = [];
  for (const t of texts) {
    const { ids, bos } = await tokenizeEnough(tok, t.text, o.evalChunks === undefined ? undefined : o.evalChunks * evalCtx);
    const f = await fidelity(exact, [stock], ids, bos, { ctx: Math.min(evalCtx, ids.length), maxChunks: o.evalChunks });
    const s = f.models[0]!;
    const gap = 100 * (s.ppl / f.reference.ppl - 1);
    evaluations.push({ text: t.name, sha256: t.sha, ctx: f.ctx, chunks: f.chunks, predictions: f.predictions, convention: f.convention, exact: f.reference, stock: s, pplGapPercent: gap });
    log(`${t.name}: ${f.chunks} chunks × ${f.ctx} tokens`);
    log(`  exact MLA (no kv_a_layernorm)   ppl ${f.reference.ppl.toFixed(4)}`);
    log(`  stock DeepSeek-V3 semantics     ppl ${s.ppl.toFixed(4)}  (${gap >= 0 ? '+' : ''}${gap.toFixed(2)} %)  KL ${s.kl.toFixed(5)}  top-1 ${(100 * s.top1).toFixed(2)} %`);
  }
  const evalSecs = (performance.now() - t1) / 1000;

  const report: StockExportReport = {
    tool: 'transmla',
    variant: STOCK_VARIANT,
    method: 'strict DeepSeek-V3 export: calibrated kv_a_layernorm (q_a_layernorm) with least-squares refit of kv_b_proj (q_b_proj)',
    created: new Date().toISOString(),
    source: {
      path: typeof (conversion?.source as { path?: unknown } | undefined)?.path === 'string' ? (conversion!.source as { path: string }).path : null,
      exactFolder: resolve(o.model),
    },
    output: resolve(o.out),
    conversion,
    parameters: {
      kvLoraRank: r, qLoraRank: rq, qkRopeHeadDim: dR, qkNopeHeadDim: dn, vHeadDim: dv, dtype,
      ropePermuted: permute,
      ropeScaling: cfg.ropeScaling ? JSON.stringify(ropeScalingJson(cfg.ropeScaling)) : 'none',
      latentNormFit: `${stabilize ? 'latent channels rescaled by s (s² by least squares so that Σ s_i²c_i² is as constant as possible per token), then ' : ''}latent rows of kv_a_proj_with_mqa (q_a_proj) scaled by α so the calibration latent has mean square 1; g_i = α·RMS(c_i)/RMS(n_i), n = c/rms(c); W' = W·diag(1/s)·S_cn·S_nn⁻¹·diag(1/g) (float64 Grams over calibration latents)`,
      softmaxScale: `(qk_nope_head_dim + qk_rope_head_dim)^−½ = ${(1 / Math.sqrt(qh)).toPrecision(6)}`,
    },
    layers: stats,
    calibration: { file: resolve(calibFile), sha256: sha256File(calibFile), samples: calib.samples, seqLen: calib.seqLen, tokens: calib.samples * calib.seqLen, seed: calib.seed, order: 'sequential' },
    evaluations,
    notes,
    seconds: { calibration: calSecs, evaluation: evalSecs, save: 0 },
  };

  const t2 = performance.now();
  const config = stockDeepseekV3Config(cfg, mla, dtype);
  await withAtomicDir(o.out, { overwrite: o.overwrite ?? false, source: [o.model, calibFile] }, async (dir) => {
    await writeCheckpoint(dir, stockTensors(o.model, built, dtype, cfg.tieWordEmbeddings));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    writeHfFolderExtras(o.model, dir);
    report.seconds.save = (performance.now() - t2) / 1000;
    writeFileSync(join(dir, 'transmla.json'), JSON.stringify(report, null, 2) + '\n');
    writeFileSync(join(dir, 'README.md'), modelCard(report, config));
    if (report.conversion) {
      // Loaded lazily: the report pulls in the charting library.
      const { writeReport } = await import('../report/report.js');
      try {
        await writeReport(dir);
      } catch (e) {
        log(`warning: report.html not written: ${(e as Error).message}`);
      }
    }
  });
  log(`saved ${resolve(o.out)}`);
  return report;
}

/** The exact folder's tensors with each layer's attention replaced, lm_head.weight always present. */
function* stockTensors(srcDir: string, layers: readonly StockLayer[], dtype: FloatDType, tied: boolean): Generator<NamedTensor> {
  const ck = openCheckpoint(srcDir);
  try {
    const done = new Set<number>();
    let embed: Tensor | null = null, head: Tensor | null = null;
    for (const name of ck.names()) {
      if (/\.rotary_emb\.inv_freq$/.test(name)) continue;
      if (name === 'lm_head.weight') { head = ck.get(name); continue; }
      const m = /^model\.layers\.(\d+)\.self_attn\./.exec(name);
      if (!m) {
        const t = ck.get(name);
        if (name === 'model.embed_tokens.weight') embed = t;
        yield { name, tensor: t };
        continue;
      }
      const l = Number(m[1]);
      if (done.has(l)) continue;
      done.add(l);
      const L = layers[l];
      if (!L) throw new Error(`no exported attention for layer ${l}`);
      for (const t of L.tensors) yield { name: t.name, tensor: tensorOf(t.data, t.shape, dtype) };
    }
    if (done.size !== layers.length) throw new Error(`the checkpoint has attention tensors for ${done.size} layers, the export ${layers.length}`);
    // A tied model may store the shared matrix as lm_head.weight only: stock code needs the embedding.
    if (!embed && head && tied) yield { name: 'model.embed_tokens.weight', tensor: head };
    const lm = head ?? (tied ? embed : null);
    if (!lm) throw new Error('the checkpoint has neither lm_head.weight nor a tied embedding');
    yield { name: 'lm_head.weight', tensor: lm };
  } finally {
    ck.close();
  }
}

function modelCard(rep: StockExportReport, config: Record<string, unknown>): string {
  const conv = rep.conversion as { parameters?: Record<string, unknown> } | null;
  const base = basename(rep.source.path ?? rep.source.exactFolder);
  const p = rep.parameters;
  const rows = rep.evaluations.map((e) =>
    `| ${e.text} | ${e.ctx} × ${e.chunks} | ${e.exact.ppl.toFixed(4)} | ${e.stock.ppl.toFixed(4)} | ${e.pplGapPercent >= 0 ? '+' : ''}${e.pplGapPercent.toFixed(2)} % | ${e.stock.kl.toFixed(5)} | ${(100 * e.stock.top1).toFixed(2)} % |`);
  const cp = conv?.parameters ?? {};
  const convLines = Object.keys(cp).length
    ? ['', '## Conversion (TransMLA, training-free)', '', ...['kvFraction', 'freqFold', 'collapse', 'balanceKvRatio', 'calibOrder', 'pcaDamp'].filter((k) => k in cp).map((k) => `- ${k}: ${JSON.stringify(cp[k])}`)]
    : [];
  return [
    '---',
    `base_model: ${JSON.stringify(base)}`,
    'library_name: transformers',
    'pipeline_tag: text-generation',
    'tags:',
    '  - transmla',
    '  - mla',
    '  - deepseek_v3',
    '  - kv-cache-compression',
    '---',
    '',
    `# ${base} as DeepSeek-V3 Multi-head Latent Attention`,
    '',
    `Converted with transmla from \`${base}\` (GQA/MHA) to MLA and exported in the stock DeepSeek-V3 layout: ` +
      `\`DeepseekV3ForCausalLM\`, no custom code, every MLP dense (first_k_dense_replace = ${String(config.num_hidden_layers)}).`,
    '',
    '## Shape',
    '',
    `- kv_lora_rank ${p.kvLoraRank}, qk_rope_head_dim ${p.qkRopeHeadDim}, qk_nope_head_dim ${p.qkNopeHeadDim}, v_head_dim ${p.vHeadDim}, q_lora_rank ${p.qLoraRank ?? 'none'}`,
    `- KV cache per token per layer: ${p.kvLoraRank + p.qkRopeHeadDim} values (latent + shared RoPE key)`,
    `- weights ${p.dtype}; RoPE interleaved (rope_interleave true); rope_scaling ${p.ropeScaling}`,
    `- softmax scale ${p.softmaxScale}`,
    ...convLines,
    '',
    '## Export to stock semantics',
    '',
    `The exact conversion has no kv_a_layernorm; stock DeepSeek-V3 RMS-normalises the latent. The norm weight is calibrated and kv_b_proj refit by least squares on ${rep.calibration.tokens} calibration tokens (${rep.calibration.file}, seed ${rep.calibration.seed}): ${p.latentNormFit}.`,
    ...rep.notes.map((n) => `- ${n}`),
    '',
    '## Measured (transmla engine, f32 compute)',
    '',
    '| text | ctx × chunks | ppl exact MLA | ppl stock DeepSeek-V3 | gap | KL(exact ‖ stock) | top-1 agreement |',
    '|---|---|---|---|---|---|---|',
    ...rows,
    '',
    `Convention: ${rep.evaluations[0]?.convention ?? ''}`,
    '',
    `Per-layer relative least-squares error of the refit kv_b_proj: ${rep.layers.map((l) => (100 * l.kvResidual).toFixed(3) + ' %').join(', ')}.`,
    '',
  ].join('\n');
}
