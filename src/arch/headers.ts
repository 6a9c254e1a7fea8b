// A model's tensor table without its weights: names (Hugging Face), shapes and stored dtypes,
// read from safetensors headers, the GGUF tensor directory, or a llama2.c header. `inspect`
// describes a model from this and its config alone, so it needs no more memory for a 16 GB
// checkpoint than for a small one.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { openCheckpoint } from '../io/checkpoint.js';
import { llama2cHfConfig, readLlama2cHeader } from '../io/llama2c.js';
import type { ModelArgs } from './args.js';
import { openGgufModel } from './gguf.js';
import { llamaGgufTensors } from './llama.js';
import type { ModelFormat } from './load.js';
import { parseConfig, readConfig } from './registry.js';

export interface TensorHeader {
  shape: readonly number[];
  /** 'f32' | 'f16' | 'bf16' for float tensors, else the file's own type name (I64, Q8_0, …). */
  dtype: string;
}

export interface ModelHeaders {
  path: string;
  format: ModelFormat;
  config: ModelArgs;
  /** Every tensor the file holds, under its Hugging Face name. */
  tensors: Map<string, TensorHeader>;
}

const SAFETENSORS_FLOAT: Record<string, string> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

/** The config and tensor table of a Hugging Face folder, a GGUF file or a llama2.c .bin; no weight is read. */
export function readModelHeaders(path: string): ModelHeaders {
  if (!existsSync(path)) throw new Error(`model ${path} does not exist`);
  const isDir = statSync(path).isDirectory();
  const tensors = new Map<string, TensorHeader>();
  if (isDir && existsSync(join(path, 'config.json'))) {
    const config = readConfig(path);
    const ck = openCheckpoint(path);
    try {
      for (const name of ck.names()) {
        const i = ck.info(name);
        tensors.set(name, { shape: i.shape, dtype: SAFETENSORS_FLOAT[i.dtype] ?? i.dtype });
      }
    } finally {
      ck.close();
    }
    return { path, format: 'hf', config, tensors };
  }
  if (!isDir && path.endsWith('.gguf')) {
    const g = openGgufModel(path);
    for (const s of g.specs) {
      const info = g.file.tensorInfo(s.gguf);
      tensors.set(s.hf, { shape: s.shape, dtype: g.file.floatDType(s.gguf) ?? info.typeName });
    }
    return { path, format: 'gguf', config: g.config, tensors };
  }
  if (!isDir && path.endsWith('.bin')) {
    // loadModel converts llama2.c weights to f32 HF tensors of a Llama config: the same table.
    const config = parseConfig(llama2cHfConfig(readLlama2cHeader(path), { bosId: 1, eosId: 2 }), `${path} (llama2.c header)`);
    for (const s of llamaGgufTensors(config, 'llama', 'model.embed_tokens.weight')) tensors.set(s.hf, { shape: s.shape, dtype: 'f32' });
    return { path, format: 'llama2c', config, tensors };
  }
  throw new Error(`${path}: not a model (expected a Hugging Face folder with config.json, a .gguf file, or a llama2.c .bin checkpoint)`);
}
