// What validate reports: engines, the impact of a finding on each, and the facts rules read.
import type { StockDims } from '../arch/deepseek-stock.js';

export const ENGINES = ['transformers', 'vllm', 'sglang', 'llama.cpp'] as const;
export type EngineId = (typeof ENGINES)[number];

export const ENGINE_LABELS: Record<EngineId, string> = {
  transformers: 'HF transformers (DeepseekV3ForCausalLM)',
  vllm: 'vLLM (DeepseekV3ForCausalLM, MLA backends)',
  sglang: 'SGLang (DeepseekV2AttentionMLA)',
  'llama.cpp': 'llama.cpp (deepseek2, after convert_hf_to_gguf.py)',
};

/** What a finding does to one engine, worst first. */
export type Impact = 'will-not-load' | 'incorrect' | 'unknown' | 'not-fast' | 'note';

/** What one engine does with a folder's bias tensors (kinds such as self_attn.q_proj.bias). */
export interface BiasFate {
  keeps: string[];
  drops: string[];
  /** Kinds that make the engine refuse the checkpoint. */
  refuses: string[];
}

export interface Finding {
  /** Rule id (stable, for --json consumers and tests). */
  rule: string;
  impact: Partial<Record<EngineId, Impact>>;
  /** What is wrong (engine-neutral). */
  message: string;
  /** Per engine: what its stock code then does. */
  effect?: Partial<Record<EngineId, string>>;
  /** The bias rule: per engine, which bias tensor kinds it keeps, drops or refuses. */
  biases?: Partial<Record<EngineId, BiasFate>>;
  fix?: string;
}

export interface TensorFact {
  dtype: string;
  shape: number[];
}

/** Everything the rules look at, read without loading tensor data. */
export interface FolderFacts {
  dir: string;
  config: Record<string, unknown>;
  tensors: ReadonlyMap<string, TensorFact>;
  /** File names present in the folder (tokenizer.json, transmla.json, …). */
  files: ReadonlySet<string>;
  /** transmla.json, when present and readable. */
  transmla: Record<string, unknown> | null;
}

/** The MLA shape read from config.json (validated integers). */
export type MlaDims = StockDims;

export const EXPORT_FIX = 'transmla export <folder> --target deepseek-v3';

export const ALL = (i: Impact): Record<EngineId, Impact> => ({ transformers: i, vllm: i, sglang: i, 'llama.cpp': i });

export function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export const isInt = (v: unknown, min: number): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= min;

