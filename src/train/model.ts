// The trainable decoder: embedding → blocks (x += attn(norm(x)); x += mlp(norm(x))) → head + loss,
// with an explicit forward and backward per block, llm.c style. The attention and MLP of a
// block are built by the checkpoint's family (arch/<family>.ts trainLayers); norms, embedding
// and head are the same for every family.
import type { ModelArgs } from '../arch/args.js';
import { embeddingName } from '../models/decoder.js';
import { familyFor } from '../arch/registry.js';
import type { FloatDType } from '../kernels/types.js';
import type { WeightSource } from '../tensor.js';
import type { TrainBackend, Vec } from './backend.js';
import type { RowLayout, TrainAttention } from './layers/attention.js';
import { EmbeddingLayer } from './layers/embedding.js';
import { HeadLossLayer, type LossSpec } from './layers/head-loss.js';
import type { TrainMlp } from './layers/mlp.js';
import { RmsNormLayer } from './layers/rmsnorm.js';
import { emptySums, type LossSums } from './loss.js';
import { ParamStore, type TrainSelection } from './params.js';

/** One packed row: tokens, next-token targets (−1: none) and the document layout. */
export interface TrainRow extends RowLayout {
  tokens: Int32Array;
  targets: Int32Array;
}

/**
 * The parameters `--train attention` trains: those the conversion rewrote (the family says
 * which); an unconverted Llama model has all of q/k/v/o trained.
 */
export function attentionParamFilter(arch: ModelArgs): (name: string) => boolean {
  return familyFor(arch).attentionParams;
}

class DecoderBlock {
  readonly inNorm: RmsNormLayer;
  readonly postNorm: RmsNormLayer;
  private T = -1;
  // Activations: block input, normed inputs, reciprocal rms, residual after attention.
  private xin!: Vec; private xn1!: Vec; private r1!: Vec; private xmid!: Vec; private xn2!: Vec; private r2!: Vec;
  private y!: Vec; private dxn!: Vec;

  constructor(private readonly be: TrainBackend, ps: ParamStore, prefix: string, c: ModelArgs, readonly attn: TrainAttention, readonly mlp: TrainMlp) {
    const D = c.hiddenSize;
    this.inNorm = new RmsNormLayer(ps.get(`${prefix}.input_layernorm.weight`, [D]), c.rmsNormEps);
    this.postNorm = new RmsNormLayer(ps.get(`${prefix}.post_attention_layernorm.weight`, [D]), c.rmsNormEps);
  }

  private ensure(T: number): void {
    if (T === this.T) return;
    const D = this.inNorm.D, be = this.be;
    this.xin = be.alloc(T * D); this.xn1 = be.alloc(T * D); this.r1 = be.alloc(T);
    this.xmid = be.alloc(T * D); this.xn2 = be.alloc(T * D); this.r2 = be.alloc(T);
    this.y = be.alloc(T * D); this.dxn = be.alloc(T * D);
    this.T = T;
  }

  /** x [T×D] ← block(x), keeping the activations backward needs. */
  forward(x: Vec, row: RowLayout): void {
    const T = row.T, n = T * this.inNorm.D;
    this.ensure(T);
    this.xin.set(x.subarray(0, n));
    this.inNorm.forward(x, T, this.xn1, this.r1);
    this.attn.forward(this.xn1, row, this.y);
    for (let i = 0; i < n; i++) x[i]! += this.y[i]!;
    this.xmid.set(x.subarray(0, n));
    this.postNorm.forward(x, T, this.xn2, this.r2);
    this.mlp.forward(this.xn2, T, this.y);
    for (let i = 0; i < n; i++) x[i]! += this.y[i]!;
  }

  /** dx: gradient w.r.t. the block output on entry, w.r.t. its input on return. */
  backward(dx: Vec, row: RowLayout): void {
    const T = row.T;
    this.mlp.backward(this.xn2, T, dx, this.dxn);
    this.postNorm.backward(this.xmid, this.r2, this.dxn, T, dx);
    this.attn.backward(this.xn1, row, dx, this.dxn);
    this.inNorm.backward(this.xin, this.r1, this.dxn, T, dx);
  }
}

