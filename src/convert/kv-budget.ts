// KV-cache budgets: (docs/methods.md#shape-search) the source caches 2·G·d values per token per layer, the MLA model
// r + d_R. Turns a target fraction into (r, d_R) and checks user-given ranks.
import { OptionError } from '../option-error.js';

export interface KvShape {
  nKvHeads: number;
  headDim: number;
}

export interface KvChoice {
  kvLoraRank: number;
  ropeDim: number;
  /** (r + d_R) / (2·G·d). */
  fraction: number;
}

export function sourceKvWidth(s: KvShape): number {
  return 2 * s.nKvHeads * s.headDim;
}

/** Even divisors of head_dim: the qk_rope_head_dim values RoRoPE can produce. */
export function ropeDimChoices(headDim: number): number[] {
  const out: number[] = [];
  for (let x = 2; x <= headDim; x += 2) if (headDim % x === 0) out.push(x);
  return out;
}

/**
 * Default qk_rope_head_dim for a latent budget of `width` = r + d_R values: the largest even
 * divisor of head_dim that is at most head_dim/2 (TransMLA's 64 of 128) and at most half the
 * budget, so the NoPE/value latent keeps at least as many dims as the RoPE key.
 */
export function defaultRopeDim(headDim: number, width: number): number {
  const ok = ropeDimChoices(headDim).filter((x) => x <= headDim / 2 && x <= width / 2);
  if (ok.length === 0) {
    throw new Error(`a latent of ${width} values per token is too small: it needs at least 2 RoPE dims plus a latent of the same size (head_dim ${headDim})`);
  }
  return ok[ok.length - 1]!;
}

/** Checks r against the joint latent's size 2·G·d − d_R, with a message that says what to change. */
export function checkKvRank(s: KvShape, kvLoraRank: number, ropeDim: number): void {
  const max = sourceKvWidth(s) - ropeDim;
  if (!Number.isInteger(kvLoraRank) || kvLoraRank < 1) throw new OptionError(`--kv-lora-rank must be a positive integer, got ${kvLoraRank}`);
  if (kvLoraRank > max) {
    throw new OptionError(`--kv-lora-rank ${kvLoraRank} is larger than the key/value latent allows: r ≤ 2·G·d − d_R = 2·${s.nKvHeads}·${s.headDim} − ${ropeDim} = ${max}`);
  }
}

/**
 * (r, d_R) for a target cache fraction F of the source: r + d_R = ⌊F·2·G·d⌋. d_R is the
 * given one, or defaultRopeDim of the budget.
 */
export function kvForFraction(s: KvShape, fraction: number, ropeDim?: number): KvChoice {
  if (!(fraction > 0 && fraction <= 1)) throw new OptionError(`--kv-fraction must be in (0, 1], got ${fraction}`);
  const full = sourceKvWidth(s);
  // A hair of tolerance so 0.3125·256 = 80 is not lost to rounding.
  const width = Math.floor(fraction * full + 1e-9);
  const dR = ropeDim ?? defaultRopeDim(s.headDim, width);
  const r = width - dR;
  if (r < 1) throw new OptionError(`--kv-fraction ${fraction} gives ${width} values per token, no room for a latent beside ${dR} RoPE dims`);
  checkKvRank(s, r, dR);
  return { kvLoraRank: r, ropeDim: dR, fraction: (r + dR) / full };
}
