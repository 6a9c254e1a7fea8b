// The next token of a served sequence, with the sampling controls OpenAI's and vLLM's APIs accept,
// in vLLM's order: penalties → temperature → top-k/top-p (vllm-project/vllm vllm/v1/sample/sampler.py
// @00ec9781, Sampler.forward), then min-p relative to the most likely token (vLLM's _apply_min_p,
// which runs after top-k/top-p):
//   repetition_penalty  (HF/vLLM) every token seen in the prompt or the output: a positive logit
//                       is divided by it, a negative one multiplied;
//   presence_penalty    (OpenAI) minus this once for every token the output already holds;
//   frequency_penalty   (OpenAI) minus this times how often the output holds the token;
//   temperature 0       greedy: the argmax of the penalised logits;
//   top_k               only the k most likely tokens (0: no cut);
//   top_p               the smallest most-likely set whose probability reaches top_p (nucleus);
//   min_p               only tokens whose probability is ≥ min_p × the most likely one's.
// Log-probabilities reported to clients stay those of the raw logits (completions.ts).
import { argmax, type Rng } from '../models/sample.js';

export interface SamplingParams {
  temperature: number;
  topP: number;
  /** 0 = no top-k cut. */
  topK: number;
  /** 0 = no min-p cut. */
  minP: number;
  /** 1 = off. */
  repetitionPenalty: number;
  /** 0 = off. */
  presencePenalty: number;
  /** 0 = off. */
  frequencyPenalty: number;
}

/** Ids of the k largest values, largest first (ties: lower id first). */
export function topKIds(row: ArrayLike<number>, k: number): number[] {
  if (k <= 0) return [];
  const best: number[] = [];
  for (let i = 0; i < row.length; i++) {
    const v = row[i]!;
    if (best.length === k && v <= row[best[k - 1]!]!) continue;
    let j = best.length < k ? best.length : k - 1;
    if (best.length < k) best.push(i);
    while (j > 0 && row[best[j - 1]!]! < v) { best[j] = best[j - 1]!; j--; }
    best[j] = i;
  }
  return best;
}

/** One sequence's sampler: it remembers the prompt and the output for the penalties. */
export class SequenceSampler {
  /** How often each token occurs in the output. */
  private readonly outCounts = new Map<number, number>();
  /** Every token of the prompt and the output (repetition_penalty). */
  private readonly seen = new Set<number>();

  constructor(private readonly p: SamplingParams, prompt: readonly number[], private readonly rng: Rng) {
    for (const id of prompt) this.seen.add(id);
  }

  /** Records a token of the output (sampled, or forced). */
  accept(id: number): void {
    this.outCounts.set(id, (this.outCounts.get(id) ?? 0) + 1);
    this.seen.add(id);
  }

  /** The logits after the penalties (the row itself when no penalty applies). */
  penalised(row: Float32Array): Float32Array {
    const { repetitionPenalty: rp, presencePenalty: pp, frequencyPenalty: fp } = this.p;
    const rep = rp !== 1 && this.seen.size > 0, out = (pp !== 0 || fp !== 0) && this.outCounts.size > 0;
    if (!rep && !out) return row;
    const x = new Float32Array(row);
    if (rep) for (const id of this.seen) x[id] = x[id]! > 0 ? x[id]! / rp : x[id]! * rp;
    if (out) for (const [id, n] of this.outCounts) x[id] = x[id]! - fp * n - pp;
    return x;
  }

  /** The next token for logits `row` [V]. */
  next(row: Float32Array): number {
    const logits = this.penalised(row);
    const { temperature: T, topP, topK, minP } = this.p;
    if (T === 0) return argmax(logits);
    const n = logits.length;
    const max = logits[argmax(logits)]!;
    const p = new Float64Array(n);
    let kept: number[] | null = null;
    if (topK > 0 && topK < n) {
      // In id order, so the draw below walks the same order as over the whole vocabulary.
      kept = topKIds(logits, topK).sort((a, b) => a - b);
      for (const i of kept) p[i] = Math.exp((logits[i]! - max) / T);
    } else {
      for (let i = 0; i < n; i++) p[i] = Math.exp((logits[i]! - max) / T);
    }
    const r = this.rng.next();
    let sum = 0;
    if (kept) for (const i of kept) sum += p[i]!;
    else for (let i = 0; i < n; i++) sum += p[i]!;
    if (topP < 1) {
      // Tokens below (1 − topP)/(n − 1) of the mass can never be inside the nucleus: only the rest is sorted.
      const cutoff = ((1 - topP) / (n - 1)) * sum;
      const cand = (kept ?? Array.from({ length: n }, (_, i) => i)).filter((i) => p[i]! >= cutoff);
      cand.sort((a, b) => p[b]! - p[a]! || a - b);
      let mass = 0, last = cand.length - 1;
      for (let j = 0; j < cand.length; j++) {
        mass += p[cand[j]!]!;
        if (mass >= topP * sum) { last = j; break; }
      }
      kept = cand.slice(0, last + 1);
    }
    if (minP > 0) {
      // The most likely token has p = 1 here (exp of 0); it always survives.
      const survivors: number[] = [];
      if (kept) { for (const i of kept) if (p[i]! >= minP) survivors.push(i); }
      else for (let i = 0; i < n; i++) if (p[i]! >= minP) survivors.push(i);
      kept = survivors;
    }
    if (!kept) {
      let acc = 0;
      const target = r * sum;
      for (let i = 0; i < n; i++) { acc += p[i]!; if (acc > target) return i; }
      return n - 1;
    }
    let mass = 0;
    for (const i of kept) mass += p[i]!;
    const target = r * mass;
    let acc = 0;
    for (const i of kept) { acc += p[i]!; if (acc > target) return i; }
    return kept[kept.length - 1]!;
  }
}
