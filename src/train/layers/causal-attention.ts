// Causal softmax attention inside each packed document (a row is cut into segments; a token
// attends to earlier tokens of its own segment only). Shared by every attention variant: they
// differ in how q, k, v are made, not here.
//
// Per segment of n tokens and per query head h (KV head g = h / (H/G)):
//   S = scale · Q_h K_gᵀ (n×n, NT GEMM), P = causal softmax(S) (kept for backward), O_h = P V_g (NN)
// Backward:
//   dP = dO_h V_gᵀ (NT);  dV_g += Pᵀ dO_h (TN);  dS = P ∘ (dP − rowsum(P ∘ dP)) · scale;
//   dQ_h = dS K_g (NN);  dK_g += dSᵀ Q_h (TN)
// The full n×n product is computed and the upper triangle masked: half of the score FLOPs
// are wasted, in exchange for running them through the GEMM kernels.
import type { TrainBackend, Vec } from '../backend.js';

export interface AttentionShape {
  nHeads: number;
  nKvHeads: number;
  dK: number;
  dV: number;
  scale: number;
}

/** Segment starts of a row of T tokens: [0, s1, s2, …]; segment i spans [starts[i], starts[i+1] or T). */
export type Segments = Int32Array;

export class CausalAttention {
  readonly s: AttentionShape;
  private be: TrainBackend;
  /** Softmax probabilities of the last forward, per segment and head (Σ_seg n² · H). */
  private probs: Vec;
  private qh: Vec; private kg: Vec; private vg: Vec; private oh: Vec;
  private dk: Vec; private dv: Vec; private dp: Vec;

  constructor(be: TrainBackend, s: AttentionShape) {
    if (s.nHeads % s.nKvHeads !== 0) throw new Error(`${s.nHeads} query heads cannot be grouped over ${s.nKvHeads} KV heads`);
    this.be = be;
    this.s = s;
    this.probs = this.qh = this.kg = this.vg = this.oh = this.dk = this.dv = this.dp = be.alloc(0);
  }

  private ensure(T: number, probsLen: number): void {
    const be = this.be, { dK, dV } = this.s;
    if (this.probs.length < probsLen) this.probs = be.alloc(probsLen);
    if (this.qh.length < T * dK) {
      this.qh = be.alloc(T * dK); this.kg = be.alloc(T * dK); this.dk = be.alloc(T * dK);
    }
    if (this.vg.length < T * dV) {
      this.vg = be.alloc(T * dV); this.oh = be.alloc(T * dV); this.dv = be.alloc(T * dV);
    }
    if (this.dp.length < T * T) this.dp = be.alloc(T * T);
  }

  /**
   * q [T, H, dK], k [T, G, dK], v [T, G, dV] (token-major) → out [T, H, dV].
   */
  forward(q: Vec, k: Vec, v: Vec, T: number, seg: Segments, out: Vec): void {
    const { nHeads: H, nKvHeads: G, dK, dV, scale } = this.s;
    const be = this.be, n = H / G;
    let total = 0;
    for (let i = 0; i < seg.length; i++) { const len = segEnd(seg, i, T) - seg[i]!; total += len * len; }
    this.ensure(T, total * H);
    let po = 0;
    for (let si = 0; si < seg.length; si++) {
      const t0 = seg[si]!, len = segEnd(seg, si, T) - t0;
      for (let g = 0; g < G; g++) {
        gather(k, t0, len, G, g, dK, this.kg);
        gather(v, t0, len, G, g, dV, this.vg);
        for (let hh = 0; hh < n; hh++) {
          const h = g * n + hh;
          gather(q, t0, len, H, h, dK, this.qh);
          const P = this.probs.subarray(po, po + len * len);
          be.nt(this.qh, this.kg, P, len, len, dK, false);
          causalSoftmax(P, len, scale);
          be.nn(P, this.vg, this.oh, len, dV, len, false);
          scatter(this.oh, out, t0, len, H, h, dV);
          po += len * len;
        }
      }
    }
  }

