// One layer of the strict DeepSeek-V3 export (docs/methods.md#strict-export): the biases stock
// code cannot hold come folded into the weights (stock-bias.ts); kv_a_layernorm (q_a_layernorm
// with q_lora_rank) is calibrated on the layer's latents and kv_b_proj (q_b_proj) refit by least
// squares, after a per-channel rescaling that steadies the latent's RMS (latent-norm.ts); q_pe/k_pe
// rows are permuted to interleaved pairs when the folder is rotate-half.
import { permuteRopeRows } from '../io/rope-rows.js';
import type { FloatDType, WeightDType } from '../kernels/types.js';
import { Linear } from '../models/linear.js';
import type { DecoderLayer } from '../models/decoder.js';
import { MlaAttention } from '../models/mla-attention.js';
import { widen } from '../models/weights.js';
import type { Tensor } from '../tensor.js';
import type { HiddenStates } from '../eval/hidden-states.js';
import { fitLatentNorm, fitResidual, LatentMomentStats, latentScale, LatentNormStats, refit, stabilizingScales } from './latent-norm.js';
import { tensorOf } from './mla-build.js';
import type { FoldedWeights } from './stock-bias.js';

function f64(t: Tensor<WeightDType>): Float64Array {
  return Float64Array.from(widen(t));
}

export interface StockLayer {
  tensors: { name: string; data: Float64Array; shape: number[] }[];
  /** The layer as stock code runs it (weights rounded to the output dtype). */
  layer: DecoderLayer;
  kvResidual: number;
  qResidual: number | null;
  kvNormKept: boolean;
}

/** An f32 linear layer (no bias) over float64 weights [rows × cols]. */
function linearOf(W: Float64Array, rows: number, cols: number): Linear {
  return new Linear({ dtype: 'f32', shape: [rows, cols], data: Float32Array.from(W) }, null);
}

/**
 * Layer l of the exact folder in stock semantics, calibrated on `states` (this layer's inputs,
 * as the already-exported layers before it produce them). `fold`: the layer's weights with its
 * biases folded in (null: the layer's own weights, whose biases drop out exactly or are absent).
 */
export function stockLayer(layer: DecoderLayer, l: number, states: HiddenStates, o: { stabilize: boolean; dtype: FloatDType; permute: boolean; fold?: FoldedWeights | null }): StockLayer {
  const a = layer.attn as MlaAttention, p = a.p, dtype = o.dtype, permute = o.permute, stabilize = o.stabilize, fold = o.fold ?? null;
  const H = p.nHeads, dn = p.qkNopeHeadDim, dR = p.qkRopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank, rq = p.qLoraRank;
  const qh = dn + dR, D = p.kvA.inFeatures;
  let kvA = fold ? fold.kvA : f64(p.kvA.weight);
  // The latents the norm is calibrated on are the folded ones (what stock code computes).
  const kvA0 = fold ? linearOf(fold.kvA, r + dR, D) : new Linear(p.kvA.weight, null);
  if (permute) kvA = permuteRopeRows(kvA, { blocks: 1, stride: r + dR, offset: r, dim: dR }, 'interleaved');
  const qRows = H * qh;
  const qA0 = fold?.qA ? linearOf(fold.qA, rq!, D) : p.qA;
  let qW = fold?.q ?? f64(p.q ? p.q.weight : p.qB!.weight);
  if (permute) qW = permuteRopeRows(qW, { blocks: H, stride: qh, offset: dn, dim: dR }, 'interleaved');
  // Pass 1: per-channel scales that make each latent's per-token RMS as steady as possible
  // (a free reparametrisation); pass 2: the norm statistics of the rescaled latent. ε = 0
  // here: the latent is rescaled to mean square 1 below, where ε no longer matters.
  const kvFit = !p.kvANorm, qFit = !!p.qA && !p.qANorm;
  const kvBuf = new Float32Array(states.seqLen * (r + dR));
  const qBuf = qFit ? new Float32Array(states.seqLen * rq!) : null;
  const visit = (fn: (kv: Float32Array, q: Float32Array | null, T: number) => void): void => {
    states.visitNormed(layer.inputNorm, (xn, T) => {
      if (kvFit) kvA0.forward(xn, T, kvBuf);
      if (qFit) qA0!.forward(xn, T, qBuf!);
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
  let qA: Float64Array | null = fold?.qA ?? (p.qA ? f64(p.qA.weight) : null);
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
  return { tensors: ts, layer: { ...layer, attn }, kvResidual, qResidual, kvNormKept: !kvStats };
}
