// What a model family declares: one file per family (arch/<family>.ts), registered in
// arch/registry.ts. Everything that differs between families is here — which configs it reads,
// how, the tensor names (Hugging Face and GGUF), how its decoder layers are built for the engine
// and for training, and which conversions it supports — so loading, calibration, conversion,
// training, validation, describe and bench ask the family instead of switching on model_type.
import type { GgufFile } from '../io/gguf.js';
import type { GgufTensorSpec } from '../io/gguf-model.js';
import type { AttentionSummary, MlaMode } from '../models/attention.js';
import type { LayerBuilder } from '../models/decoder.js';
import type { TrainBackend } from '../train/backend.js';
import type { TrainAttention } from '../train/layers/attention.js';
import type { TrainMlp } from '../train/layers/mlp.js';
import type { ParamStore } from '../train/params.js';
import type { ModelArgs } from './args.js';

/** A conversion method of convert/ ('transmla', 'mha2mla'). */
export type ConversionMethod = 'transmla' | 'mha2mla';

/** true, or the reason a family refuses (shown to the user as is). */
export type Support = true | string;

/** Options of the engine's layer construction. */
export interface EngineOptions {
  /** MLA layers: the attention form (default 'auto'). */
  mode?: MlaMode;
  /** Llama layers: how q/k rows pair RoPE elements as stored ('half' for HF checkpoints, the default). */
  ropeLayout?: 'half' | 'interleaved';
  /**
   * MLA layers: RoPE frequencies of the d_R/2 pairs overriding θ^(−2i/d_R) from the config.
   * Only the converter's intermediate (exact, untruncated) forms need this.
   */
  ropeInvFreq?: Float64Array;
}

/** How a family's models are stored in llama.cpp's GGUF. */
export interface GgufForm<A extends ModelArgs> {
  /** general.architecture values this family reads. */
  archs: readonly string[];
  /**
   * Whether this family reads a file of one of its archs, when it shares the arch with another
   * family (Mixtral is llama.cpp's "llama" with experts). Families that declare it are asked
   * first; a form without it takes the files of its archs nobody claimed.
   */
  claims?(f: GgufFile, arch: string): boolean;
  /** The model's arguments from the GGUF metadata and tensor table. */
  readArgs(f: GgufFile, arch: string, path: string): A;
  /**
   * Every tensor of a model with these arguments (`embedName`: the HF name its embedding is read
   * under): in file `f` when reading one, or the tensors a writer stores (no `f`).
   */
  tensors(args: A, arch: string, embedName: string, f?: GgufFile): GgufTensorSpec[];
  /** Tensors a file may hold beyond `tensors` (e.g. llama3's rope_freqs). */
  extraTensors?: readonly string[];
}

/** A family's attention as `inspect` reports it, known from the arguments alone (no layer is built). */
export interface AttentionLayout {
  summary: AttentionSummary;
  /** Whether the layers cache a latent (what --kv-quant quantizes). */
  latent: boolean;
  /** Per layer, the widths of its cache stores (values per token), as the built layer's createCache() makes them. */
  cacheStores: number[][];
}

export interface ParseContext {
  modelType: string;
  /** The model folder (for side files such as transmla.json); null for configs held in memory. */
  folder: string | null;
}

export interface Family<A extends ModelArgs = ModelArgs> {
  /** Registry id (ModelArgs.family). */
  readonly id: string;
  /** config.json model_type values it reads. */
  readonly modelTypes: readonly string[];
  /** Causal-LM class names it reads (config.json architectures) → the model_type they mean. */
  readonly architectures: Readonly<Record<string, string>>;
  /**
   * Whether this family reads a config.json (default: model_type, else architectures, among the
   * above). A family whose files carry a marker key (the MHA2MLA variant) says so here.
   */
  claims?(json: Record<string, unknown>): boolean;
  /** Parses config.json, whose model type the registry has resolved. */
  parse(json: Record<string, unknown>, file: string, ctx: ParseContext): A;
  /** The engine's decoder layer builder for a model with these arguments. */
  engineLayers(args: A, opts?: EngineOptions): LayerBuilder;
  /** What the attention caches and how inspect names it, from the arguments alone (inspect reads no weights). */
  attentionLayout(args: A): AttentionLayout;
  /** How inspect names the MLP from the arguments alone (default: the dense intermediate width). */
  mlpSummary?(args: A): string;
  /** The trainer's attention and MLP of layer l (`prefix` = model.layers.l); norms, embedding and head are shared. */
  trainLayers(be: TrainBackend, ps: ParamStore, args: A): (l: number, prefix: string) => { attn: TrainAttention; mlp: TrainMlp };
  /** Parameter names `finetune --train attention` trains: those a conversion rewrote. */
  attentionParams(name: string): boolean;
  /** Which conversions take a model of this family as their source. */
  conversions: Record<ConversionMethod, Support>;
  /** Reading llama.cpp GGUFs of this family, when it has a GGUF form. */
  gguf?: GgufForm<A>;
  /** Whether a model of this family can be written as a llama.cpp GGUF (export/gguf.ts writes it), when it depends on the model. */
  ggufExport: Support | ((args: A) => Support);
}
