// Stage 3 — RoRoPE + FreqFold (docs/methods.md#rorope, #freqfold): concentrate the key's position
// information in d_R RoPE dims shared by all heads, and drop RoPE from the rest.
//
// For one frequency, the G heads' (re, im) pairs rotate by the same angle, so any orthogonal
// G×G map applied to the re parts and the im parts alike commutes with RoPE: rotating the key
// latent (rows of Wk) and the key up-projection (columns of kUp) by it changes no score.
// PCA of the key per frequency (re and im as two samples per token) puts most of the energy
// into the first components, which keep RoPE; the others become NoPE (the lossy step).
// FreqFold M pools M adjacent frequencies into one PCA of size G·M, treating them as equal
// (an approximation whenever M > 1); its top M/c components, c = d/d_R, become RoPE pairs
// i = a·(M/c)+p with the source frequency a·M+p·c = c·i, i.e. θ^(−2i/d_R) in DeepSeek form.
//
// Input: a LatentLayer straight from latentFromGqa (key latent frequency-major, pairs
// interleaved, every dim under RoPE) and the covariance of its key latent over calibration
// tokens. Output: Wk rows = [d_R RoPE rows (interleaved pairs) ; G·d − d_R NoPE rows], kUp
// columns alike.
import { gemmSeqF64, transpose } from '../linalg/dense.js';
import { pca } from '../linalg/pca.js';
import { PCA_DAMP, type LatentLayer } from './latent-layer.js';

export interface RoRopeOptions {
  /** KV heads of the source (the key latent holds G·d dims). */
  nKvHeads: number;
  /** RoPE dims kept (qk_rope_head_dim), or 'all' to rotate without truncating (needs freqFold 1): exact. */
  ropeDim: number | 'all';
  /** FreqFold M: adjacent frequencies pooled per PCA. Must be a multiple of c = d/d_R dividing d/2. */
  freqFold: number;
}

export interface RoRopeResult {
  layer: LatentLayer;
  /** T [nK × nK], orthogonal: new Wk = T·old Wk, new kUp = old kUp·Tᵀ (so covariances map as T·C·Tᵀ). */
  rotation: Float64Array;
  /** Share of the key latent's energy (trace of its covariance) kept in the RoPE dims. */
  ropeEnergy: number;
}

/** Checks d_R and M against head_dim; returns the collapse c = d / d_R. */
export function checkRoRope(headDim: number, ropeDim: number, freqFold: number): number {
  const d = headDim;
  if (!Number.isInteger(ropeDim) || ropeDim < 2 || ropeDim % 2 !== 0) throw new Error(`qk_rope_head_dim must be an even integer ≥ 2, got ${ropeDim}`);
  if (d % ropeDim !== 0) throw new Error(`qk_rope_head_dim ${ropeDim} must divide head_dim ${d} (each kept pair takes every (head_dim/qk_rope_head_dim)-th source frequency)`);
  const c = d / ropeDim;
  if (!Number.isInteger(freqFold) || freqFold < 1 || freqFold % c !== 0 || (d / 2) % freqFold !== 0) {
    throw new Error(`freqfold ${freqFold} must be a multiple of head_dim/qk_rope_head_dim = ${c} that divides head_dim/2 = ${d / 2}`);
  }
  return c;
}

/** The FreqFold values a search may try: c, 2c, 4c, … up to d/2. */
export function freqFoldCandidates(headDim: number, ropeDim: number): number[] {
  const c = headDim / ropeDim;
  const out: number[] = [];
  for (let m = c; m <= headDim / 2; m *= 2) if ((headDim / 2) % m === 0) out.push(m);
  return out;
}

/**
 * keyCov: [nK × nK] uncentered covariance of the key latent rows (Wk·[x;1]) of `L`.
 */
