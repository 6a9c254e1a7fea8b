// DeepSeek's YaRN RoPE scaling (docs/methods.md#yarn) (rope_scaling type "yarn", as DeepSeek-V2/V3 configs use it), for
// stock DeepSeek-V3 checkpoints. Three effects, each as the stock code computes it:
//   - pair frequencies: a per-pair blend of θ^(−2i/d) (extrapolation) and θ^(−2i/d)/factor
//     (interpolation), ramped between the correction dims of beta_fast and beta_slow rotations
//     over original_max_position_embeddings (floor/ceil unless truncate: false);
//   - cos/sin multiplied by attention_factor (default mscale(factor, mscale)/mscale(factor,
//     mscale_all_dim) when both are set, else mscale(factor, 1));
//   - the softmax scale qk_head_dim^−½ multiplied by mscale(factor, mscale_all_dim)² when
//     mscale_all_dim is set (DeepseekV3Attention).
// mscale(s, m) = 1 for s ≤ 1, else 0.1·m·ln(s) + 1.

export interface YarnScaling {
  type: 'yarn';
  factor: number;
  originalMaxPositionEmbeddings: number;
  betaFast: number;
  betaSlow: number;
  /** 0 when absent (as the stock code treats a missing key). */
  mscale: number;
  mscaleAllDim: number;
  /** Explicit attention_factor, else null (derived from mscale/mscale_all_dim). */
  attentionFactor: number | null;
  truncate: boolean;
}

export function yarnGetMscale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

/** The cos/sin multiplier (HF's attention_scaling). */
export function yarnAttentionFactor(y: YarnScaling): number {
  if (y.attentionFactor !== null) return y.attentionFactor;
  if (y.mscale && y.mscaleAllDim) return yarnGetMscale(y.factor, y.mscale) / yarnGetMscale(y.factor, y.mscaleAllDim);
  return yarnGetMscale(y.factor);
}

/** The multiplier of the softmax scale: mscale(factor, mscale_all_dim)² when mscale_all_dim ≠ 0, else 1. */
export function yarnSoftmaxFactor(y: YarnScaling): number {
  if (!y.mscaleAllDim) return 1;
  const m = yarnGetMscale(y.factor, y.mscaleAllDim);
  return m * m;
}

/** Pair frequencies (dim/2 of them) of YaRN over a RoPE width of `dim`. */
export function yarnInvFreq(dim: number, theta: number, y: YarnScaling): Float64Array {
  if (dim % 2 !== 0) throw new Error(`RoPE dimension must be even, got ${dim}`);
  const half = dim / 2;
  const corrDim = (rot: number): number => (dim * Math.log(y.originalMaxPositionEmbeddings / (rot * 2 * Math.PI))) / (2 * Math.log(theta));
  let low = corrDim(y.betaFast), high = corrDim(y.betaSlow);
  if (y.truncate) { low = Math.floor(low); high = Math.ceil(high); }
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    const base = Math.pow(theta, (2 * i) / dim);
    const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
    const extrap = 1 - ramp; // weight of the unscaled frequency
    inv[i] = (1 / (y.factor * base)) * (1 - extrap) + (1 / base) * extrap;
  }
  return inv;
}

/** Parses a rope_scaling object of type yarn (DeepSeek keys); `err` throws with the key named. */
export function parseYarn(v: Record<string, unknown>, maxPositionEmbeddings: number, err: (key: string, msg: string) => never): YarnScaling {
  const num = (k: string, dflt: number | null): number | null => {
    const x = v[k];
    if (x === undefined || x === null) return dflt;
    if (typeof x !== 'number' || !Number.isFinite(x)) err(`rope_scaling.${k}`, `must be a number, got ${JSON.stringify(x)}`);
    return x as number;
  };
  const omp = num('original_max_position_embeddings', null);
  let factor = num('factor', null);
  if (factor === null) {
    if (omp === null) err('rope_scaling.factor', 'is missing (and there is no original_max_position_embeddings to derive it)');
    factor = maxPositionEmbeddings / omp!;
  }
  if (!(factor > 0)) err('rope_scaling.factor', `must be positive, got ${factor}`);
  const orig = omp ?? maxPositionEmbeddings;
  if (!(orig > 0)) err('rope_scaling.original_max_position_embeddings', `must be positive, got ${orig}`);
  const t = v.truncate;
  if (t !== undefined && t !== null && typeof t !== 'boolean') err('rope_scaling.truncate', `must be true or false, got ${JSON.stringify(t)}`);
  return {
    type: 'yarn',
    factor,
    originalMaxPositionEmbeddings: orig,
    // `or` defaults as the stock code: 0/missing → 32 and 1.
    betaFast: num('beta_fast', 32) || 32,
    betaSlow: num('beta_slow', 1) || 1,
    mscale: num('mscale', 0)!,
    mscaleAllDim: num('mscale_all_dim', 0)!,
    attentionFactor: num('attention_factor', null),
    truncate: t === undefined || t === null ? true : (t as boolean),
  };
}
