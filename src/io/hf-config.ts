// Hugging Face config.json for the Llama family (llama, mistral, qwen2, smollm = llama),
// normalised into one shape the engine and converter use.
import { chmodSync, copyFileSync, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { preview } from './preview.js';

export type RopeScaling =
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number };

export interface LlamaConfig {
  /** Source model_type: 'llama' | 'mistral' | 'qwen2'. */
  modelType: 'llama' | 'mistral' | 'qwen2';
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (qwen2 always; llama when attention_bias). */
  attentionBias: boolean;
  /** o_proj bias (llama attention_bias=true); qwen2 has none. */
  oBias: boolean;
  mlpBias: boolean;
  bosTokenId: number | null;
  eosTokenId: number | number[] | null;
  /** Checkpoint dtype from torch_dtype/dtype, when stated. */
  torchDtype: 'float32' | 'float16' | 'bfloat16' | null;
  /** The original JSON, carried so writers can preserve unknown keys. */
  raw: Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// Parsing

export class HfConfigError extends Error {
  override name = 'HfConfigError';
}

type ModelType = LlamaConfig['modelType'];

/** Causal-LM architecture class → model_type we accept. */
const ARCHITECTURES: Record<string, ModelType> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
};
const MODEL_TYPES: readonly ModelType[] = ['llama', 'mistral', 'qwen2'];

/** transformers' max_position_embeddings defaults per model type (used only when the key is absent). */
const DEFAULT_MAX_POSITIONS: Record<ModelType, number> = { llama: 2048, mistral: 4096 * 32, qwen2: 32768 };

const DTYPES = ['float32', 'float16', 'bfloat16'] as const;

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Normalises a Llama-family config.json (llama, mistral, qwen2; SmolLM is model_type llama).
 * Every problem is reported as `<file>: <key> …`.
 */