export function roRope(L: LatentLayer, keyCov: Float64Array, opts: RoRopeOptions): RoRopeResult {
  const G = opts.nKvHeads, d = L.headDim, nK = L.nK, Dp = L.hidden + 1, Hd = L.nHeads * d;
  if (nK !== G * d || L.ropeDim !== nK) throw new Error('roRope expects the untouched GQA latent (every key dim under RoPE)');
  if (keyCov.length !== nK * nK) throw new Error(`key covariance has ${keyCov.length} values, expected ${nK}²`);
  const M = opts.freqFold;
  const all = opts.ropeDim === 'all';
  if (all && M !== 1) throw new Error('rotating without truncation is exact only per frequency (freqfold 1)');
  const dR = all ? nK : (opts.ropeDim as number);
  const c = all ? 1 : checkRoRope(d, dR, M);
  const keepPerGroup = all ? G : M / c;
  const nGroups = d / 2 / M;
  const n = G * M;

  const wk = new Float64Array(nK * Dp);
  const kUp = new Float64Array(Hd * nK);
  const ropeInvFreq = new Float64Array(dR / 2);
  const T = new Float64Array(nK * nK);
  let nopeRow = dR;
  let trace = 0, kept = 0;
  const sigma = new Float64Array(n * n);
  for (let a = 0; a < nGroups; a++) {
    // Group a's pairs are contiguous in the latent: pair p0 + f for feature f = m·G + g.
    const p0 = a * n;
    for (let f = 0; f < n; f++) {
      const rf = 2 * (p0 + f);
      for (let f2 = 0; f2 < n; f2++) {
        const rf2 = 2 * (p0 + f2);
        sigma[f * n + f2] = keyCov[rf * nK + rf2]! + keyCov[(rf + 1) * nK + rf2 + 1]!;
      }
      trace += sigma[f * n + f]!;
    }
    const { components: U, variances } = pca(sigma, n, { damp: PCA_DAMP });
    // Component q of this group: where its re/im rows go.
    const reRows = new Int32Array(n);
    for (let q = 0; q < n; q++) {
      if (q < keepPerGroup) {
        const pair = a * keepPerGroup + q;
        reRows[q] = 2 * pair;
        ropeInvFreq[pair] = L.ropeInvFreq[(all ? a : a * M + q * c) * G]!;
        kept += Math.max(0, variances[q]!);
      } else {
        reRows[q] = nopeRow;
        nopeRow += 2;
      }
      for (let f = 0; f < n; f++) {
        const u = U[f * n + q]!;
        if (u !== 0) for (let part = 0; part < 2; part++) T[(reRows[q]! + part) * nK + 2 * (p0 + f) + part] = u;
      }
    }
    // Re and im parts alike: new Wk rows = Uᵀ·(the group's rows), new kUp columns = (its columns)·U,
    // each summed over f in order (gemmSeqF64 keeps the bits of the loop this replaced).
    const Ut = transpose(U, n, n);
    for (let part = 0; part < 2; part++) {
      const X = new Float64Array(n * Dp), Xk = new Float64Array(Hd * n);
      for (let f = 0; f < n; f++) {
        const src = 2 * (p0 + f) + part;
        X.set(L.wk.subarray(src * Dp, (src + 1) * Dp), f * Dp);
        for (let i = 0; i < Hd; i++) Xk[i * n + f] = L.kUp[i * nK + src]!;
      }
      const Y = gemmSeqF64(Ut, X, n, Dp, n), Z = gemmSeqF64(Xk, U, Hd, n, n);
      for (let q = 0; q < n; q++) {
        const row = reRows[q]! + part;
        wk.set(Y.subarray(q * Dp, (q + 1) * Dp), row * Dp);
        for (let i = 0; i < Hd; i++) kUp[i * nK + row] = Z[i * n + q]!;
      }
    }
  }
  return {
    layer: { ...L, wk, kUp, ropeDim: dR, ropeInvFreq },
    rotation: T,
    ropeEnergy: trace > 0 ? kept / trace : 1,
  };
}
