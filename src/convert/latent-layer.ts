// The two per-layer forms the conversion stages pass around, both float64 (docs/methods.md#exact-rewrite, #bkv-pca):
//
// LatentLayer — attention written as "latent down-projections + per-head up-projections":
//   key latent  cK = Wk·[x;1]  (nK features; the first ropeDim carry RoPE in interleaved pairs)
//   value latent cV = Wv·[x;1]  (nV features)
//   head h: q_h = Wq^h·[x;1],  k_h = kUp^h·(RoPE'd cK),  v_h = vUp^h·cV,  score = scale·q_h·k_h
// The GQA source is this form with identity-selector up-projections; RoRoPE rotates Wk and
// kUp together; the RoPE part of kUp is later folded into the query (docs/methods.md#query-fold).
//
// MlaLayerWeights — the DeepSeek-V3 tensors of one layer (q_proj or q_a/q_b, kv_a_proj_with_mqa,
// kv_b_proj), which the engine's MlaAttention runs and the writer saves. o_proj is untouched.
//
// assembleMla turns the first into the second given a basis of the joint [K_nope/α ; V] latent
// (the identity for the lossless "partial RoPE" model, the top principal components for BKV-PCA)
// and optionally a basis of the query outputs (q_lora).

import { gemmSeqF64, transpose } from '../linalg/dense.js';

/** TransMLA's PCA damping: 0.01·mean(diag Σ) added to the diagonal before eigh. */
export const PCA_DAMP = 0.01;

export interface LatentLayer {
  /** Hidden size D; weights carry one extra input column (index D) holding the bias. */
  hidden: number;
  nHeads: number;
  /** Width of each query head and of each head's key and value (the source head_dim). */
  headDim: number;
  /** [H·d, D+1] */
  wq: Float64Array;
  nK: number;
  /** [nK, D+1]: rows 0..ropeDim−1 are RoPE rows in interleaved pair order, the rest NoPE. */
  wk: Float64Array;
  nV: number;
  /** [nV, D+1] */
  wv: Float64Array;
  /** [H·d, nK] */
  kUp: Float64Array;
  /** [H·d, nV] */
  vUp: Float64Array;
  ropeDim: number;
  /** [ropeDim/2]: the angular frequency of each RoPE pair of the key latent. */
  ropeInvFreq: Float64Array;
  /** Softmax scale of the source (1/√d for Llama). */
  scale: number;
}

export interface LinearF64 {
  /** [out, in] */
  w: Float64Array;
  b: Float64Array | null;
}

export interface MlaDims {
  hidden: number;
  nHeads: number;
  qkNopeHeadDim: number;
  qkRopeHeadDim: number;
  vHeadDim: number;
  kvLoraRank: number;
  /** null: a full q_proj; else q_a_proj [rq, D] → q_b_proj. */
  qLoraRank: number | null;
}

export interface MlaLayerWeights {
  dims: MlaDims;
  /** q_proj [H·(d_n+d_R), D] when qLoraRank is null. */
  q: LinearF64 | null;
  /** q_a_proj [rq, D] (no bias) and q_b_proj [H·(d_n+d_R), rq] when qLoraRank is set. */
  qA: LinearF64 | null;
  qB: LinearF64 | null;
  /** kv_a_proj_with_mqa [r + d_R, D]: latent rows then the shared RoPE key rows. */
  kvA: LinearF64;
  /** kv_b_proj [H·(d_n+d_v), r]: per head d_n key rows then d_v value rows. */
  kvB: Float64Array;
  /** Qwen3's per-head q/k norm kept (the exact-structure form, docs/methods.md#qk-norm); absent: plain MLA. */
  qkNorm?: QkNormWeights;
}

/** The exact-structure additions: per-head q_a_layernorm and the pre-norm key projection behind κ. */
export interface QkNormWeights {
  /** q_a_layernorm weights [q_lora_rank] (γ_q tiled), applied in qGroups groups. */
  qNorm: Float64Array;
  qGroups: number;
  /** The pre-norm keys W_k [G·d, D] whose per-group rms gives κ; null: the naive form (κ ≡ 1). */
  kProj: LinearF64 | null;
  kGroups: number;
  eps: number;
}

/** A basis of the joint latent X = [K_nope/α ; V] (nNope + nV features): R [n × r], columns orthonormal. */
export interface KvBasis {
  alpha: number;
  R: Float64Array;
  rank: number;
}

/** A basis of the source query outputs (H·d features): R [H·d × rq]. */
export interface QueryBasis {
  R: Float64Array;
  rank: number;
}

function hasBias(w: Float64Array, rows: number, D: number): boolean {
  for (let i = 0; i < rows; i++) if (w[i * (D + 1) + D] !== 0) return true;
  return false;
}

/** Splits an [out, D+1] matrix into weight [out, D] and bias (null when the bias column is all zero). */
export function splitBias(wb: Float64Array, rows: number, D: number): LinearF64 {
  const w = new Float64Array(rows * D);
  for (let i = 0; i < rows; i++) w.set(wb.subarray(i * (D + 1), i * (D + 1) + D), i * D);
  if (!hasBias(wb, rows, D)) return { w, b: null };
  const b = new Float64Array(rows);
  for (let i = 0; i < rows; i++) b[i] = wb[i * (D + 1) + D]!;
  return { w, b };
}

/**
 * Builds the DeepSeek-form tensors. Without a KV basis the latent is the whole
 * [K_nope ; V] (r = nK − d_R + nV) and the result computes exactly what the LatentLayer does.
 */
