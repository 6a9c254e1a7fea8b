// What every decoder family shares (in the spirit of mlx-lm's BaseModelArgs): the arguments the
// engine, the converter and the trainer read of any model, and the config.json field readers the
// family files parse them with. A family file (arch/<family>.ts) adds its own fields on top.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { preview } from '../io/preview.js';
import type { ModelArgs } from '../models/model-args.js';
import type { RopeScaling } from '../models/rope.js';

export type { ModelArgs } from '../models/model-args.js';
export type { RopeScaling } from '../models/rope.js';


export class HfConfigError extends Error {
  override name = 'HfConfigError';
}

export function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const DTYPES = ['float32', 'float16', 'bfloat16'] as const;

/** Typed readers over one config.json; every problem is reported as `<file>: <key> …`. */
export class ConfigFields {
  constructor(readonly c: Record<string, unknown>, readonly file: string) {}

  err(key: string, msg: string): never {
    throw new HfConfigError(`${this.file}: ${key} ${msg}`);
  }

  has(k: string): boolean {
    return this.c[k] !== undefined && this.c[k] !== null;
  }

  posInt(k: string, dflt?: number): number {
    const v = this.c[k];
    if (v === undefined || v === null) {
      if (dflt === undefined) this.err(k, 'is required');
      return dflt!;
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) this.err(k, `must be a positive integer, got ${preview(v)}`);
    return v as number;
  }

  /** A positive number `v` named `k` (the value is passed: rope_theta may live in rope_parameters). */
  posNum(k: string, v: unknown, dflt?: number): number {
    if (v === undefined || v === null) {
      if (dflt === undefined) this.err(k, 'is required');
      return dflt!;
    }
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.err(k, `must be a positive number, got ${preview(v)}`);
    return v as number;
  }

  bool(k: string, dflt: boolean): boolean {
    const v = this.c[k];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.err(k, `must be true or false, got ${preview(v)}`);
    return v as boolean;
  }

  tokenId(k: string): number | null {
    const v = this.c[k];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) this.err(k, `must be a non-negative integer, got ${preview(v)}`);
    return v as number;
  }
}

/**
 * Which model_type a config declares, given what one family accepts: model_type decides;
 * architectures, when present, must name one of `architectures`. `supported` ends the error
 * messages (what the registry as a whole accepts).
 */
export function resolveModelType(f: ConfigFields, architectures: Record<string, string>, modelTypes: readonly string[], supported: string): string {
  let archType: string | null = null;
  if (f.has('architectures')) {
    const a = f.c.architectures;
    if (!Array.isArray(a) || !a.every((x) => typeof x === 'string')) f.err('architectures', 'must be an array of strings');
    const names = a as string[];
    // Own keys only: "toString" or "__proto__" must not match Object.prototype members.
    const known = names.find((n) => Object.hasOwn(architectures, n));
    if (!known) f.err('architectures', `${preview(names)} is not supported (${supported})`);
    archType = architectures[known!]!;
  }
  if (f.has('model_type')) {
    const mt = f.c.model_type;
    if (typeof mt !== 'string' || !modelTypes.includes(mt)) f.err('model_type', `${preview(mt)} is not supported (${supported})`);
    if (archType && archType !== mt) f.err('architectures', `name ${archType} models but model_type is ${String(mt)}`);
    return mt as string;
  }
  if (archType) return archType;
  throw new HfConfigError(`${f.file}: neither model_type nor architectures is given (${supported})`);
}

/** The fields every family reads the same way (norms, RoPE, vocabulary, token ids, dtype). */
export type BaseFields = Omit<ModelArgs, 'family' | 'modelType' | 'attentionBias' | 'oBias' | 'mlpBias' | 'slidingWindow'>;

/**
 * Parses the shared fields. `defaultMaxPositions` is transformers' default for the model type,
 * used only when max_position_embeddings is absent.
 */
