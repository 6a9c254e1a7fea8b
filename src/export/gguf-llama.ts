// A Hugging Face Llama-family or Qwen3 model → llama.cpp GGUF ("llama", "qwen2" or "qwen3" architecture).
//
// Facts this file relies on (read from llama.cpp's sources, not copied):
// - llama.cpp's LLAMA arch applies "normal" RoPE to adjacent pairs (2i, 2i+1); HF Llama applies
//   rotate-half RoPE to pairs (i, i+d/2). convert_hf_to_gguf.py therefore permutes the rows of
//   q_proj/k_proj (weights and biases) inside each head (io/rope-rows.ts). QWEN2 uses NEOX
//   (rotate-half) RoPE: no permutation. QWEN3 is NEOX too and adds attn_q_norm/attn_k_norm
//   [head_dim], sizes attn_output [n_embd_head_k·n_head, n_embd] and has no attn_output bias
//   (arch/qwen3.ts cites the sources). The tensor names are the family's (arch/<family>.ts).
// - llama.cpp checks metadata types strictly (u32 hparams, f32 eps/theta) and rejects files
//   holding tensors it does not use; rope_freqs holds llama3's per-frequency divisors.
import { basename, resolve } from 'node:path';
import { LLAMA3_GGUF_KEYS as LLAMA3_KEYS, type LlamaArgs } from '../arch/llama.js';
import { familyFor } from '../arch/registry.js';
import { embeddingName } from '../models/decoder.js';
import { ropeInvFreq, type RopeScaling } from '../models/rope.js';
import type { FloatDType, WeightDType } from '../kernels/types.js';
import type { WeightSource } from '../tensor.js';
import { GgufError, writeGguf, type GgufMetadataEntry, type GgufTensorInput } from '../io/gguf.js';
import { GGUF_FILE_TYPE as FILE_TYPE, ggufTensorInputs, type GgufTensorSpec } from '../io/gguf-model.js';
import { tokenizerGgufMetadata, type TokenizerGgufInfo } from '../io/gguf-tokenizer.js';

export type GgufLlamaArch = 'llama' | 'qwen2' | 'qwen3';

export interface LlamaGgufExportOptions {
  /** general.name; default: the tokenizer folder's name. */
  name?: string;
  /**
   * Storage type of the matrices. 1-D tensors (norms, biases, rope_freqs) are always F32, as
   * llama.cpp's converter writes them. Default: the checkpoint dtype (config torch_dtype; F32 when unstated).
   */
  outType?: WeightDType;
  /** llama.cpp architecture. Default: "qwen2"/"qwen3" for model_type qwen2/qwen3, else "llama". */
  arch?: GgufLlamaArch;
  /** A variant of the llama layout (Mixtral's experts): its tensors, and metadata beyond Llama's. */
  variant?: { tensors: (c: LlamaArgs, arch: string, embedName: string) => GgufTensorSpec[]; metadata: (arch: string) => GgufMetadataEntry[] };
}

export interface LlamaGgufExportResult {
  path: string;
  arch: GgufLlamaArch;
  outType: WeightDType;
  tensorNames: string[];
  tokenizer: TokenizerGgufInfo;
  /** Ways llama.cpp will behave differently from the Hugging Face model (tokenizer warnings included). */
  warnings: string[];
}

function defaultOutType(c: LlamaArgs): FloatDType {
  return c.torchDtype === 'bfloat16' ? 'bf16' : c.torchDtype === 'float16' ? 'f16' : 'f32';
}

/**
 * Writes a Hugging Face Llama-family model (config + weights + tokenizer folder) as a GGUF file
 * that llama.cpp loads. Tensors are read, converted and written one at a time.
 */
