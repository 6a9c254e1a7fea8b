// The one decoder every family runs (Llama 1–3, Mistral, Qwen2, the converted MLA models, …):
//   x = embed(tokens)
//   per layer: x += attn(rmsnorm(x)); x += mlp(rmsnorm(x))
//   logits = head(rmsnorm(x))
// Weights stay in checkpoint dtype; activations are f32. A layer's attention and MLP are
// behind interfaces (attention.ts, mlp.ts); which ones a checkpoint has is its family's
// business (arch/<family>.ts builds the layers, arch/registry.ts picks the family).
import type { ModelArgs } from './model-args.js';
import type { FloatDType, WeightDType } from '../kernels/types.js';
import { isQuantDType, numel, type Tensor, type WeightSource } from '../tensor.js';
import type { AttentionLayer, MlaMode } from './attention.js';
import { KvCache } from './kv-cache.js';
import type { KvQuant } from './latent-quant.js';
import { Linear } from './linear.js';
import type { Mlp } from './mlp.js';
import { addInPlace, embedRow, rmsNorm } from './ops.js';
import { requireTensor, requireWeight, widen } from './weights.js';
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

export class Decoder {
  readonly config: ModelArgs;
  /** The embedding table (q8_0/q4_0 when the model was loaded quantized: rows are dequantized when looked up). */
  readonly embed: Tensor<WeightDType>;
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

  constructor(config: ModelArgs, embed: Tensor<WeightDType>, layers: DecoderLayer[], norm: Float32Array, head: Linear) {
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
    const embed = requireWeight(src, embeddingName(src, c), [V, D]);
    const head = c.tieWordEmbeddings ? new Linear(embed) : new Linear(requireWeight(src, 'lm_head.weight', [V, D]));
    const layers: DecoderLayer[] = [];
    for (let i = 0; i < c.numLayers; i++) layers.push(layer(src, i));
    const norm = widen(requireTensor(src, 'model.norm.weight', [D]));
    return new Decoder(c, embed, layers, norm, head);
  }

  /**
   * The float dtype of the weights (the embedding's; checkpoints use one dtype throughout): what
   * conversions write. A quantized model's is f32, in which its dequantized weights are exact.
   */
  get weightDtype(): FloatDType {
    const d = this.embed.dtype;
    return isQuantDType(d) ? 'f32' : d;
  }

  /** How the weight matrices are stored: weightDtype, or q8_0/q4_0 for a quantized model. */
  get weightStorage(): WeightDType {
    return this.embed.dtype;
  }

  /** Parameters held, counting a tied embedding/head once. */
  paramCount(): number {
    const seen = new Set<Tensor<WeightDType>>();
    let n = 0;
    const add = (t: Tensor<WeightDType>): void => { if (!seen.has(t)) { seen.add(t); n += numel(t.shape); } };
    add(this.embed);
    add(this.head.weight);
    n += this.norm.length;
    for (const l of this.layers) {
      n += l.inputNorm.length + l.postNorm.length + l.attn.paramCount() + l.mlp.paramCount();
    }
    return n;
  }

  /**
   * How new caches store their rows: f32 (the library default: conversions and their evaluations
   * measure the model, not the cache), or f16/bf16 (the engine commands' default: half the bytes
   * per decode step). A latent layer's quantized cache (setKvQuant) wins over it.
   */
  kvDtype: FloatDType = 'f32';

  newCache(): KvCache {
    return new KvCache(this.layers.map((l) => l.attn.createCache(this.kvDtype)));
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
    const T = tokens.length;
    const D = this.config.hiddenSize, eps = this.config.rmsNormEps;
    if (T === 0) throw new Error('forward needs at least one token');
    if (pos0 > cache.length) throw new Error(`position ${pos0} is past the ${cache.length} cached tokens`);
    if (cache.layers.length !== this.layers.length) throw new Error('cache was made for a different model');
    const w = this.slidingWindow;
    if (w !== null && pos0 + T > w) {
      throw new Error(`this ${this.config.modelType} model uses sliding-window attention (window ${w} tokens) and the engine implements full attention only: ` +
        `${pos0 + T} tokens of context would give wrong results past position ${w}; use a context of at most ${w} tokens`);
    }
    cache.truncate(pos0);
    const ws = this.ws;
    const x = ws.get('x', T * D);
    const xn = ws.get('xn', T * D);
    const y = ws.get('y', T * D);
    for (let t = 0; t < T; t++) embedRow(this.embed, tokens[t]!, D, x.subarray(t * D, (t + 1) * D));
    for (let i = 0; i < this.layers.length; i++) {
      const l = this.layers[i]!;
      rmsNorm(x, T, D, l.inputNorm, eps, xn);
      l.attn.forward(xn, T, pos0, cache.layers[i]!, y, ws);
      addInPlace(x, y, T * D);
      rmsNorm(x, T, D, l.postNorm, eps, xn);
      l.mlp.forward(xn, T, y, ws);
      addInPlace(x, y, T * D);
    }
    cache.length = pos0 + T;
    rmsNorm(x, T, D, this.norm, eps, xn);
    return xn;
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
    const T = tokens.length, D = this.config.hiddenSize, V = this.config.vocabSize;
    const h = this.hidden(tokens, cache, opts.pos0 ?? cache.length);
    if ((opts.logits ?? 'last') === 'last') {
      const out = this.ws.get('logits', V);
      this.logitsFromHidden(h.subarray((T - 1) * D, T * D), 1, out);
      return out;
    }
    const out = this.ws.get('logits', T * V);
    this.logitsFromHidden(h, T, out);
    return out;
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
