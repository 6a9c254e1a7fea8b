// How closely converted models follow the original on the same held-out tokens. (docs/methods.md#kl-top1) Every model
// forwards the same chunks (the perplexity convention of perplexity.ts: non-overlapping ctx
// chunks from an empty cache, ctx − 1 predictions each); per predicted position we take
//   KL(p_ref ‖ p_model) = Σ_v p_ref(v)·(log p_ref(v) − log p_model(v))      (nats)
// and whether the argmax tokens agree, and average over all positions. Each model's own
// perplexity comes out of the same pass, so one run yields every stage's numbers.
import type { Decoder } from '../models/decoder.js';
import type { ModelScore } from '../schema/transmla-json.js';

export type { ModelScore } from '../schema/transmla-json.js';
import { conventionText } from './perplexity.js';
import { interruptPoint } from '../io/interrupt.js';

export interface FidelityOptions {
  ctx: number;
  maxChunks?: number;
  /** Rows of logits computed at once per model (memory: rows × vocab floats per model). Default 128. */
  logitRows?: number;
  onProgress?(done: number, total: number): void;
}

/** One line for a log: the reference shows its perplexity only, the others KL and top-1 as well. */
export function formatScore(s: ModelScore, reference = false): string {
  return reference ? `ppl ${s.ppl.toFixed(4)}` : `ppl ${s.ppl.toFixed(4)}  KL ${s.kl.toFixed(4)}  top-1 ${(100 * s.top1).toFixed(2)} %`;
}

export interface FidelityResult {
  reference: ModelScore;
  models: ModelScore[];
  predictions: number;
  chunks: number;
  chunksAvailable: number;
  ctx: number;
  convention: string;
}

/** log-softmax of one row into out (float64), returning the argmax. */
function logSoftmaxRow(x: Float32Array, out: Float64Array): number {
  let max = -Infinity, arg = 0;
  for (let i = 0; i < x.length; i++) if (x[i]! > max) { max = x[i]!; arg = i; }
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += Math.exp(x[i]! - max);
  const lse = Math.log(sum) + max;
  for (let i = 0; i < x.length; i++) out[i] = x[i]! - lse;
  return arg;
}

/**
 * Sums of NLL, KL(reference ‖ model) and argmax agreement over predicted positions, fed with
 * rows of logits of the reference and of each model at the same positions.
 */
export class FidelityAccumulator {
  private readonly refLp: Float64Array;
  private readonly refP: Float64Array;
  private readonly lp: Float64Array;
  private readonly nll: Float64Array;
  private readonly kl: Float64Array;
  private readonly agree: Float64Array;
  private n = 0;

  constructor(readonly vocab: number, readonly models: number) {
    this.refLp = new Float64Array(vocab); this.refP = new Float64Array(vocab); this.lp = new Float64Array(vocab);
    this.nll = new Float64Array(models + 1); this.kl = new Float64Array(models + 1); this.agree = new Float64Array(models + 1);
  }

  /** `rows` positions: logits[0] the reference's [rows×V], logits[1..] the models'; targets[r] the next token of row r. */
  add(logits: readonly Float32Array[], rows: number, targets: ArrayLike<number>): void {
    const V = this.vocab, { refLp, refP, lp, nll, kl, agree } = this;
    for (let r = 0; r < rows; r++) {
      const target = targets[r]!;
      const refArg = logSoftmaxRow(logits[0]!.subarray(r * V, (r + 1) * V), refLp);
      nll[0]! -= refLp[target]!;
      agree[0]! += 1;
      for (let v = 0; v < V; v++) refP[v] = Math.exp(refLp[v]!);
      for (let i = 1; i <= this.models; i++) {
        const arg = logSoftmaxRow(logits[i]!.subarray(r * V, (r + 1) * V), lp);
        nll[i]! -= lp[target]!;
        let k = 0;
        for (let v = 0; v < V; v++) k += refP[v]! * (refLp[v]! - lp[v]!);
        kl[i]! += k;
        if (arg === refArg) agree[i]! += 1;
      }
    }
    this.n += rows;
  }

  score(i: number): ModelScore {
    const n = this.n;
    return { ppl: Math.exp(this.nll[i]! / n), nll: this.nll[i]! / n, kl: this.kl[i]! / n, top1: this.agree[i]! / n };
  }
}

export async function fidelity(reference: Decoder, models: readonly Decoder[], ids: readonly number[], bos: boolean, opts: FidelityOptions): Promise<FidelityResult> {
  const { ctx } = opts;
  if (!Number.isInteger(ctx) || ctx < 2) throw new Error(`ctx must be an integer ≥ 2, got ${ctx}`);
  const V = reference.config.vocabSize, D = reference.config.hiddenSize;
  for (const m of models) {
    if (m.config.vocabSize !== V || m.config.hiddenSize !== D) throw new Error('fidelity: models must share the vocabulary and hidden size of the reference');
  }
  const available = Math.floor(ids.length / ctx);
  if (available === 0) throw new Error(`the text has ${ids.length} tokens, fewer than one ${ctx}-token chunk`);
  const chunks = Math.min(available, opts.maxChunks ?? available);
  const block = Math.max(1, opts.logitRows ?? 128);
  const all = [reference, ...models];
  const logits = all.map(() => new Float32Array(block * V));
  const hidden = all.map(() => new Float32Array(ctx * D));
  const caches = all.map((m) => { const c = m.newCache(); c.reserve(ctx); return c; });
  const acc = new FidelityAccumulator(V, models.length);
  for (let c = 0; c < chunks; c++) {
    const chunk = ids.slice(c * ctx, (c + 1) * ctx);
    all.forEach((m, i) => hidden[i]!.set(m.hidden(chunk, caches[i]!, 0)));
    for (let r0 = 0; r0 < ctx - 1; r0 += block) {
      const rows = Math.min(block, ctx - 1 - r0);
      all.forEach((m, i) => m.logitsFromHidden(hidden[i]!.subarray(r0 * D, (r0 + rows) * D), rows, logits[i]!));
      acc.add(logits, rows, chunk.slice(r0 + 1, r0 + rows + 1));
    }
    opts.onProgress?.((c + 1) * ctx, chunks * ctx);
    // Yield between chunks (progress reaches the pipe; a pending SIGINT/SIGTERM stops here).
    await interruptPoint();
  }
  return {
    reference: acc.score(0),
    models: models.map((_, i) => acc.score(i + 1)),
    predictions: chunks * (ctx - 1), chunks, chunksAvailable: available, ctx,
    convention: conventionText(ctx, bos),
  };
}