export function parseLlamaConfig(json: unknown, fileNameForErrors: string): LlamaConfig {
  const file = fileNameForErrors;
  const err = (key: string, msg: string): never => {
    throw new HfConfigError(`${file}: ${key} ${msg}`);
  };
  if (!isObj(json)) throw new HfConfigError(`${file}: expected a JSON object`);
  const c = json;
  const has = (k: string) => c[k] !== undefined && c[k] !== null;

  const posInt = (k: string, dflt?: number): number => {
    const v = c[k];
    if (v === undefined || v === null) {
      if (dflt === undefined) err(k, 'is required');
      return dflt!;
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) err(k, `must be a positive integer, got ${preview(v)}`);
    return v as number;
  };
  const posNum = (k: string, v: unknown, dflt?: number): number => {
    if (v === undefined || v === null) {
      if (dflt === undefined) err(k, 'is required');
      return dflt!;
    }
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) err(k, `must be a positive number, got ${preview(v)}`);
    return v as number;
  };
  const bool = (k: string, dflt: boolean): boolean => {
    const v = c[k];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') err(k, `must be true or false, got ${preview(v)}`);
    return v as boolean;
  };
  const tokenId = (k: string): number | null => {
    const v = c[k];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) err(k, `must be a non-negative integer, got ${preview(v)}`);
    return v as number;
  };

  // Model type: model_type decides; architectures, when present, must name a supported causal LM.
  const supportedList = `supported: model_type ${MODEL_TYPES.join(', ')} (SmolLM checkpoints are llama); architectures ${Object.keys(ARCHITECTURES).join(', ')}`;
  let archType: ModelType | null = null;
  if (has('architectures')) {
    const a = c.architectures;
    if (!Array.isArray(a) || !a.every((x) => typeof x === 'string')) err('architectures', 'must be an array of strings');
    const names = a as string[];
    // Own keys only: "toString" or "__proto__" must not match Object.prototype members.
    const known = names.find((n) => Object.hasOwn(ARCHITECTURES, n));
    if (!known) err('architectures', `${preview(names)} is not supported (${supportedList})`);
    archType = ARCHITECTURES[known!]!;
  }
  let modelType: ModelType;
  if (has('model_type')) {
    const mt = c.model_type;
    if (typeof mt !== 'string' || !(MODEL_TYPES as readonly string[]).includes(mt)) err('model_type', `${preview(mt)} is not supported (${supportedList})`);
    modelType = mt as ModelType;
    if (archType && archType !== modelType) err('architectures', `name ${archType} models but model_type is ${modelType}`);
  } else if (archType) {
    modelType = archType;
  } else {
    throw new HfConfigError(`${file}: neither model_type nor architectures is given (${supportedList})`);
  }

  if (has('quantization_config')) {
    const m = isObj(c.quantization_config) ? c.quantization_config.quant_method : undefined;
    const method = typeof m === 'string' ? m.slice(0, 80) : m === undefined || m === null ? 'unknown' : preview(m);
    err('quantization_config', `declares a quantized checkpoint (${method}); only float32/float16/bfloat16 weights are supported`);
  }
  if (has('hidden_act') && c.hidden_act !== 'silu') err('hidden_act', `${preview(c.hidden_act)} is not supported (only silu)`);

  const hiddenSize = posInt('hidden_size');
  const intermediateSize = posInt('intermediate_size');
  const numLayers = posInt('num_hidden_layers');
  const numHeads = posInt('num_attention_heads');
  const numKvHeads = posInt('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) err('num_attention_heads', `(${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  if (!has('head_dim') && hiddenSize % numHeads !== 0) err('hidden_size', `(${hiddenSize}) is not divisible by num_attention_heads (${numHeads}) and no head_dim is given`);
  const headDim = posInt('head_dim', hiddenSize / numHeads);
  const vocabSize = posInt('vocab_size');
  const rmsNormEps = posNum('rms_norm_eps', c.rms_norm_eps, 1e-6);
  const maxPositionEmbeddings = posInt('max_position_embeddings', DEFAULT_MAX_POSITIONS[modelType]);

  // RoPE: classic top-level rope_theta/rope_scaling, or transformers v5's rope_parameters.
  let ropeTheta: number;
  let scalingRaw: unknown;
  let scalingKey: string;
  if (has('rope_parameters')) {
    const rp = c.rope_parameters;
    if (!isObj(rp)) err('rope_parameters', 'must be an object');
    const p = rp as Record<string, unknown>;
    ropeTheta = posNum('rope_parameters.rope_theta', p.rope_theta ?? c.rope_theta, 10000);
    scalingRaw = p;
    scalingKey = 'rope_parameters';
  } else {
    ropeTheta = posNum('rope_theta', c.rope_theta, 10000);
    scalingRaw = c.rope_scaling;
    scalingKey = 'rope_scaling';
  }
  const ropeScaling = parseRopeScaling(scalingRaw, scalingKey, err);

  const tieWordEmbeddings = bool('tie_word_embeddings', false);
  let attentionBias = false;
  let oBias = false;
  let mlpBias = false;
  if (modelType === 'qwen2') {
    // Qwen2 always has q/k/v biases and never an o_proj bias.
    attentionBias = true;
  } else if (modelType === 'llama') {
    attentionBias = oBias = bool('attention_bias', false);
    mlpBias = bool('mlp_bias', false);
  }

  let eosTokenId: number | number[] | null = null;
  if (Array.isArray(c.eos_token_id)) {
    if (!c.eos_token_id.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) err('eos_token_id', `must be an integer or a list of integers, got ${preview(c.eos_token_id)}`);
    eosTokenId = [...(c.eos_token_id as number[])];
  } else {
    eosTokenId = tokenId('eos_token_id');
  }

  let torchDtype: LlamaConfig['torchDtype'] = null;
  const dtKey = has('dtype') ? 'dtype' : 'torch_dtype';
  const dt = c[dtKey];
  if (dt !== undefined && dt !== null) {
    if (typeof dt !== 'string' || !(DTYPES as readonly string[]).includes(dt)) err(dtKey, `${preview(dt)} is not supported (${DTYPES.join(', ')})`);
    torchDtype = dt as (typeof DTYPES)[number];
  }

  return {
    modelType,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    rmsNormEps,
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings,
    tieWordEmbeddings,
    attentionBias,
    oBias,
    mlpBias,
    bosTokenId: tokenId('bos_token_id'),
    eosTokenId,
    torchDtype,
    raw: c,
  };
}

