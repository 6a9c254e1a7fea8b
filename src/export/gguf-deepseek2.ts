// Stock DeepSeek-V3 folder (MLA, all-dense MLP) → llama.cpp GGUF, architecture "deepseek2". (docs/stock-engines.md#llama-cpp)
//
// Facts this file relies on (read from llama.cpp's sources for the version bundled with
// node-llama-cpp 3.22.1, not copied):
// - deepseek2 hparams: attention.kv_lora_rank; attention.q_lora_rank is required unless the
//   layer count is one of the "lite" ones (26/27), and q_lora_rank 0 selects a plain attn_q;
//   leading_dense_block_count (dense MLP layers first: here all of them);
//   expert_feed_forward_length and expert_shared_count are read unconditionally
//   (expert_weights_scale too by older versions; all harmless for an all-dense model);
//   rope.dimension_count = qk_rope_head_dim.
// - MLA with absorption (what current llama.cpp expects): attention.key_length = kv_lora_rank +
//   qk_rope_head_dim and attention.value_length = kv_lora_rank (the MQA view of the latent cache,
//   head_count_kv 1), attention.key_length_mla = qk_nope + qk_rope and value_length_mla =
//   v_head_dim (per-head sizes); kv_b_proj is split into attn_k_b [H, r, d_nope] (W_UK^h
//   transposed) and attn_v_b [H, d_v, r]. Without key_length_mla, older files with one
//   attn_kv_b are still read (legacy, not written here).
// - Tensors: token_embd, output_norm, output; blk.N.{attn_norm, attn_q | attn_q_a, attn_q_a_norm,
//   attn_q_b, attn_kv_a_mqa, attn_kv_a_norm, attn_k_b, attn_v_b, attn_output, ffn_norm,
//   ffn_gate, ffn_up, ffn_down}.
// - RoPE on q_pe/k_pe is llama.cpp's "normal" mode (adjacent pairs), DeepSeek's interleaved
//   layout: rows are stored as in the checkpoint (permuted only if it says rope_interleave false).
// - kq_scale = mscale²/√(qk_nope + qk_rope), mscale = 1 without YaRN: the stock softmax scale.
// - MoE layers (il ≥ leading_dense_block_count; src/models/deepseek2.cpp @de3ff815): ffn_gate_inp,
//   ffn_{gate,up,down}_exps stacked [E, …], and ffn_{gate,up,down}_shexp, which the graph builds
//   and adds unconditionally (n_ff_exp · expert_shared_count wide); build_moe_ffn with
//   expert_gating_func, expert_weights_norm and expert_weights_scale. A folder without shared
//   experts gets an all-zero one (it adds exactly 0; the cost is one more expert's FLOPs per token).
import { basename, resolve } from 'node:path';
import { readMlaConfig } from '../arch/deepseek.js';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import type { MlaMoe } from '../arch/deepseek-moe.js';
import { moeGgufTensors } from '../arch/mixtral.js';
import { deepseekMoeNames } from '../models/moe.js';
import { GgufError, writeGguf, type GgufMetadataEntry, type GgufTensorInput } from '../io/gguf.js';
import { GGUF_FILE_TYPE as FILE_TYPE, ggufTensorInputs, matrixType, storeAs } from '../io/gguf-model.js';
import { tokenizerGgufMetadata, type TokenizerGgufInfo } from '../io/gguf-tokenizer.js';
import { permuteRopeRows } from '../io/rope-rows.js';
import type { WeightData, WeightDType } from '../kernels/types.js';
import { widen } from '../models/weights.js';
import { isQuantDType, tensorBytes, type Tensor, type WeightTensor } from '../tensor.js';

/** llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX (src/llama-hparams.h). */
const GATING_SOFTMAX = 1;

/**
 * One MoE layer's router, stacked routed experts (as for Mixtral: arch/mixtral.ts moeGgufTensors)
 * and shared expert (ffn_{gate,up,down}_shexp, n_shared·I wide): the folder's, or zeros.
 */
