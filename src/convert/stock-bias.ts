// Which attention biases of an exact MLA layer the strict DeepSeek-V3 export can drop exactly,
// which it folds by calibration (bias-fold.ts), and the folded weights with their residuals
// (docs/methods.md#biases, #bias-fold). Stock DeepSeek-V3 (attention_bias false) has no biases.
import type { HiddenStates } from '../eval/hidden-states.js';
import type { DecoderLayer } from '../models/decoder.js';
import { Linear } from '../models/linear.js';
import { MlaAttention } from '../models/mla-attention.js';
import { widen } from '../models/weights.js';
import { Workspace } from '../models/workspace.js';
import type { BiasFoldReport } from '../schema/transmla-json.js';
import {
  addRankOne, balancedLatentBias, centredEnergy, constantFit, constantResidual, foldResidual, latentKeyResidual, leastSquares, outputEnergy, type ConstantFit,
} from './bias-fold.js';
import { gemmF64 } from '../linalg/dense.js';

/** What one layer's biases need. */
export interface BiasPlan {
  /** A latent bias that reaches only the NoPE keys: dropped, exactly (it drops out of the softmax). */
  latentKeyOnly: boolean;
  /** A query bias (q_proj, or q_a/q_b with q_lora): folded by calibration. */
  query: boolean;
  /** A bias on the RoPE-key rows of kv_a_proj_with_mqa: folded by calibration. */
  ropeKey: boolean;
  /** A constant output (latent bias reaching the values, or an o_proj bias): folded by calibration. */
  value: boolean;
}

/** Whether the plan needs the calibrated fold (any bias that does not drop out exactly). */
export function needsCalibration(p: BiasPlan): boolean {
  return p.query || p.ropeKey || p.value;
}

function maxAbs(x: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]!));
  return m;
}

const nz = (b: Float32Array | null | undefined): boolean => !!b && maxAbs(b) > 0;

/**
 * The biases of one exact MLA layer against stock DeepSeek-V3. Throws only where no fold exists:
 * a bias feeding a latent that already has its RMSNorm (the bias cannot be separated from it).
 */
export function foldAttentionBiases(a: MlaAttention, layer: number): BiasPlan {
  const p = a.p, r = p.kvLoraRank, dR = p.qkRopeHeadDim, H = p.nHeads, dn = p.qkNopeHeadDim, dv = p.vHeadDim;
  const where = `layer ${layer}`;
  const qBias = nz(p.q?.bias) || nz(p.qB?.bias) || nz(p.qA?.bias);
  if (qBias && p.qANorm) {
    throw new Error(`${where}: the query projection has a bias and the folder already has q_a_layernorm: a bias inside the norm cannot be separated from the query latent. Refusing rather than dropping it`);
  }
  const b = p.kvA.bias;
  let latentKeyOnly = false, ropeKey = false, valueFromLatent = false;
  if (nz(b)) {
    if (p.kvANorm) {
      throw new Error(`${where}: kv_a_proj_with_mqa has a bias and the folder already has kv_a_layernorm: a bias inside the norm cannot be separated from the latent. Refusing rather than dropping it`);
    }
    ropeKey = maxAbs(b!.subarray(r, r + dR)) > 0;
    // The latent bias β feeds k_nope^h (+W_UK^h·β: the same for every key, drops out of the
    // softmax exactly) and v^h (+W_UV^h·β: a constant output). Only the second needs a fold.
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
    const latent = maxAbs(b!.subarray(0, r)) > 0;
    valueFromLatent = latent && vMax > 1e-6 * Math.max(1, wMax * maxAbs(b!.subarray(0, r)));
    latentKeyOnly = latent && !valueFromLatent;
  }
  return { latentKeyOnly, query: qBias, ropeKey, value: valueFromLatent || nz(p.o.bias) };
}

function f64(l: Linear): Float64Array {
  return Float64Array.from(widen(l.weight));
}

function f64Bias(l: Linear | null, n: number): Float64Array {
  return l?.bias ? Float64Array.from(l.bias) : new Float64Array(n);
}

/** The layer's weights with every calibrated bias folded in (same layout as the exact folder). */
export interface FoldedWeights {
  /** q_proj [H·(d_n+d_R) × D] (no q_lora), else null. */
  q: Float64Array | null;
  /** q_a_proj [r_q × D] (q_lora), else null. */
  qA: Float64Array | null;
  /** kv_a_proj_with_mqa [(r + d_R) × D]. */
  kvA: Float64Array;
  report: BiasFoldReport;
}

/**
 * Folds the biases `plan` marks into the weights of layer `a`, given the constant fit of its
 * calibration inputs; `lambda` weighs the NoPE-key error against the value error when a constant
 * output is realised through the latent (balancedLatentBias). A latent bias reaching only the
 * NoPE keys is dropped (exact), as without calibration. report.attention is left at 0: the
 * measured error is foldLayerBiases' business.
 */