export function exportLlamaGguf(outPath: string, config: LlamaArgs, weights: WeightSource, tokenizerDir: string, options: LlamaGgufExportOptions = {}): LlamaGgufExportResult {
  const c = config;
  const arch: GgufLlamaArch = options.arch ?? (c.modelType === 'qwen2' || c.modelType === 'qwen3' ? c.modelType : 'llama');
  const outType = options.outType ?? defaultOutType(c);
  const where = `GGUF export to ${outPath}`;
  const form = familyFor(c).gguf;
  if (!form || !form.archs.includes(arch)) {
    throw new GgufError(`${where}: a ${c.modelType} model cannot be written as llama.cpp architecture "${arch}" (its form: ${form?.archs.join(', ') ?? 'none'})`);
  }
  if (arch === 'qwen3' && c.oBias) throw new GgufError(`${where}: llama.cpp's qwen3 architecture has no attn_output bias (this model's o_proj has one)`);
  if (c.headDim % 2 !== 0) throw new GgufError(`${where}: head_dim ${c.headDim} is odd; RoPE needs an even head dimension`);
  if (arch === 'qwen2') {
    // llama.cpp's qwen2 graph sizes attn_output as [n_embd, n_embd] and has no o/MLP biases.
    if (c.numHeads * c.headDim !== c.hiddenSize) throw new GgufError(`${where}: llama.cpp's qwen2 architecture needs heads × head_dim (${c.numHeads * c.headDim}) = hidden size (${c.hiddenSize}); use arch "llama"`);
    if (c.oBias || c.mlpBias) throw new GgufError(`${where}: llama.cpp's qwen2 architecture has no o_proj/MLP biases; use arch "llama"`);
  }
  if (c.ropeScaling && c.ropeScaling.type !== 'linear' && c.ropeScaling.type !== 'llama3') {
    throw new GgufError(`${where}: RoPE scaling ${JSON.stringify(c.ropeScaling)} is not supported`);
  }

  // A tied checkpoint may store the shared matrix under either name (one asset uses lm_head.weight).
  const specs = (options.variant?.tensors ?? form.tensors)(c, arch, embeddingName(weights, c));
  const tensors: GgufTensorInput[] = ggufTensorInputs(specs, weights, outType, where);

  const tok = tokenizerGgufMetadata(tokenizerDir, c.vocabSize, {
    bos: c.bosTokenId,
    eos: Array.isArray(c.eosTokenId) ? (c.eosTokenId[0] ?? null) : c.eosTokenId,
  });

  const a = arch;
  const md: GgufMetadataEntry[] = [
    { key: 'general.architecture', type: 'string', value: arch },
    { key: 'general.name', type: 'string', value: options.name ?? basename(resolve(tokenizerDir)) },
    { key: 'general.file_type', type: 'u32', value: FILE_TYPE[outType] },
    { key: `${a}.vocab_size`, type: 'u32', value: c.vocabSize },
    { key: `${a}.context_length`, type: 'u32', value: c.maxPositionEmbeddings },
    { key: `${a}.embedding_length`, type: 'u32', value: c.hiddenSize },
    { key: `${a}.block_count`, type: 'u32', value: c.numLayers },
    { key: `${a}.feed_forward_length`, type: 'u32', value: c.intermediateSize },
    { key: `${a}.attention.head_count`, type: 'u32', value: c.numHeads },
    { key: `${a}.attention.head_count_kv`, type: 'u32', value: c.numKvHeads },
    { key: `${a}.attention.layer_norm_rms_epsilon`, type: 'f32', value: c.rmsNormEps },
    { key: `${a}.rope.freq_base`, type: 'f32', value: c.ropeTheta },
    { key: `${a}.rope.dimension_count`, type: 'u32', value: c.headDim },
  ];
  if (c.headDim * c.numHeads !== c.hiddenSize) {
    // llama.cpp otherwise derives the head size as hidden / heads.
    md.push({ key: `${a}.attention.key_length`, type: 'u32', value: c.headDim }, { key: `${a}.attention.value_length`, type: 'u32', value: c.headDim });
  }
  const rs: RopeScaling | null = c.ropeScaling;
  if (rs?.type === 'linear') {
    md.push({ key: `${a}.rope.scaling.type`, type: 'string', value: 'linear' }, { key: `${a}.rope.scaling.factor`, type: 'f32', value: rs.factor });
  } else if (rs?.type === 'llama3') {
    md.push(
      { key: LLAMA3_KEYS.factor, type: 'f64', value: rs.factor },
      { key: LLAMA3_KEYS.lowFreqFactor, type: 'f64', value: rs.lowFreqFactor },
      { key: LLAMA3_KEYS.highFreqFactor, type: 'f64', value: rs.highFreqFactor },
      { key: LLAMA3_KEYS.originalMaxPositionEmbeddings, type: 'u32', value: rs.originalMaxPositionEmbeddings },
    );
  }
  if (options.variant) md.push(...options.variant.metadata(arch));
  md.push(...tok.metadata);

  if (rs?.type === 'llama3') {
    // llama.cpp divides each RoPE frequency by rope_freqs[i]: the ratio of unscaled to scaled frequency.
    const plain = ropeInvFreq(c.headDim, c.ropeTheta, null), scaled = ropeInvFreq(c.headDim, c.ropeTheta, rs);
    const f = new Float32Array(c.headDim / 2);
    for (let i = 0; i < f.length; i++) f[i] = plain[i]! / scaled[i]!;
    tensors.push({ name: 'rope_freqs.weight', tensor: { dtype: 'f32', shape: [f.length], data: f } });
  }
  writeGguf(outPath, { metadata: md, tensors });
  const warnings = [...tok.info.warnings];
  const sw = c.raw.sliding_window;
  if ((c.modelType === 'mistral' || c.modelType === 'mixtral') && typeof sw === 'number' && sw < c.maxPositionEmbeddings && c.raw.use_sliding_window !== false) {
    warnings.push(`config sliding_window ${sw}: llama.cpp's llama architecture attends to the whole context, so outputs differ beyond ${sw} tokens`);
  }
  return { path: outPath, arch, outType, tensorNames: tensors.map((t) => t.name), tokenizer: tok.info, warnings };
}

