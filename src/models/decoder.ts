// The one decoder every family runs (Llama 1–3, Mistral, Qwen2, the converted MLA models, …):
//   x = embed(tokens)
//   per layer: x += attn(rmsnorm(x)); x += mlp(rmsnorm(x))
//   logits = head(rmsnorm(x))
// Weights stay in checkpoint dtype; activations are f32. A layer's attention and MLP are
// behind interfaces (attention.ts, mlp.ts); which ones a checkpoint has is its family's
// business (arch/<family>.ts builds the layers, arch/registry.ts picks the family).
import type { ModelArgs } from './model-args.js';
import type { FloatDType } from '../kernels/types.js';
import { numel, type Tensor, type WeightSource } from '../tensor.js';
import type { AttentionLayer, BatchSequence, MlaMode } from './attention.js';
import { KvCache } from './kv-cache.js';
import type { KvQuant } from './latent-quant.js';
import { Linear } from './linear.js';
import type { Mlp } from './mlp.js';
import { addInPlace, embedRow, rmsNorm } from './ops.js';
import { requireTensor, widen } from './weights.js';
import { Workspace } from './workspace.js';

export interface DecoderLayer {
  inputNorm: Float32Array;
  attn: AttentionLayer;
  postNorm: Float32Array;
  mlp: Mlp;
}

/** Builds decoder layer l from a checkpoint (arch/<family>.ts supplies it). */
export type LayerBuilder = (src: WeightSource, l: number) => DecoderLayer;

/** An RMSNorm weight [D], widened to f32. */
export function normWeight(src: WeightSource, name: string, D: number): Float32Array {
  return widen(requireTensor(src, name, [D]));
}

/** The embedding's tensor name: tied heads are stored under either name (some exporters keep only lm_head.weight). */
export function embeddingName(src: Pick<WeightSource, 'has'>, c: Pick<ModelArgs, 'tieWordEmbeddings'>): string {
  return src.has('model.embed_tokens.weight') || !c.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
}

export type LogitsMode = 'all' | 'last';

/** One sequence of a batched step: new tokens (≥ 1), its cache, and where they start (default: the cache length). */
export interface BatchInput {
  tokens: ArrayLike<number>;
  cache: KvCache;
  pos0?: number;
}

export class Decoder {
  readonly config: ModelArgs;
  readonly embed: Tensor;
  readonly layers: DecoderLayer[];
  readonly norm: Float32Array;
  readonly head: Linear;
  /** Scratch shared by all layers; results returned by forward() live here until the next call. */
  readonly ws = new Workspace();
  /**
   * The config's sliding attention window (null: full attention). The engine attends to the whole
   * context, so it refuses to compute positions past the window instead of returning wrong logits.
   */
  readonly slidingWindow: number | null;

  constructor(config: ModelArgs, embed: Tensor, layers: DecoderLayer[], norm: Float32Array, head: Linear) {
    this.config = config;
    this.embed = embed;
    this.layers = layers;
    this.norm = norm;
    this.head = head;
    this.slidingWindow = config.slidingWindow;
  }

  /** Embedding, final norm and head from `src`, and decoder layers from the family's builder. */
  static build(c: ModelArgs, src: WeightSource, layer: LayerBuilder): Decoder {
    const D = c.hiddenSize, V = c.vocabSize;
    const embed = requireTensor(src, embeddingName(src, c), [V, D]);
    const head = c.tieWordEmbeddings ? new Linear(embed) : new Linear(requireTensor(src, 'lm_head.weight', [V, D]));
    const layers: DecoderLayer[] = [];
    for (let i = 0; i < c.numLayers; i++) layers.push(layer(src, i));
    const norm = widen(requireTensor(src, 'model.norm.weight', [D]));
    return new Decoder(c, embed, layers, norm, head);
  }

  /** The dtype the weights are stored in (the embedding's; checkpoints use one dtype throughout). */
  get weightDtype(): FloatDType {
    return this.embed.dtype;
  }

  /** Parameters held, counting a tied embedding/head once. */
  paramCount(): number {
    const seen = new Set<Tensor>();
    let n = 0;
    const add = (t: Tensor): void => { if (!seen.has(t)) { seen.add(t); n += numel(t.shape); } };
    add(this.embed);
    add(this.head.weight);
    n += this.norm.length;
    for (const l of this.layers) {
      n += l.inputNorm.length + l.postNorm.length + l.attn.paramCount() + l.mlp.paramCount();
    }
    return n;
  }

  newCache(): KvCache {
    return new KvCache(this.layers.map((l) => l.attn.createCache()));
  }

  /** FLOPs of a forward over T tokens after pos0 cached ones, with logits for `logitRows` rows. */
  flops(T: number, pos0: number, logitRows = T): number {
    let f = this.head.flops(logitRows);
    for (const l of this.layers) f += l.attn.flops(T, pos0) + l.mlp.flops(T);
    return f;
  }

  /**
   * Runs tokens at positions pos0..pos0+T−1 (pos0 defaults to the cache length; a smaller pos0
   * rewinds the cache) and returns the final-normed hidden states [T×D] (a workspace view).
   */
  hidden(tokens: ArrayLike<number>, cache: KvCache, pos0 = cache.length): Float32Array {
    return this.hiddenBatch([{ tokens, cache, pos0 }]);
  }