export class TrainModel {
  readonly params: ParamStore;
  readonly embedding: EmbeddingLayer;
  readonly blocks: DecoderBlock[];
  readonly head: HeadLossLayer;
  private T = -1;
  private x!: Vec;
  private dx!: Vec;

  private constructor(readonly be: TrainBackend, readonly arch: ModelArgs, params: ParamStore, embedding: EmbeddingLayer, blocks: DecoderBlock[], head: HeadLossLayer) {
    this.params = params;
    this.embedding = embedding;
    this.blocks = blocks;
    this.head = head;
  }

  /**
   * Master copies of every tensor of `src`; gradients for the selected parameters only.
   * storedDtype: see ParamStore.load (resuming from fp32 master copies).
   */
  static create(be: TrainBackend, arch: ModelArgs, src: WeightSource, train: TrainSelection, storedDtype?: (name: string) => FloatDType): TrainModel {
    const c = arch;
    const ps = ParamStore.load(be, src, attentionParamFilter(arch), train, storedDtype);
    const D = c.hiddenSize, V = c.vocabSize;
    // A tied head is stored under either name (the engine reads it the same way).
    const embedName = embeddingName(ps, c);
    const embed = ps.get(embedName, [V, D]);
    const headW = c.tieWordEmbeddings ? embed : ps.get('lm_head.weight', [V, D]);
    // Some exporters store a tied head twice (the strict export always does: stock engines need
    // it); the engine reads the embedding, so does training, and the copy is saved from it.
    if (c.tieWordEmbeddings && embedName !== 'lm_head.weight') ps.alias('lm_head.weight', embedName);
    const blocks: DecoderBlock[] = [];
    const makeLayer = familyFor(arch).trainLayers(be, ps, arch);
    for (let i = 0; i < c.numLayers; i++) {
      const p = `model.layers.${i}`;
      const { attn, mlp } = makeLayer(i, p);
      blocks.push(new DecoderBlock(be, ps, p, c, attn, mlp));
    }
    const head = new HeadLossLayer(be, ps.get('model.norm.weight', [D]), headW, c.rmsNormEps);
    ps.checkAllUsed();
    return new TrainModel(be, arch, ps, new EmbeddingLayer(embed), blocks, head);
  }

  private ensure(T: number): void {
    if (T === this.T) return;
    const D = this.arch.hiddenSize;
    this.x = this.be.alloc(T * D);
    this.dx = this.be.alloc(T * D);
    this.T = T;
  }

  private forwardBlocks(row: TrainRow): void {
    const T = row.T;
    if (row.tokens.length !== T || row.targets.length !== T || row.positions.length !== T) throw new Error('row arrays must all have T entries');
    this.ensure(T);
    this.embedding.forward(row.tokens, T, this.x);
    for (const b of this.blocks) b.forward(this.x, row);
  }

  /** Logits [T×V] for a row (a view into the head's buffer, valid until the next call). */
  logits(row: TrainRow): Vec {
    this.forwardBlocks(row);
    return this.head.logitsOf(this.x, row.T);
  }

  /**
   * Forward and backward of one row: parameter gradients accumulate (call params.zeroGrads()
   * per optimizer step). Returns the row's loss sums.
   */
  forwardBackward(row: TrainRow, loss: Omit<LossSpec, 'targets'>): LossSums {
    this.forwardBlocks(row);
    const sums = emptySums();
    const dx = this.dx;
    this.head.forwardBackward(this.x, row.T, { ...loss, targets: row.targets }, dx, sums);
    for (let i = this.blocks.length - 1; i >= 0; i--) this.blocks[i]!.backward(dx, row);
    this.embedding.backward(row.tokens, row.T, dx);
    return sums;
  }
}