function moeLayerInputs(ck: Checkpoint, l: number, moe: MlaMoe, shared: number, outType: WeightDType, where: string): GgufTensorInput[] {
  const p = `model.layers.${l}.mlp`, b = `blk.${l}`, D = ck.info(`${p}.gate.weight`).shape[1]!, W = moe.expertInter * shared;
  const inputs = ggufTensorInputs(moeGgufTensors(l, deepseekMoeNames(`model.layers.${l}`), { hidden: D, expertInter: moe.expertInter, numExperts: moe.numExperts, topK: moe.topK }), ck, outType, where);
  const has = moe.sharedExperts > 0;
  for (const [kind, shape] of [['gate', [W, D]], ['up', [W, D]], ['down', [D, W]]] as const) {
    const hf = `${p}.shared_experts.${kind}_proj.weight`;
    if (has) inputs.push(...ggufTensorInputs([{ gguf: `${b}.ffn_${kind}_shexp.weight`, hf, shape: [...shape] }], ck, outType, where));
    else {
      // All-zero bits are zero in every type (a zero Q8_0/Q4_0 block has scale 0).
      const n = shape[0] * shape[1], dtype = matrixType(outType, shape[1]);
      const zeros = (): WeightData => (dtype === 'f32' ? new Float32Array(n) : isQuantDType(dtype) ? new Uint8Array(tensorBytes(dtype, n)) : new Uint16Array(n));
      inputs.push({ name: `${b}.ffn_${kind}_shexp.weight`, dtype, shape, load: () => ({ dtype, shape: [...shape], data: zeros() } as WeightTensor) });
    }
  }
  return inputs;
}

export interface Deepseek2GgufOptions {
  /** Matrices' type; q8_0/q4_0 quantize (F16 where rows are not whole blocks of 32). */
  outType?: WeightDType;
  name?: string;
}

export interface Deepseek2GgufResult {
  path: string;
  outType: WeightDType;
  tensorNames: string[];
  tokenizer: TokenizerGgufInfo;
  warnings: string[];
}

