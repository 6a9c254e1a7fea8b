// What every decoder family shares (in the spirit of mlx-lm's BaseModelArgs): the arguments the
// engine, the converter and the trainer read of any model. The family files (arch/<family>.ts)
// parse config.json into them (arch/args.ts has the shared field readers) and add their own.
import type { RopeScaling } from './rope.js';

export interface ModelArgs {
  /** The arch/ family that parsed the config (registry id: 'llama', 'deepseek', 'mha2mla', …). */
  family: string;
  /** config.json's model_type ('llama', 'mistral', 'qwen2', 'deepseek_v3', …). */
  modelType: string;
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
  /**
   * The attention window (null: full attention). The engine attends to the whole context, which
   * is exact as long as the context holds at most `slidingWindow` tokens.
   */
  slidingWindow: number | null;
  /** The original JSON, carried so writers can preserve unknown keys. */
  raw: Record<string, unknown>;
}