export function assembleMla(L: LatentLayer, kv: KvBasis | null = null, qBasis: QueryBasis | null = null): MlaLayerWeights {
  const { hidden: D, nHeads: H, headDim: d, nK, nV, ropeDim: dR } = L;
  const Dp = D + 1;
  const nNope = nK - dR;
  const nLat = nNope + nV;
  const alpha = kv?.alpha ?? 1;
  const r = kv ? kv.rank : nLat;
  if (kv && kv.R.length !== nLat * r) throw new Error(`KV basis is ${kv.R.length} values, expected ${nLat}×${r}`);
  // With no NoPE key features left (the exact rewrite keeps every key dim under RoPE), heads
  // have no nope part at all.
  const dn = nNope > 0 ? d : 0;
  const dv = d;

  // Joint latent weights [K_nope/α ; V] and its per-head up-projection B [H·(dn+dv), nLat].
  const wLat = new Float64Array(nLat * Dp);
  for (let i = 0; i < nNope; i++) {
    for (let j = 0; j < Dp; j++) wLat[i * Dp + j] = L.wk[(dR + i) * Dp + j]! / alpha;
  }
  wLat.set(L.wv, nNope * Dp);
  const hw = dn + dv;
  const B = new Float64Array(H * hw * nLat);
  for (let h = 0; h < H; h++) {
    for (let e = 0; e < dn; e++) {
      const src = (h * d + e) * nK + dR, dst = (h * hw + e) * nLat;
      for (let i = 0; i < nNope; i++) B[dst + i] = L.kUp[src + i]! * alpha;
    }
    for (let e = 0; e < dv; e++) {
      const src = (h * d + e) * nV, dst = (h * hw + dn + e) * nLat + nNope;
      for (let i = 0; i < nV; i++) B[dst + i] = L.vUp[src + i]!;
    }
  }

  // Down-projection Rᵀ·wLat and up-projection B·R (R = I without a basis).
  let down: Float64Array, kvB: Float64Array;
  if (kv) {
    // Summed over the latent index in order, as the loops this replaced (gemmSeqF64).
    down = gemmSeqF64(transpose(kv.R, nLat, r), wLat, r, Dp, nLat);
    kvB = gemmSeqF64(B, kv.R, H * hw, r, nLat);
  } else {
    down = wLat;
    kvB = B;
  }
  const kvAFull = new Float64Array((r + dR) * Dp);
  kvAFull.set(down);
  kvAFull.set(L.wk.subarray(0, dR * Dp), r * Dp);

  // The MLA softmax scale is (d_n+d_R)^−½; folding the ratio into every query weight keeps
  // the scores of the source (TransMLA multiplies q by √(d+d_R)/√d for the same reason).
  const qScale = L.scale * Math.sqrt(dn + dR);
  const qh = dn + dR;
  // Per head: nope rows = the query's own basis rows; RoPE rows = kUp_ropeᵀ·(those rows).
  const headRows = (src: Float64Array, cols: number): Float64Array => {
    const out = new Float64Array(H * qh * cols);
    for (let h = 0; h < H; h++) {
      const base = h * d * cols;
      for (let e = 0; e < dn; e++) {
        for (let j = 0; j < cols; j++) out[(h * qh + e) * cols + j] = src[base + e * cols + j]! * qScale;
      }
      if (dR === 0) continue;
      // RoPE rows p: Σ_e (u_pe·qScale)·src row e, e in order (gemmSeqF64).
      const A = new Float64Array(dR * d);
      for (let p = 0; p < dR; p++) for (let e = 0; e < d; e++) A[p * d + e] = L.kUp[(h * d + e) * nK + p]! * qScale;
      out.set(gemmSeqF64(A, src.subarray(base, base + d * cols), dR, cols, d), (h * qh + dn) * cols);
    }
    return out;
  };

  const dims: MlaDims = { hidden: D, nHeads: H, qkNopeHeadDim: dn, qkRopeHeadDim: dR, vHeadDim: dv, kvLoraRank: r, qLoraRank: qBasis ? qBasis.rank : null };
  const kvA = splitBias(kvAFull, r + dR, D);
  if (!qBasis) {
    return { dims, q: splitBias(headRows(L.wq, Dp), H * qh, D), qA: null, qB: null, kvA, kvB };
  }
  // q_lora: q ≈ R·(Rᵀ·W·x) + b. The bias rides on q_b so the projection only approximates W·x.
  const rq = qBasis.rank, Hd = H * d;
  if (qBasis.R.length !== Hd * rq) throw new Error(`query basis is ${qBasis.R.length} values, expected ${Hd}×${rq}`);
  const qAb = gemmSeqF64(transpose(qBasis.R, Hd, rq), L.wq, rq, Dp, Hd);
  const qA = new Float64Array(rq * D);
  for (let c = 0; c < rq; c++) qA.set(qAb.subarray(c * Dp, c * Dp + D), c * D);
  const qBb = new Float64Array(Hd * (rq + 1));
  for (let i = 0; i < Hd; i++) {
    qBb.set(qBasis.R.subarray(i * rq, (i + 1) * rq), i * (rq + 1));
    qBb[i * (rq + 1) + rq] = L.wq[i * Dp + D]!;
  }
  return { dims, q: null, qA: { w: qA, b: null }, qB: splitBias(headRows(qBb, rq + 1), H * qh, rq), kvA, kvB };
}