  /**
   * From dOut [T, H, dV] and the forward's q, k, v: dq [T, H, dK], dk [T, G, dK], dv [T, G, dV]
   * (all written, not accumulated).
   */
  backward(q: Vec, k: Vec, v: Vec, T: number, seg: Segments, dOut: Vec, dq: Vec, dk: Vec, dv: Vec): void {
    const { nHeads: H, nKvHeads: G, dK, dV, scale } = this.s;
    const be = this.be, n = H / G;
    let po = 0;
    for (let si = 0; si < seg.length; si++) {
      const t0 = seg[si]!, len = segEnd(seg, si, T) - t0;
      for (let g = 0; g < G; g++) {
        gather(k, t0, len, G, g, dK, this.kg);
        gather(v, t0, len, G, g, dV, this.vg);
        const dKg = this.dk.subarray(0, len * dK), dVg = this.dv.subarray(0, len * dV);
        dKg.fill(0);
        dVg.fill(0);
        for (let hh = 0; hh < n; hh++) {
          const h = g * n + hh;
          const P = this.probs.subarray(po, po + len * len);
          po += len * len;
          const dO = this.oh;
          gather(dOut, t0, len, H, h, dV, dO);
          gather(q, t0, len, H, h, dK, this.qh);
          const dP = this.dp.subarray(0, len * len);
          be.nt(dO, this.vg, dP, len, len, dV, false);
          be.tn(P, dO, dVg, len, dV, len, true);
          softmaxBackward(P, dP, len, scale);
          // dP now holds dS; reuse the gathered-query buffer for dQ_h after dK_g took Q_h.
          be.tn(dP, this.qh, dKg, len, dK, len, true);
          be.nn(dP, this.kg, this.qh, len, dK, len, false);
          scatter(this.qh, dq, t0, len, H, h, dK);
        }
        scatter(dKg, dk, t0, len, G, g, dK);
        scatter(dVg, dv, t0, len, G, g, dV);
      }
    }
  }
}

function segEnd(seg: Segments, i: number, T: number): number {
  return i + 1 < seg.length ? seg[i + 1]! : T;
}

/** dst[len×w] ← head h of tokens t0..t0+len−1 of src [T, heads, w]. */
function gather(src: Vec, t0: number, len: number, heads: number, h: number, w: number, dst: Vec): void {
  for (let t = 0; t < len; t++) {
    const o = ((t0 + t) * heads + h) * w;
    dst.set(src.subarray(o, o + w), t * w);
  }
}

/** Inverse of gather. */
function scatter(src: Vec, dst: Vec, t0: number, len: number, heads: number, h: number, w: number): void {
  for (let t = 0; t < len; t++) dst.set(src.subarray(t * w, (t + 1) * w), ((t0 + t) * heads + h) * w);
}

/** Row i of S[n×n] ← softmax(scale · S[i, 0..i]), zeros above the diagonal. */
function causalSoftmax(S: Vec, n: number, scale: number): void {
  for (let i = 0; i < n; i++) {
    const o = i * n;
    let mx = -Infinity;
    for (let j = 0; j <= i; j++) mx = Math.max(mx, S[o + j]! * scale);
    let z = 0;
    for (let j = 0; j <= i; j++) { const e = Math.exp(S[o + j]! * scale - mx); S[o + j] = e; z += e; }
    const inv = 1 / z;
    for (let j = 0; j <= i; j++) S[o + j]! *= inv;
    for (let j = i + 1; j < n; j++) S[o + j] = 0;
  }
}

/** dP ← dS = scale · P ∘ (dP − Σ_j P∘dP) row by row (zero above the diagonal, where P is). */
function softmaxBackward(P: Vec, dP: Vec, n: number, scale: number): void {
  for (let i = 0; i < n; i++) {
    const o = i * n;
    let dot = 0;
    for (let j = 0; j <= i; j++) dot += P[o + j]! * dP[o + j]!;
    for (let j = 0; j <= i; j++) dP[o + j] = scale * P[o + j]! * (dP[o + j]! - dot);
    for (let j = i + 1; j < n; j++) dP[o + j] = 0;
  }
}
