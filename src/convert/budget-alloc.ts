// Per-layer cache budgets over both widths (docs/methods.md#aware-budget, `--rank-alloc joint`):
// layer l gets (d_R,l, M_l, r_l) with Σ_l (d_R,l + r_l) = L·(d_R + r), the uniform cache bytes.
// The RoPE width and the latent rank trade against each other inside a layer, so no spectrum
// alone prices both; each candidate is measured instead: the method's own step is built at that
// shape from the layer's original-model statistics and run on a few calibration samples, and
//   e_l(d_R, r) = ‖Attn'_l(X_l) − Attn_l(X_l)‖² / ‖h_l‖²
// is its output error relative to the residual stream h_l it is added to (the next layers see
// h_l through an RMSNorm, so a perturbation counts in units of the stream's own size). The shape
// family per layer is {d_R/2, d_R, 2·d_R} (each a divisor of head_dim; any two divide one another,
// so the stock folder can pad them to the largest), with M keeping the uniform shape's ratio M/c;
// r is measured on a grid and interpolated linearly; an exact dynamic programme over the total
// picks the layers' shapes.
import type { ModelArgs } from '../models/model-args.js';
import type { DecoderLayer } from '../models/decoder.js';
import type { FloatDType } from '../kernels/types.js';
import { Workspace } from '../models/workspace.js';
import type { HiddenStates } from '../eval/hidden-states.js';
import { awareLayer, type AwareShape, type StepMemo } from './aware-layer.js';
import { mlaDecoderLayer, mlaRopeTable } from './mla-build.js';
import { checkRoRope } from './rorope.js';
import { captureProxyLayer } from './shape-search.js';

export interface LayerShape {
  ropeDim: number;
  freqFold: number;
  rank: number;
}

/** One (d_R, M) of a layer with its measured errors at grid ranks. */
export interface BudgetCurve {
  ropeDim: number;
  freqFold: number;
  grid: { rank: number; error: number }[];
}

/** The (d_R, M) family tried per layer around the uniform (dR, M). */
export function ropeFamily(headDim: number, dR: number, M: number, maxRank: (dR: number) => number): { ropeDim: number; freqFold: number }[] {
  const ratio = M / (headDim / dR);
  const out: { ropeDim: number; freqFold: number }[] = [];
  for (const x of [dR / 2, dR, 2 * dR]) {
    if (!Number.isInteger(x) || x < 2 || x % 2 !== 0 || headDim % x !== 0 || maxRank(x) < 1) continue;
    const c = headDim / x;
    let f = x === dR ? M : c * ratio;
    try { checkRoRope(headDim, x, f); } catch { f = c; }
    out.push({ ropeDim: x, freqFold: f });
  }
  return out;
}

/** Grid ranks: fractions of the uniform r within [min, max]. */
export function rankGrid(r: number, min: number, max: number): number[] {
  const xs = [min, ...[0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3].map((f) => Math.round(f * r)), max].filter((x) => x >= min && x <= max);
  return [...new Set(xs)].sort((a, b) => a - b);
}

export interface CurveInputs {
  args: ModelArgs;
  l: number;
  layer: DecoderLayer;
  /** The layer's inputs in the original model. */
  states: HiddenStates;
  /** The method's step shape (RoPE basis, latent, NoPE refit, balance); widths are overridden. */
  base: AwareShape;
  family: { ropeDim: number; freqFold: number }[];
  grid: (ropeDim: number) => number[];
  samples: number;
  dtype: FloatDType;
  where: string;
}