export function parseBaseFields(f: ConfigFields, defaultMaxPositions: number): BaseFields {
  const c = f.c;
  if (f.has('quantization_config')) {
    const m = isObj(c.quantization_config) ? c.quantization_config.quant_method : undefined;
    const method = typeof m === 'string' ? m.slice(0, 80) : m === undefined || m === null ? 'unknown' : preview(m);
    f.err('quantization_config', `declares a quantized checkpoint (${method}); only float32/float16/bfloat16 weights are supported`);
  }
  if (f.has('hidden_act') && c.hidden_act !== 'silu') f.err('hidden_act', `${preview(c.hidden_act)} is not supported (only silu)`);

  const hiddenSize = f.posInt('hidden_size');
  const intermediateSize = f.posInt('intermediate_size');
  const numLayers = f.posInt('num_hidden_layers');
  const numHeads = f.posInt('num_attention_heads');
  const numKvHeads = f.posInt('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) f.err('num_attention_heads', `(${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  if (!f.has('head_dim') && hiddenSize % numHeads !== 0) f.err('hidden_size', `(${hiddenSize}) is not divisible by num_attention_heads (${numHeads}) and no head_dim is given`);
  const headDim = f.posInt('head_dim', hiddenSize / numHeads);
  const vocabSize = f.posInt('vocab_size');
  const rmsNormEps = f.posNum('rms_norm_eps', c.rms_norm_eps, 1e-6);
  const maxPositionEmbeddings = f.posInt('max_position_embeddings', defaultMaxPositions);

  // RoPE: classic top-level rope_theta/rope_scaling, or transformers v5's rope_parameters.
  let ropeTheta: number;
  let scalingRaw: unknown;
  let scalingKey: string;
  if (f.has('rope_parameters')) {
    const rp = c.rope_parameters;
    if (!isObj(rp)) f.err('rope_parameters', 'must be an object');
    const p = rp as Record<string, unknown>;
    ropeTheta = f.posNum('rope_parameters.rope_theta', p.rope_theta ?? c.rope_theta, 10000);
    scalingRaw = p;
    scalingKey = 'rope_parameters';
  } else {
    ropeTheta = f.posNum('rope_theta', c.rope_theta, 10000);
    scalingRaw = c.rope_scaling;
    scalingKey = 'rope_scaling';
  }
  const ropeScaling = parseRopeScaling(scalingRaw, scalingKey, (k, m) => f.err(k, m));

  let eosTokenId: number | number[] | null = null;
  if (Array.isArray(c.eos_token_id)) {
    if (!c.eos_token_id.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) f.err('eos_token_id', `must be an integer or a list of integers, got ${preview(c.eos_token_id)}`);
    eosTokenId = [...(c.eos_token_id as number[])];
  } else {
    eosTokenId = f.tokenId('eos_token_id');
  }

  let torchDtype: ModelArgs['torchDtype'] = null;
  const dtKey = f.has('dtype') ? 'dtype' : 'torch_dtype';
  const dt = c[dtKey];
  if (dt !== undefined && dt !== null) {
    if (typeof dt !== 'string' || !(DTYPES as readonly string[]).includes(dt)) f.err(dtKey, `${preview(dt)} is not supported (${DTYPES.join(', ')})`);
    torchDtype = dt as (typeof DTYPES)[number];
  }

  return {
    hiddenSize, intermediateSize, numLayers, numHeads, numKvHeads, headDim, vocabSize, rmsNormEps,
    ropeTheta, ropeScaling, maxPositionEmbeddings,
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    bosTokenId: f.tokenId('bos_token_id'),
    eosTokenId,
    torchDtype,
    raw: c,
  };
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

/** The HF JSON form of a parsed rope scaling (written back top-level, as DeepSeek configs do). */
export function ropeScalingJson(s: RopeScaling | null): Record<string, unknown> | null {
  if (!s) return null;
  if (s.type === 'linear') return { rope_type: 'linear', factor: s.factor };
  return {
    rope_type: 'llama3',
    factor: s.factor,
    low_freq_factor: s.lowFreqFactor,
    high_freq_factor: s.highFreqFactor,
    original_max_position_embeddings: s.originalMaxPositionEmbeddings,
  };
}

/** `<folder>/config.json`, parsed; errors name the file. */
export function readConfigJson(folder: string): unknown {
  const path = join(folder, 'config.json');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new HfConfigError(code === 'ENOENT' ? `${folder} has no config.json` : `${path}: cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HfConfigError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
}
