// One layer of the strict DeepSeek-V3 export (docs/methods.md#strict-export): the biases stock
// code cannot hold are folded where exact and refused otherwise; kv_a_layernorm (q_a_layernorm
// with q_lora_rank) is calibrated on the layer's latents and kv_b_proj (q_b_proj) refit by least
// squares, after a per-channel rescaling that steadies the latent's RMS (latent-norm.ts); q_pe/k_pe
// rows are permuted to interleaved pairs when the folder is rotate-half.
import { permuteRopeRows } from '../io/rope-rows.js';
import type { FloatDType } from '../kernels/types.js';
import { Linear } from '../models/linear.js';
import type { DecoderLayer } from '../models/decoder.js';
import { MlaAttention } from '../models/mla-attention.js';
import { widen } from '../models/weights.js';
import type { Tensor } from '../tensor.js';
import type { HiddenStates } from '../eval/hidden-states.js';
import { fitLatentNorm, fitResidual, LatentMomentStats, latentScale, LatentNormStats, refit, stabilizingScales } from './latent-norm.js';
import { tensorOf } from './mla-build.js';

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

export interface StockLayer {
  tensors: { name: string; data: Float64Array; shape: number[] }[];
  /** The layer as stock code runs it (weights rounded to the output dtype). */
  layer: DecoderLayer;
  kvResidual: number;
  qResidual: number | null;
  kvNormKept: boolean;
}

/**
 * Layer l of the exact folder in stock semantics, calibrated on `states` (this layer's inputs,
 * as the already-exported layers before it produce them).
 */
export function stockLayer(layer: DecoderLayer, l: number, states: HiddenStates, o: { stabilize: boolean; dtype: FloatDType; permute: boolean }): StockLayer {
  const a = layer.attn as MlaAttention, p = a.p, dtype = o.dtype, permute = o.permute, stabilize = o.stabilize;
  const H = p.nHeads, dn = p.qkNopeHeadDim, dR = p.qkRopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank, rq = p.qLoraRank;
  const qh = dn + dR, D = p.kvA.inFeatures;
  let kvA = f64(p.kvA.weight);
  if (permute) kvA = permuteRopeRows(kvA, { blocks: 1, stride: r + dR, offset: r, dim: dR }, 'interleaved');
  const kvA0 = new Linear(p.kvA.weight, null);
  const qRows = H * qh;
  let qW = f64(p.q ? p.q.weight : p.qB!.weight);
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
  return { tensors: ts, layer: { ...layer, attn }, kvResidual, qResidual, kvNormKept: !kvStats };
}