/** Every (d_R, M) of the family at every grid rank: the method's step, scored on the layer's samples. */
export function layerBudgetCurves(x: CurveInputs): BudgetCurve[] {
  const { args, l, layer, states } = x;
  const proxy = captureProxyLayer(states, layer, x.samples);
  const T = proxy.seqLen, n = proxy.xn.length / proxy.samples;
  let resid = 0;
  for (let s = 0; s < proxy.samples; s++) for (const v of states.sample(s)) resid += v * v;
  const view = { config: args, layers: Object.assign([], { [l]: layer }) };
  const memo: StepMemo = {};
  const ws = new Workspace(), out = new Float32Array(n);
  return x.family.map((f) => ({
    ...f,
    grid: x.grid(f.ropeDim).map((rank) => {
      const step = awareLayer(args, l, layer, states, null, { ...x.base, ropeDim: f.ropeDim, freqFold: f.freqFold, kvLoraRank: rank }, x.where, null, memo);
      const attn = mlaDecoderLayer(view, l, step.weights, mlaRopeTable(view, f.ropeDim), { dtype: x.dtype }).attn;
      let err = 0;
      for (let s = 0; s < proxy.samples; s++) {
        attn.forward(proxy.xn.subarray(s * n, (s + 1) * n), T, 0, attn.createCache(), out, ws);
        for (let i = 0; i < n; i++) { const e = out[i]! - proxy.y[s * n + i]!; err += e * e; }
      }
      return { rank, error: resid > 0 ? err / resid : 0 };
    }),
  }));
}

/** A curve's error at any rank in its grid's range (linear between grid points). */
export function errorAt(c: BudgetCurve, rank: number): number {
  const g = c.grid;
  for (let i = 0; i + 1 < g.length; i++) {
    const a = g[i]!, b = g[i + 1]!;
    if (rank >= a.rank && rank <= b.rank) return a.error + ((rank - a.rank) / (b.rank - a.rank)) * (b.error - a.error);
  }
  if (g.length === 1 && g[0]!.rank === rank) return g[0]!.error;
  throw new Error(`rank ${rank} is outside the measured grid ${g[0]?.rank}…${g[g.length - 1]?.rank}`);
}

/**
 * The shapes with Σ_l (d_R,l + r_l) = total that minimise Σ_l e_l, exactly (a dynamic programme
 * over the cache values spent so far; ties keep the earlier option, the uniform shape first when
 * it is listed first).
 */
export function allocateBudgets(curves: readonly BudgetCurve[][], total: number): { shapes: LayerShape[]; error: number } {
  const L = curves.length;
  const opts = curves.map((cs) => cs.flatMap((c) => {
    const lo = c.grid[0]!.rank, hi = c.grid[c.grid.length - 1]!.rank;
    return Array.from({ length: hi - lo + 1 }, (_, i) => ({ ropeDim: c.ropeDim, freqFold: c.freqFold, rank: lo + i, cost: c.ropeDim + lo + i, error: errorAt(c, lo + i) }));
  }));
  let best = new Float64Array(total + 1).fill(Infinity);
  best[0] = 0;
  const choice: Int32Array[] = [];
  for (let l = 0; l < L; l++) {
    const next = new Float64Array(total + 1).fill(Infinity), pick = new Int32Array(total + 1).fill(-1);
    const o = opts[l]!;
    for (let b = 0; b <= total; b++) {
      if (best[b] === Infinity) continue;
      for (let k = 0; k < o.length; k++) {
        const nb = b + o[k]!.cost;
        if (nb > total) continue;
        const v = best[b]! + o[k]!.error;
        if (v < next[nb]!) { next[nb] = v; pick[nb] = k; }
      }
    }
    best = next;
    choice.push(pick);
  }
  if (best[total] === Infinity) throw new Error(`no per-layer shapes spend exactly ${total} cached values per token over ${L} layers`);
  const shapes: LayerShape[] = Array(L);
  let b = total;
  for (let l = L - 1; l >= 0; l--) {
    const o = opts[l]![choice[l]![b]!]!;
    shapes[l] = { ropeDim: o.ropeDim, freqFold: o.freqFold, rank: o.rank };
    b -= o.cost;
  }
  return { shapes, error: best[total]! };
}
