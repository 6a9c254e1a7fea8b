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
import { kernels } from '../kernels/index.js';

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

/**
 * Sums of NLL, KL(reference ‖ model) and argmax agreement over predicted positions, fed with
 * rows of logits of the reference and of each model at the same positions. The per-row work is
 * the kernels' fidelityRows (float64, independent of the thread count); the sums run here, row
 * by row in order, so the totals do not depend on how positions were blocked either.
 */
export class FidelityAccumulator {
  private readonly nll: Float64Array;
  private readonly kl: Float64Array;
  private readonly agree: Float64Array;
  private rowsOut = new Float64Array(0);
  private targets = new Int32Array(0);
  private n = 0;

  constructor(readonly vocab: number, readonly models: number) {
    this.nll = new Float64Array(models + 1); this.kl = new Float64Array(models + 1); this.agree = new Float64Array(models + 1);
  }

  /** `rows` positions: logits[0] the reference's [rows×V], logits[1..] the models'; targets[r] the next token of row r. */
  add(logits: readonly Float32Array[], rows: number, targets: ArrayLike<number>): void {
    const S = this.models + 1;
    if (logits.length !== S) throw new Error(`FidelityAccumulator.add: expected ${S} logit blocks, got ${logits.length}`);
    if (this.targets.length < rows) this.targets = new Int32Array(rows);
    if (this.rowsOut.length < rows * S * 3) this.rowsOut = new Float64Array(rows * S * 3);
    for (let r = 0; r < rows; r++) this.targets[r] = targets[r]!;
    kernels().fidelityRows(logits, rows, this.vocab, this.targets, this.rowsOut);
    const o = this.rowsOut, { nll, kl, agree } = this;
    for (let r = 0; r < rows; r++) {
      for (let s = 0; s < S; s++) {
        const b = (r * S + s) * 3;
        nll[s]! += o[b]!; kl[s]! += o[b + 1]!; agree[s]! += o[b + 2]!;
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