export function calibratedFold(a: MlaAttention, plan: BiasPlan, f: ConstantFit, lambda = 0): FoldedWeights {
  const p = a.p, D = f.D, H = p.nHeads, dn = p.qkNopeHeadDim, dR = p.qkRopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank;
  const qh = dn + dR, qRows = H * qh;
  const report: BiasFoldReport = { constant: constantResidual(f), query: null, ropeKey: null, value: null, latentKey: null, lambda: plan.value ? lambda : null, attention: 0 };
  let q: Float64Array | null = null, qA: Float64Array | null = null;
  if (plan.query) {
    if (p.q) {
      const W = f64(p.q), b = f64Bias(p.q, qRows);
      q = addRankOne(W, qRows, b, f);
      report.query = foldResidual(f, W, qRows, b, b);
    } else {
      // q = q_b·(q_a·x + b_a) + b_b: its constant c = q_b·b_a + b_b, realised through the query
      // latent as q_b·δ_q·(uᵀx) with δ_q = q_b⁺·c (c outside q_b's range cannot be folded).
      const rq = p.qLoraRank!, Wa = f64(p.qA!), Wb = f64(p.qB!);
      const c = gemmF64(Wb, f64Bias(p.qA, rq), qRows, 1, rq);
      const bb = f64Bias(p.qB, qRows);
      for (let i = 0; i < qRows; i++) c[i]! += bb[i]!;
      const dq = leastSquares(Wb, qRows, rq, c);
      qA = addRankOne(Wa, rq, dq, f);
      report.query = foldResidual(f, gemmF64(Wb, Wa, qRows, D, rq), qRows, c, gemmF64(Wb, dq, qRows, 1, rq));
    }
  }
  const Wkv = f64(p.kvA), bkv = f64Bias(p.kvA, r + dR);
  // Rows 0..r−1: the latent; r..r+d_R−1: the RoPE key (before RoPE).
  const delta = new Float64Array(r + dR);
  if (plan.ropeKey) {
    for (let i = r; i < r + dR; i++) delta[i] = bkv[i]!;
    const L = Wkv.subarray(r * D), b = bkv.subarray(r);
    report.ropeKey = foldResidual(f, L, dR, b, b);
  }
  if (plan.value) {
    // M = W_o·W_UV [D×r] maps a latent to the attention output through the values.
    const B = f64(p.kvB), Wo = f64(p.o);
    const Wuv = new Float64Array(H * dv * r), Wuk = new Float64Array(H * dn * r);
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < dn; i++) Wuk.set(B.subarray((h * (dn + dv) + i) * r, (h * (dn + dv) + i + 1) * r), (h * dn + i) * r);
      for (let i = 0; i < dv; i++) Wuv.set(B.subarray((h * (dn + dv) + dn + i) * r, (h * (dn + dv) + dn + i + 1) * r), (h * dv + i) * r);
    }
    const M = gemmF64(Wo, Wuv, D, r, H * dv);
    const beta = bkv.slice(0, r), bo = f64Bias(p.o, D);
    const y0 = gemmF64(M, beta, D, 1, r);
    for (let i = 0; i < D; i++) y0[i]! += bo[i]!;
    const Wc = Wkv.subarray(0, r * D);
    const MWc = gemmF64(M, Wc, D, D, r), K = gemmF64(Wuk, Wc, H * dn, D, r);
    const d = balancedLatentBias(f, M, Wuk, H * dn, r, y0, outputEnergy(f, MWc, D, y0), centredEnergy(f, K, H * dn), lambda);
    for (let i = 0; i < r; i++) delta[i] = d[i]!;
    report.value = foldResidual(f, MWc, D, y0, gemmF64(M, d, D, 1, r));
    report.latentKey = latentKeyResidual(f, K, H * dn, gemmF64(Wuk, d, H * dn, 1, r));
  }
  const kvA = addRankOne(Wkv, r + dR, delta, f);
  return { q, qA, kvA, report };
}

function f32Linear(W: Float64Array, rows: number, cols: number): Linear {
  return new Linear({ dtype: 'f32', shape: [rows, cols], data: Float32Array.from(W) }, null);
}

/** Layer `a` in its own (exact) semantics with the folded weights and no biases. */
export function foldedAttention(a: MlaAttention, w: FoldedWeights): MlaAttention {
  const p = a.p, D = p.kvA.inFeatures, qRows = p.nHeads * (p.qkNopeHeadDim + p.qkRopeHeadDim);
  const plain = (l: Linear | null): Linear | null => (l ? new Linear(l.weight, null) : null);
  return new MlaAttention({
    ...p,
    q: w.q ? f32Linear(w.q, qRows, D) : plain(p.q),
    qA: w.qA ? f32Linear(w.qA, p.qLoraRank!, D) : plain(p.qA),
    qB: plain(p.qB),
    kvA: f32Linear(w.kvA, p.kvLoraRank + p.qkRopeHeadDim, D),
    kvB: plain(p.kvB)!,
    o: plain(p.o)!,
  });
}

