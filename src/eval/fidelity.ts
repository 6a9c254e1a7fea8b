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
  const refLp = new Float64Array(V), refP = new Float64Array(V), lp = new Float64Array(V);
  const nll = new Float64Array(all.length), kl = new Float64Array(all.length), agree = new Float64Array(all.length);
  for (let c = 0; c < chunks; c++) {
    const chunk = ids.slice(c * ctx, (c + 1) * ctx);
    all.forEach((m, i) => hidden[i]!.set(m.hidden(chunk, caches[i]!, 0)));
    for (let r0 = 0; r0 < ctx - 1; r0 += block) {
      const rows = Math.min(block, ctx - 1 - r0);
      all.forEach((m, i) => m.logitsFromHidden(hidden[i]!.subarray(r0 * D, (r0 + rows) * D), rows, logits[i]!));
      for (let r = 0; r < rows; r++) {
        const target = chunk[r0 + r + 1]!;
        const refArg = logSoftmaxRow(logits[0]!.subarray(r * V, (r + 1) * V), refLp);
        nll[0]! -= refLp[target]!;
        agree[0]! += 1;
        for (let v = 0; v < V; v++) refP[v] = Math.exp(refLp[v]!);
        for (let i = 1; i < all.length; i++) {
          const arg = logSoftmaxRow(logits[i]!.subarray(r * V, (r + 1) * V), lp);
          nll[i]! -= lp[target]!;
          let k = 0;
          for (let v = 0; v < V; v++) k += refP[v]! * (refLp[v]! - lp[v]!);
          kl[i]! += k;
          if (arg === refArg) agree[i]! += 1;
        }
      }
    }
    opts.onProgress?.((c + 1) * ctx, chunks * ctx);
    // Yield between chunks (progress reaches the pipe; a pending SIGINT/SIGTERM stops here).
    await interruptPoint();
  }
  const n = chunks * (ctx - 1);
  const score = (i: number): ModelScore => ({ ppl: Math.exp(nll[i]! / n), nll: nll[i]! / n, kl: kl[i]! / n, top1: agree[i]! / n });
  return {
    reference: score(0),
    models: models.map((_, i) => score(i + 1)),
    predictions: n, chunks, chunksAvailable: available, ctx,
    convention: conventionText(ctx, bos),
  };
}