/**
 * The attention window of a config, or null for full attention: Mistral's `sliding_window`
 * (unless `use_sliding_window` is false), Qwen2's when `use_sliding_window` is true. A query at
 * position p of such a model sees only the last `window` keys; the engine always attends to the
 * whole context, which is exact as long as the context holds at most `window` tokens.
 */
export function slidingWindowOf(c: Pick<LlamaConfig, 'modelType' | 'raw'>): number | null {
  const sw = c.raw.sliding_window, use = c.raw.use_sliding_window;
  if (typeof sw !== 'number' || !Number.isSafeInteger(sw) || sw <= 0) return null;
  if (c.modelType === 'mistral') return use === false ? null : sw;
  if (c.modelType === 'qwen2') return use === true ? sw : null;
  return null;
}

function parseRopeScaling(v: unknown, key: string, err: (key: string, msg: string) => never): RopeScaling | null {
  if (v === undefined || v === null) return null;
  if (!isObj(v)) return err(key, 'must be an object or null');
  const t = v.rope_type ?? v.type;
  const supported = 'supported: none/default, linear, llama3';
  if (t === undefined || t === null || t === 'default') return null;
  if (typeof t !== 'string') return err(`${key}.rope_type`, `must be a string, got ${preview(t)}`);
  const num = (k: string): number => {
    const x = v[k];
    if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0) err(`${key}.${k}`, `must be a positive number, got ${preview(x)}`);
    return x as number;
  };
  if (t === 'linear') return { type: 'linear', factor: num('factor') };
  if (t === 'llama3') {
    const lowFreqFactor = num('low_freq_factor');
    const highFreqFactor = num('high_freq_factor');
    if (!(highFreqFactor > lowFreqFactor)) err(`${key}.high_freq_factor`, `(${highFreqFactor}) must exceed low_freq_factor (${lowFreqFactor})`);
    const omp = v.original_max_position_embeddings;
    if (typeof omp !== 'number' || !Number.isSafeInteger(omp) || omp <= 0) err(`${key}.original_max_position_embeddings`, `must be a positive integer, got ${preview(omp)}`);
    return { type: 'llama3', factor: num('factor'), lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: omp as number };
  }
  return err(`${key}.rope_type`, `${preview(t)} is not supported (${supported})`);
}

/** Reads and parses `<folder>/config.json`. */
export function readLlamaConfig(folder: string): LlamaConfig {
  const path = join(folder, 'config.json');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new HfConfigError(code === 'ENOENT' ? `${folder} has no config.json` : `${path}: cannot read: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new HfConfigError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
  return parseLlamaConfig(json, path);
}

/** Files of an HF folder that travel verbatim with converted weights. */
export const HF_EXTRA_FILES: readonly string[] = [
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'vocab.txt',
  'chat_template.json',
  'chat_template.jinja',
];

/** true for file names writeHfFolderExtras copies (also used to pick Hub downloads). */
export function isHfExtraFile(name: string): boolean {
  return HF_EXTRA_FILES.includes(name) || name.endsWith('.jinja');
}

/**
 * Copies generation config, tokenizer and chat-template files from srcDir to outDir verbatim
 * (the ones present). Returns the names copied.
 */
export function writeHfFolderExtras(srcDir: string, outDir: string): string[] {
  const copied: string[] = [];
  for (const name of readdirSync(srcDir).sort()) {
    if (!isHfExtraFile(name)) continue;
    const src = join(srcDir, name);
    if (!statSync(src).isFile()) continue;
    const dst = join(outDir, name);
    if (existsSync(dst)) throw new HfConfigError(`${dst} already exists; refusing to overwrite it with ${src}`);
    copyFileSync(src, dst);
    // copyFileSync keeps the source mode; read-only sources would give a read-only output.
    chmodSync(dst, 0o644);
    copied.push(name);
  }
  return copied;
}