/**
 * Σ‖y_fold − y‖² / Σ‖y‖² of the layer's attention output y over the calibration samples, for each
 * candidate (exact semantics, before the latent norms are fitted): the error the folds cause
 * through the softmax, all biases together.
 */
export function attentionErrors(layer: DecoderLayer, states: HiddenStates, candidates: readonly MlaAttention[]): number[] {
  const a = layer.attn as MlaAttention, D = a.p.kvA.inFeatures, ws = new Workspace();
  const err = candidates.map(() => 0);
  let ref = 0;
  states.visitNormed(layer.inputNorm, (xn, T) => {
    const y = ws.get('fold.ref', T * D), z = ws.get('fold.cand', T * D);
    a.forward(xn, T, 0, a.createCache(), y, ws);
    for (let i = 0; i < T * D; i++) ref += y[i]! * y[i]!;
    candidates.forEach((c, k) => {
      c.forward(xn, T, 0, c.createCache(), z, ws);
      let e = 0;
      for (let i = 0; i < T * D; i++) { const d = z[i]! - y[i]!; e += d * d; }
      err[k]! += e;
    });
  });
  return err.map((e) => (ref > 0 ? e / ref : 0));
}

/** The weights of λ the export tries for the NoPE-key error of a value fold (0: value least squares only). */
export const FOLD_LAMBDAS = [0, 0.01, 0.1, 1, 10] as const;

/**
 * The calibrated bias fold of one layer: the constant fit from the layer's calibration inputs,
 * the folds of calibratedFold for every λ of FOLD_LAMBDAS (one when no value fold is needed),
 * the one whose attention output is closest to the exact layer's (report.attention, what
 * --max-bias-residual bounds).
 */
export function foldLayerBiases(layer: DecoderLayer, plan: BiasPlan, states: HiddenStates, D: number): FoldedWeights {
  const a = layer.attn as MlaAttention;
  const f = constantFit(states.gram(layer.inputNorm), D);
  const folds = (plan.value ? FOLD_LAMBDAS : [0]).map((l) => calibratedFold(a, plan, f, l));
  const errs = attentionErrors(layer, states, folds.map((w) => foldedAttention(a, w)));
  let best = 0;
  errs.forEach((e, k) => { if (e < errs[best]!) best = k; });
  const w = folds[best]!;
  w.report.attention = errs[best]!;
  return w;
}

/**
 * The default bound on a layer's bias-fold residual: the relative mean-square error the folds
 * cause in the layer's attention output over the calibration tokens (docs/methods.md#bias-fold
 * explains the choice).
 */
export const DEFAULT_MAX_BIAS_RESIDUAL = 0.05;

/** A fold report as one readable list of residuals. */
export function foldText(f: BiasFoldReport): string {
  const part = (k: string, v: number | null): string | null => (v === null ? null : `${k} ${(100 * v).toFixed(3)} %`);
  return [part('attention output', f.attention), part('query', f.query), part('RoPE key', f.ropeKey), part('value/output', f.value), part('NoPE key (from the value fold)', f.latentKey)]
    .filter((x) => x !== null).join(', ');
}

/** The bias plans of every layer of an exact MLA model: refuses what has no fold before any work. */
export function biasPlans(layers: readonly DecoderLayer[]): BiasPlan[] {
  return layers.map((l, i) => {
    if (!(l.attn instanceof MlaAttention)) throw new Error(`layer ${i} is not MLA attention`);
    return foldAttentionBiases(l.attn, i);
  });
}

/**
 * Layer l's calibrated bias fold when its plan needs one (null otherwise), refused with the
 * residuals when the attention-output error exceeds `maxBias`.
 */
export function foldOrRefuse(layer: DecoderLayer, l: number, plan: BiasPlan, states: HiddenStates, maxBias: number, log: (s: string) => void, nLayers: number): FoldedWeights | null {
  if (!needsCalibration(plan)) return null;
  const fold = foldLayerBiases(layer, plan, states, (layer.attn as MlaAttention).p.kvA.inFeatures);
  const f = fold.report;
  log(`  layer ${l + 1}/${nLayers}: biases folded, residual ${foldText(f)} (constant ${(100 * f.constant).toFixed(3)} %)`);
  if (f.attention > maxBias) {
    throw new Error(`layer ${l}: its attention biases, which stock DeepSeek-V3 has no place for, fold into the weights only with a relative error of ${foldText(f)}; ` +
      `the attention-output error ${f.attention.toPrecision(3)} exceeds --max-bias-residual ${maxBias} (no linear function of this layer's input is close enough to a constant: ` +
      `E(1 − uᵀx)² = ${f.constant.toPrecision(3)}). Refusing rather than exporting it; give a larger --max-bias-residual to accept the error`);
  }
  return fold;
}
