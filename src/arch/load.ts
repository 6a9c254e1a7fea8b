// Opens a model for the engine from what a user points at:
//   - a Hugging Face folder (config.json + safetensors [+ tokenizer.json]);
//   - a GGUF file (of a family with a GGUF form: llama, qwen2, deepseek2; F32/F16/BF16 tensors),
//     read lazily under HF tensor names; its tokenizer is --tokenizer, or the HF folder the GGUF
//     sits in if any;
//   - a llama2.c checkpoint (.bin), converted in memory to the HF layout; its tokenizer is
//     --tokenizer, or tokenizer.bin / tok*.bin beside it.
// The folder's family (arch/registry.ts) parses its config and builds its layers.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { finiteSource } from '../io/finite.js';
import { llama2cToHf, readLlama2c } from '../io/llama2c.js';
import { createProgress } from '../io/progress.js';
import { setKvQuant, type Decoder } from '../models/decoder.js';
import type { KvQuant } from '../models/latent-quant.js';
import type { Tensor, WeightSource } from '../tensor.js';
import { Llama2cTokenizer } from '../tokenizer/llama2c-tokenizer.js';
import { loadTokenizer, type TextTokenizer } from '../tokenizer/tokenizer.js';
import type { ModelArgs } from './args.js';
import type { MlaFields } from './deepseek.js';
import { openGgufModel } from './gguf.js';
import type { Mha2mlaFields } from './mha2mla.js';
import { buildModel, parseConfig, readConfig } from './registry.js';

export type ModelFormat = 'hf' | 'gguf' | 'llama2c';

export interface LoadedModel {
  model: Decoder;
  config: ModelArgs;
  /** null when the model comes without one (the caller may load one separately). */
  tokenizer: TextTokenizer | null;
  format: ModelFormat;
  path: string;
  /** The MLA shape when the folder is a DeepSeek-V3-style (MLA) checkpoint. */
  mla?: MlaFields;
  /** The shape when the folder is an MHA2MLA (per-KV-head RoPE) checkpoint. */
  mha2mla?: Mha2mlaFields;
  /** The latent-cache quantization in effect (absent or null: f32 cache). */
  kvQuant?: KvQuant | null;
}

export interface LoadModelOptions {
  /** A tokenizer file or folder to use instead of the model's own. */
  tokenizer?: string;
  /** Quantize the latent cache (MLA models of either variant only; latent-quant.ts). */
  kvQuant?: KvQuant | null;
}

export function loadModel(path: string, opts: LoadModelOptions = {}): LoadedModel {
  const m = openModel(path, opts);
  const kvQuant = opts.kvQuant ?? null;
  if (kvQuant) {
    if (!m.mla && !m.mha2mla) throw new Error(`${path}: --kv-quant quantizes an MLA latent cache; this is a ${m.config.modelType} model with a GQA/MHA cache`);
    setKvQuant(m.model, kvQuant);
  }
  return { ...m, kvQuant };
}

function openModel(path: string, opts: LoadModelOptions): LoadedModel {
  if (!existsSync(path)) throw new Error(`model ${path} does not exist`);
  const isDir = statSync(path).isDirectory();
  if (isDir && existsSync(join(path, 'config.json'))) return loadHf(path, opts);
  if (!isDir && path.endsWith('.gguf')) return loadGguf(path, opts);
  if (!isDir && path.endsWith('.bin')) return loadLlama2c(path, opts);
  throw new Error(`${path}: not a model (expected a Hugging Face folder with config.json, a .gguf file, or a llama2.c .bin checkpoint)`);
}

function loadGguf(path: string, opts: LoadModelOptions): LoadedModel {
  const g = openGgufModel(path);
  const model = buildWithProgress(g.config, finiteSource(g.weights, () => path));
  const dir = dirname(path);
  const tokPath = opts.tokenizer ?? (existsSync(join(dir, 'tokenizer.json')) ? dir : null);
  const { mla } = g.config as ModelArgs & { mla?: MlaFields };
  return { model, config: g.config, tokenizer: tokPath ? loadTokenizer(tokPath) : null, format: 'gguf', path, ...(mla && { mla }) };
}

function loadHf(path: string, opts: LoadModelOptions): LoadedModel {
  const hasTok = ['tokenizer.json', 'tokenizer.bin', 'tokenizer.model'].some((f) => existsSync(join(path, f)));
  const tokPath = opts.tokenizer ?? (hasTok ? path : null);
  const tokenizer = tokPath ? loadTokenizer(tokPath) : null;
  const config = readConfig(path);
  const model = buildWithProgress(config, checkedCheckpoint(path));
  const { mla, mha2mla } = config as ModelArgs & { mla?: MlaFields; mha2mla?: Mha2mlaFields };
  return { model, config, tokenizer, format: 'hf', path, ...(mla && { mla }), ...(mha2mla && { mha2mla }) };
}

/** The folder's checkpoint, refusing NaN/Inf tensors with the tensor's name and shard file. */
function checkedCheckpoint(path: string): WeightSource {
  const ck: Checkpoint = openCheckpoint(path);
  return finiteSource(ck, (name) => join(ck.dir, ck.info(name).file));
}

/** Builds the model with a progress bar while tensors are read (shown after ~1.5 s only). */
function buildWithProgress(config: ModelArgs, src: WeightSource): Decoder {
  const bar = createProgress({ label: 'loading weights', total: src.names().length, unit: 'tensors' });
  let n = 0;
  const counted: WeightSource = {
    names: () => src.names(),
    has: (name) => src.has(name),
    get: (name) => {
      const t = src.get(name);
      bar.update(++n);
      return t;
    },
  };
  try {
    return buildModel(config, counted);
  } finally {
    bar.finish();
  }
}

class MemorySource implements WeightSource {
  constructor(private readonly map: Map<string, Tensor>) {}
  names(): string[] { return [...this.map.keys()]; }
  has(name: string): boolean { return this.map.has(name); }
  get(name: string): Tensor {
    const t = this.map.get(name);
    if (!t) throw new Error(`no tensor named "${name}"`);
    return t;
  }
}

function loadLlama2c(path: string, opts: LoadModelOptions): LoadedModel {
  const ck = readLlama2c(path);
  const tokPath = opts.tokenizer ?? siblingLlama2cTokenizer(path);
  const tokenizer = tokPath
    ? (tokPath.endsWith('.bin') ? Llama2cTokenizer.fromBinFile(tokPath, ck.header.vocabSize) : loadTokenizer(tokPath))
    : null;
  // llama2.c's tokenizer always has <s> = 1 and </s> = 2; without one, assume the same.
  const hf = llama2cToHf(ck, { bosId: tokenizer ? tokenizer.bosId : 1, eosId: tokenizer ? tokenizer.eosId : 2 });
  const config = parseConfig(hf.config, `${path} (llama2.c header)`);
  const model = buildModel(config, finiteSource(new MemorySource(new Map(hf.tensors.map((t) => [t.name, t.tensor]))), () => path));
  return { model, config, tokenizer, format: 'llama2c', path };
}

/** tokenizer.bin beside the checkpoint, else the only other tok*.bin there. */
export function siblingLlama2cTokenizer(bin: string): string | null {
  const dir = dirname(bin);
  if (existsSync(join(dir, 'tokenizer.bin'))) return join(dir, 'tokenizer.bin');
  const toks = readdirSync(dir).filter((f) => /^tok.*\.bin$/.test(f) && f !== basename(bin));
  return toks.length === 1 ? join(dir, toks[0]!) : null;
}
