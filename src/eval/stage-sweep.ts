// Evaluating several models that share an embedding, final norm shape and vocabulary (the stages
// of a conversion: original, partial RoPE, MLA, stock) in one layer-by-layer sweep over the
// evaluation chunks: each model's hidden states live on disk (hidden-states.ts) and go through
// that model's version of layer l, so only layer l of each model is in memory. At the end the
// final norm and head give every position's logits, scored as fidelity() scores them (same
// chunks, same convention, the same numbers: the layer arithmetic is the engine's own).
import type { ModelArgs } from '../models/model-args.js';
import type { DecoderLayer } from '../models/decoder.js';
import type { Linear } from '../models/linear.js';
import { rmsNorm } from '../models/ops.js';
import type { Tensor, WeightDType } from '../tensor.js';
import { interruptPoint } from '../io/interrupt.js';
import { FidelityAccumulator, type FidelityResult } from './fidelity.js';
import { Workspace } from '../models/workspace.js';
import { HiddenStates } from './hidden-states.js';
import { conventionText } from './perplexity.js';

export interface EvalChunks {
  /** Token ids of each chunk (ctx each). */
  chunks: Int32Array[];
  ctx: number;
  bos: boolean;
  /** Whole chunks the text had. */
  available: number;
}

/** The chunks fidelity() would score: non-overlapping ctx-token windows, at most maxChunks. */
export function evalChunks(ids: readonly number[], bos: boolean, ctx: number, maxChunks?: number): EvalChunks {
  if (!Number.isInteger(ctx) || ctx < 2) throw new Error(`ctx must be an integer ≥ 2, got ${ctx}`);
  const available = Math.floor(ids.length / ctx);
  if (available === 0) throw new Error(`the text has ${ids.length} tokens, fewer than one ${ctx}-token chunk`);
  const n = Math.min(available, maxChunks ?? available);
  return { chunks: Array.from({ length: n }, (_, c) => Int32Array.from(ids.slice(c * ctx, (c + 1) * ctx))), ctx, bos, available };
}

export class StageSweep {
  private constructor(readonly args: ModelArgs, readonly data: EvalChunks, private readonly streams: HiddenStates[]) {}

  /** `models` streams (the first is the reference), all starting from the embedding. */
  static open(args: ModelArgs, embed: Tensor<WeightDType>, data: EvalChunks, models: number): StageSweep {
    const streams: HiddenStates[] = [];
    // The streams advance one after another, never inside each other: one scratch for all.
    const ws = new Workspace();
    try {
      for (let i = 0; i < models; i++) streams.push(HiddenStates.fromEmbedding(args, embed, data.chunks, ws));
    } catch (e) {
      for (const s of streams) s.close();
      throw e;
    }
    return new StageSweep(args, data, streams);
  }

  /** Models (streams) in the sweep. */
  get models(): number {
    return this.streams.length;
  }

  get tokens(): number {
    return this.data.chunks.length * this.data.ctx;
  }

  /** Runs stream i through layers[i] (one decoder layer per model). */
  advance(layers: readonly DecoderLayer[]): void {
    if (layers.length !== this.streams.length) throw new Error(`${layers.length} layers for ${this.streams.length} models`);
    this.streams.forEach((s, i) => s.advance(layers[i]!));
  }

  /**
   * Scores models against references from the final states; `finals[i]` is model i's final norm
   * and head. Each comparison gives one FidelityResult (its reference's perplexity, and KL/top-1
   * of each of its models against that reference).
   */
  async finish(finals: readonly { norm: Float32Array; head: Linear }[], comparisons: readonly { reference: number; models: readonly number[] }[], logitRows = 128, onChunk?: (done: number, total: number) => void): Promise<FidelityResult[]> {
    const { ctx, chunks } = this.data, D = this.args.hiddenSize, V = this.args.vocabSize, eps = this.args.rmsNormEps;
    if (finals.length !== this.streams.length) throw new Error(`${finals.length} final norms/heads for ${this.streams.length} models`);
    const block = Math.max(1, logitRows);
    const logits = finals.map(() => new Float32Array(block * V));
    const normed = finals.map(() => new Float32Array(ctx * D));
    const accs = comparisons.map((c) => new FidelityAccumulator(V, c.models.length));
    for (let c = 0; c < chunks.length; c++) {
      this.streams.forEach((s, i) => rmsNorm(s.sample(c), ctx, D, finals[i]!.norm, eps, normed[i]!));
      for (let r0 = 0; r0 < ctx - 1; r0 += block) {
        const rows = Math.min(block, ctx - 1 - r0);
        finals.forEach((f, i) => f.head.forward(normed[i]!.subarray(r0 * D, (r0 + rows) * D), rows, logits[i]!));
        const targets = chunks[c]!.subarray(r0 + 1, r0 + rows + 1);
        comparisons.forEach((cmp, k) => accs[k]!.add([logits[cmp.reference]!, ...cmp.models.map((m) => logits[m]!)], rows, targets));
      }
      onChunk?.(c + 1, chunks.length);
      await interruptPoint();
    }
    return comparisons.map((cmp, k) => ({
      reference: accs[k]!.score(0),
      models: cmp.models.map((_, i) => accs[k]!.score(i + 1)),
      predictions: chunks.length * (ctx - 1), chunks: chunks.length, chunksAvailable: this.data.available, ctx,
      convention: conventionText(ctx, this.data.bos),
    }));
  }

  close(): void {
    for (const s of this.streams) s.close();
  }
}