  /**
   * Several sequences in one step, each with its own cache and ≥ 1 new tokens (decode steps of
   * concurrent requests, prefill chunks, calibration samples): the embedding, norms, every
   * projection and the MLP run over all rows at once (one GEMM per weight instead of one GEMV
   * per sequence); attention runs per sequence against its own cache. Returns the final-normed
   * hidden states [ΣT×D], sequence after sequence (a workspace view); the same numbers as one
   * hidden() call per sequence.
   */
  hiddenBatch(seqs: readonly BatchInput[]): Float32Array {
    const D = this.config.hiddenSize, eps = this.config.rmsNormEps;
    if (seqs.length === 0) throw new Error('a batch needs at least one sequence');
    const layerSeqs: BatchSequence[][] = this.layers.map(() => []);
    let N = 0;
    const pos0s = seqs.map((s) => {
      const T = s.tokens.length, cache = s.cache, pos0 = s.pos0 ?? cache.length;
      if (T === 0) throw new Error('forward needs at least one token');
      if (pos0 > cache.length) throw new Error(`position ${pos0} is past the ${cache.length} cached tokens`);
      if (cache.layers.length !== this.layers.length) throw new Error('cache was made for a different model');
      const w = this.slidingWindow;
      if (w !== null && pos0 + T > w) {
        throw new Error(`this ${this.config.modelType} model uses sliding-window attention (window ${w} tokens) and the engine implements full attention only: ` +
          `${pos0 + T} tokens of context would give wrong results past position ${w}; use a context of at most ${w} tokens`);
      }
      for (let i = 0; i < this.layers.length; i++) layerSeqs[i]!.push({ T, pos0, cache: cache.layers[i]! });
      N += T;
      return pos0;
    });
    if (new Set(seqs.map((s) => s.cache)).size !== seqs.length) throw new Error('a cache appears twice in one batch');
    seqs.forEach((s, i) => s.cache.truncate(pos0s[i]!));
    const ws = this.ws;
    const x = ws.get('x', N * D);
    const xn = ws.get('xn', N * D);
    const y = ws.get('y', N * D);
    let row = 0;
    for (const s of seqs) {
      for (let t = 0; t < s.tokens.length; t++, row++) embedRow(this.embed, s.tokens[t]!, D, x.subarray(row * D, (row + 1) * D));
    }
    for (let i = 0; i < this.layers.length; i++) {
      const l = this.layers[i]!;
      rmsNorm(x, N, D, l.inputNorm, eps, xn);
      l.attn.forwardBatch(xn, layerSeqs[i]!, y, ws);
      addInPlace(x, y, N * D);
      rmsNorm(x, N, D, l.postNorm, eps, xn);
      l.mlp.forward(xn, N, y, ws);
      addInPlace(x, y, N * D);
    }
    seqs.forEach((s, i) => { s.cache.length = pos0s[i]! + s.tokens.length; });
    rmsNorm(x, N, D, this.norm, eps, xn);
    return xn;
  }

  /**
   * forward() for several sequences at once (hiddenBatch): 'last' → [S×V], the last token's
   * logits of each sequence in order; 'all' → [ΣT×V]. A workspace view, valid until the next call.
   */
  forwardBatch(seqs: readonly BatchInput[], opts: { logits?: LogitsMode } = {}): Float32Array {
    const D = this.config.hiddenSize, V = this.config.vocabSize;
    const h = this.hiddenBatch(seqs);
    const N = seqs.reduce((n, s) => n + s.tokens.length, 0);
    if ((opts.logits ?? 'last') === 'all') {
      const out = this.ws.get('logits', N * V);
      this.logitsFromHidden(h, N, out);
      return out;
    }
    const S = seqs.length;
    // The last rows, gathered so the head runs as one GEMM over S rows.
    const last = S === 1 ? h.subarray((N - 1) * D, N * D) : this.ws.get('last_hidden', S * D);
    if (S > 1) {
      let end = 0;
      seqs.forEach((s, i) => { end += s.tokens.length; last.set(h.subarray((end - 1) * D, end * D), i * D); });
    }
    const out = this.ws.get('logits', S * V);
    this.logitsFromHidden(last, S, out);
    return out;
  }

  /** logits [rows×V] for `rows` rows of final hidden states. */
  logitsFromHidden(h: Float32Array, rows: number, out: Float32Array): void {
    this.head.forward(h, rows, out);
  }

  /**
   * Logits for the new tokens: 'all' → [T×V], 'last' → [V] for the last token. The array is a
   * workspace view, valid until the next call (copy it to keep it).
   */
  forward(tokens: ArrayLike<number>, cache: KvCache, opts: { pos0?: number; logits?: LogitsMode } = {}): Float32Array {
    return this.forwardBatch([{ tokens, cache, pos0: opts.pos0 ?? cache.length }], { logits: opts.logits });
  }
}

/** Sets the attention form of every latent-cache (MLA) layer of a model (tests compare the forms). */
export function setMlaMode(model: Decoder, mode: MlaMode): void {
  for (const l of model.layers) if (l.attn.latent) l.attn.latent.mode = mode;
}

/**
 * Quantizes the latent cache of every layer (latent-quant.ts) for caches created from now on;
 * null returns to f32. Only latent-cache (MLA) layers have a latent to quantize.
 */
export function setKvQuant(model: Decoder, q: KvQuant | null): void {
  for (const l of model.layers) {
    if (!l.attn.latent) throw new Error(`--kv-quant needs an MLA model (a latent cache); this model has ${l.attn.constructor.name} layers`);
  }
  for (const l of model.layers) l.attn.latent!.kvQuant = q;
}