export function exportDeepseek2Gguf(outPath: string, folder: string, options: Deepseek2GgufOptions = {}): Deepseek2GgufResult {
  const where = `GGUF export of ${folder}`;
  const c = readMlaConfig(folder), m = c.mla;
  if (m.semantics !== 'stock') {
    throw new GgufError(`${where}: this is the exact variant (no kv_a_layernorm; transmla.json marks it); llama.cpp runs stock DeepSeek-V3 semantics. Export it with --target deepseek-v3 first (\`transmla export\` with --target gguf does both)`);
  }
  if (m.yarn) throw new GgufError(`${where}: rope_scaling yarn is not exported to GGUF here (llama.cpp's DeepSeek YaRN attention-factor handling is not verified against this engine)`);
  if (c.ropeScaling?.type === 'llama3') throw new GgufError(`${where}: llama3 rope scaling has no deepseek2 GGUF form (llama.cpp reads rope_freqs only for llama-family architectures)`);
  if (m.attentionBias) throw new GgufError(`${where}: attention_bias true: llama.cpp's deepseek2 has no attention biases`);
  const moe = c.moe;
  if (moe && moe.naming !== 'deepseek') throw new GgufError(`${where}: experts under Mixtral names in a stock folder; export it with --target deepseek-v3 first`);
  // llama.cpp's deepseek2 builds a shared expert in every MoE layer: at least one (zero when the folder has none).
  const shared = moe ? Math.max(1, moe.sharedExperts) : 0;
  const outType: WeightDType = options.outType ?? (c.torchDtype === 'bfloat16' ? 'bf16' : c.torchDtype === 'float16' ? 'f16' : 'f32');
  const ck = openCheckpoint(folder);
  const D = c.hiddenSize, H = c.numHeads, dn = m.qkNopeHeadDim, dR = m.qkRopeHeadDim, dv = m.vHeadDim, r = m.kvLoraRank, rq = m.qLoraRank;
  const I = c.intermediateSize, V = c.vocabSize, L = c.numLayers, qh = dn + dR;
  const permute = !m.ropeInterleave;
  const a = 'deepseek2';
  const tok = tokenizerGgufMetadata(folder, V, { bos: c.bosTokenId, eos: Array.isArray(c.eosTokenId) ? (c.eosTokenId[0] ?? null) : c.eosTokenId });
  const md: GgufMetadataEntry[] = [
    { key: 'general.architecture', type: 'string', value: a },
    { key: 'general.name', type: 'string', value: options.name ?? basename(resolve(folder)) },
    { key: 'general.file_type', type: 'u32', value: FILE_TYPE[outType] },
    { key: `${a}.vocab_size`, type: 'u32', value: V },
    { key: `${a}.context_length`, type: 'u32', value: c.maxPositionEmbeddings },
    { key: `${a}.embedding_length`, type: 'u32', value: D },
    { key: `${a}.block_count`, type: 'u32', value: L },
    { key: `${a}.feed_forward_length`, type: 'u32', value: I },
    { key: `${a}.attention.head_count`, type: 'u32', value: H },
    { key: `${a}.attention.head_count_kv`, type: 'u32', value: 1 },
    { key: `${a}.attention.layer_norm_rms_epsilon`, type: 'f32', value: c.rmsNormEps },
    { key: `${a}.rope.freq_base`, type: 'f32', value: c.ropeTheta },
    { key: `${a}.rope.dimension_count`, type: 'u32', value: dR },
    { key: `${a}.attention.key_length`, type: 'u32', value: r + dR },
    { key: `${a}.attention.value_length`, type: 'u32', value: r },
    { key: `${a}.attention.key_length_mla`, type: 'u32', value: qh },
    { key: `${a}.attention.value_length_mla`, type: 'u32', value: dv },
    { key: `${a}.attention.kv_lora_rank`, type: 'u32', value: r },
    { key: `${a}.attention.q_lora_rank`, type: 'u32', value: rq ?? 0 },
    { key: `${a}.leading_dense_block_count`, type: 'u32', value: moe ? moe.firstDense : L },
    { key: `${a}.expert_feed_forward_length`, type: 'u32', value: moe ? moe.expertInter : I },
    { key: `${a}.expert_shared_count`, type: 'u32', value: moe ? shared : 0 },
    // Optional in the bundled llama.cpp, required by older deepseek2 loaders; unused without MoE layers.
    { key: `${a}.expert_weights_scale`, type: 'f32', value: 1 },
  ];
  if (moe) {
    // Mixtral's routing in llama.cpp's build_moe_ffn: softmax gating, top-k, weights renormalised.
    md.push(
      { key: `${a}.expert_count`, type: 'u32', value: moe.numExperts },
      { key: `${a}.expert_used_count`, type: 'u32', value: moe.topK },
      { key: `${a}.expert_gating_func`, type: 'u32', value: GATING_SOFTMAX },
      { key: `${a}.expert_weights_norm`, type: 'bool', value: true },
    );
  }
  if (c.ropeScaling?.type === 'linear') {
    md.push({ key: `${a}.rope.scaling.type`, type: 'string', value: 'linear' }, { key: `${a}.rope.scaling.factor`, type: 'f32', value: c.ropeScaling.factor });
  }
  md.push(...tok.metadata);

  const need = (name: string, shape: number[]): Tensor => {
    if (!ck.has(name)) throw new GgufError(`${where}: the checkpoint has no tensor "${name}"`);
    const t = ck.get(name);
    if (t.shape.length !== shape.length || t.shape.some((x, i) => x !== shape[i])) {
      throw new GgufError(`${where}: tensor "${name}" has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    return t;
  };
  const tensors: GgufTensorInput[] = [];
  const plain = (gguf: string, hf: string, shape: number[], transform?: (x: Float32Array) => Float32Array): void => {
    const dtype: WeightDType = shape.length === 1 ? 'f32' : matrixType(outType, shape[shape.length - 1]!);
    tensors.push({
      name: gguf, dtype, shape,
      load: () => {
        const t = need(hf, shape);
        if (!transform) return storeAs(t, dtype) as WeightTensor;
        return storeAs({ dtype: 'f32', shape, data: transform(widen(t)) }, dtype) as WeightTensor;
      },
    });
  };
  plain('token_embd.weight', ck.has('model.embed_tokens.weight') ? 'model.embed_tokens.weight' : 'lm_head.weight', [V, D]);
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`, s = `${p}.self_attn`, b = `blk.${l}`;
    plain(`${b}.attn_norm.weight`, `${p}.input_layernorm.weight`, [D]);
    const qPerm = permute ? (x: Float32Array) => permuteRopeRows(x, { blocks: H, stride: qh, offset: dn, dim: dR }, 'interleaved') : undefined;
    if (rq === null) plain(`${b}.attn_q.weight`, `${s}.q_proj.weight`, [H * qh, D], qPerm);
    else {
      plain(`${b}.attn_q_a.weight`, `${s}.q_a_proj.weight`, [rq, D]);
      plain(`${b}.attn_q_a_norm.weight`, `${s}.q_a_layernorm.weight`, [rq]);
      plain(`${b}.attn_q_b.weight`, `${s}.q_b_proj.weight`, [H * qh, rq], qPerm);
    }
    plain(`${b}.attn_kv_a_mqa.weight`, `${s}.kv_a_proj_with_mqa.weight`, [r + dR, D], permute ? (x) => permuteRopeRows(x, { blocks: 1, stride: r + dR, offset: r, dim: dR }, 'interleaved') : undefined);
    plain(`${b}.attn_kv_a_norm.weight`, `${s}.kv_a_layernorm.weight`, [r]);
    // kv_b [H·(d_n+d_v), r] → k_b [H, r, d_n] (W_UK^h transposed) and v_b [H, d_v, r].
    const kvbName = `${s}.kv_b_proj.weight`, kvbShape = [H * (dn + dv), r];
    tensors.push({
      name: `${b}.attn_k_b.weight`, dtype: matrixType(outType, dn), shape: [H, r, dn],
      load: () => {
        const B = widen(need(kvbName, kvbShape));
        const out = new Float32Array(H * r * dn);
        for (let h = 0; h < H; h++) for (let i = 0; i < dn; i++) for (let j = 0; j < r; j++) out[(h * r + j) * dn + i] = B[(h * (dn + dv) + i) * r + j]!;
        return storeAs({ dtype: 'f32', shape: [H, r, dn], data: out }, matrixType(outType, dn)) as WeightTensor;
      },
    });
    tensors.push({
      name: `${b}.attn_v_b.weight`, dtype: matrixType(outType, r), shape: [H, dv, r],
      load: () => {
        const B = widen(need(kvbName, kvbShape));
        const out = new Float32Array(H * dv * r);
        for (let h = 0; h < H; h++) out.set(B.subarray((h * (dn + dv) + dn) * r, (h + 1) * (dn + dv) * r), h * dv * r);
        return storeAs({ dtype: 'f32', shape: [H, dv, r], data: out }, matrixType(outType, r)) as WeightTensor;
      },
    });
    plain(`${b}.attn_output.weight`, `${s}.o_proj.weight`, [D, H * dv]);
    plain(`${b}.ffn_norm.weight`, `${p}.post_attention_layernorm.weight`, [D]);
    if (moe && l >= moe.firstDense) tensors.push(...moeLayerInputs(ck, l, moe, shared, outType, where));
    else {
      plain(`${b}.ffn_gate.weight`, `${p}.mlp.gate_proj.weight`, [I, D]);
      plain(`${b}.ffn_up.weight`, `${p}.mlp.up_proj.weight`, [I, D]);
      plain(`${b}.ffn_down.weight`, `${p}.mlp.down_proj.weight`, [D, I]);
    }
    for (const x of ['q_proj', 'q_a_proj', 'q_b_proj', 'kv_a_proj_with_mqa', 'kv_b_proj', 'o_proj']) {
      if (ck.has(`${s}.${x}.bias`)) throw new GgufError(`${where}: ${s}.${x}.bias: llama.cpp's deepseek2 has no attention biases`);
    }
    for (const x of ['gate_proj', 'up_proj', 'down_proj']) {
      if (ck.has(`${p}.mlp.${x}.bias`)) throw new GgufError(`${where}: ${p}.mlp.${x}.bias: llama.cpp's deepseek2 has no MLP biases`);
    }
  }
  plain('output_norm.weight', 'model.norm.weight', [D]);
  if (ck.has('lm_head.weight')) plain('output.weight', 'lm_head.weight', [V, D]);
  else if (!c.tieWordEmbeddings) throw new GgufError(`${where}: no lm_head.weight and tie_word_embeddings is false`);
  try {
    writeGguf(outPath, { metadata: md, tensors });
  } finally {
    ck.close();
  }
  return { path: outPath, outType, tensorNames: tensors.map((t) => t.name), tokenizer: tok.info, warnings: [...tok.info.warnings] };
}
