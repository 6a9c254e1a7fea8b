// The MHA2MLA variant (docs/methods.md#mha2mla): MLA with a small RoPE key per KV head, which the
// DeepSeek layout cannot express, so it is its own model type. config.json is the source Llama
// config plus:
//   model_type "llama_mha2mla", architectures ["LlamaMHA2MLAForCausalLM"], transmla_variant "mha2mla";
//   kv_lora_rank          the latent c shared by all heads of a layer (values per token);
//   rope_pairs_per_head   r: frequency pairs each KV head keeps under RoPE (2r dims);
//   mha2mla_rope_pairs    [layer][kv head] → the r source frequency indices k ∈ [0, head_dim/2)
//                         kept, ascending; pair k rotates at the source's θ_k (with its scaling).
// num_key_value_heads and head_dim stay the source's. Per token and layer the cache holds
// G·2r + kv_lora_rank values.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { normWeight, type LayerBuilder } from '../models/decoder.js';
import { Mha2mlaAttention, mha2mlaCacheWidth, mha2mlaSummary, perHeadRopeTables } from '../models/mha2mla-attention.js';
import { SwiGluMlp } from '../models/mlp.js';
import { ropeInvFreq } from '../models/rope.js';
import { Mha2mlaAttentionLayer } from '../train/layers/attention-mha2mla.js';
import { MlpLayer } from '../train/layers/mlp.js';
import { MoeLayer } from '../train/layers/moe.js';
import { mixtralMoeNames, MoeMlp, type MoeShape } from '../models/moe.js';
import { sourceMoe } from './deepseek-moe.js';
import { ConfigFields, HfConfigError, isObj, type ModelArgs } from './args.js';
import type { Family } from './family.js';
import { parseLlamaFields } from './llama.js';

export const MHA2MLA_MODEL_TYPE = 'llama_mha2mla';

export interface Mha2mlaFields {
  kvLoraRank: number;
  ropePairsPerHead: number;
  /** [layer][kvHead] → ascending frequency indices, ropePairsPerHead each. */
  ropePairs: number[][][];
}

export interface Mha2mlaArgs extends ModelArgs {
  mha2mla: Mha2mlaFields;
  /** A Mixtral source's experts (its num_local_experts / num_experts_per_tok and tensor names, kept); null: dense MLPs. */
  moe: MoeShape | null;
}

/** true when a parsed config.json declares the MHA2MLA variant. */
export function isMha2mlaConfigJson(json: unknown): boolean {
  return isObj(json) && (json.transmla_variant === 'mha2mla' || json.model_type === MHA2MLA_MODEL_TYPE);
}

export function parseMha2mlaConfig(json: unknown, file: string): Mha2mlaArgs {
  if (!isObj(json)) throw new HfConfigError(`${file}: expected a JSON object`);
  const c = json;
  const err = (key: string, msg: string): never => { throw new HfConfigError(`${file}: ${key} ${msg}`); };
  if (c.transmla_variant !== 'mha2mla') err('transmla_variant', `must be "mha2mla", got ${JSON.stringify(c.transmla_variant)}`);
  // The shared fields as a Llama config reads them (heads, KV heads, head_dim, RoPE base and
  // scaling); biases are whatever the checkpoint holds.
  const base = parseLlamaFields(new ConfigFields({ ...c, attention_bias: false }, file), 'llama');
  const int = (k: string, min: number, max: number): number => {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) err(k, `must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const half = base.headDim / 2;
  // At least one pair per head must be NoPE: the latent carries the NoPE keys.
  const r = int('rope_pairs_per_head', 0, half - 1);
  const kvLoraRank = int('kv_lora_rank', 1, Number.MAX_SAFE_INTEGER);
  const sel = c.mha2mla_rope_pairs;
  const L = base.numLayers, G = base.numKvHeads;
  if (!Array.isArray(sel) || sel.length !== L) err('mha2mla_rope_pairs', `must list ${L} layers`);
  const ropePairs = (sel as unknown[]).map((layer, l) => {
    if (!Array.isArray(layer) || layer.length !== G) err('mha2mla_rope_pairs', `[${l}] must list ${G} KV heads`);
    return (layer as unknown[]).map((head, g) => {
      const where = `[${l}][${g}]`;
      if (!Array.isArray(head) || head.length !== r) err('mha2mla_rope_pairs', `${where} must hold ${r} frequency indices`);
      const ks = head as unknown[];
      ks.forEach((k, i) => {
        if (typeof k !== 'number' || !Number.isSafeInteger(k) || k < 0 || k >= half) err('mha2mla_rope_pairs', `${where} index ${JSON.stringify(k)} is not in 0..${half - 1}`);
        if (i > 0 && (k as number) <= (ks[i - 1] as number)) err('mha2mla_rope_pairs', `${where} must be strictly ascending`);
      });
      return ks as number[];
    });
  });
  let moe: MoeShape | null = null;
  if (c.num_local_experts !== undefined && c.num_local_experts !== null) {
    const E = int('num_local_experts', 1, Number.MAX_SAFE_INTEGER), k = int('num_experts_per_tok', 1, E);
    moe = { hidden: base.hiddenSize, expertInter: base.intermediateSize, numExperts: E, topK: k };
  }
  return { ...base, family: 'mha2mla', modelType: MHA2MLA_MODEL_TYPE, raw: c, mha2mla: { kvLoraRank, ropePairsPerHead: r, ropePairs }, moe };
}

export function readMha2mlaConfig(folder: string): Mha2mlaArgs {
  const path = join(folder, 'config.json');
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new HfConfigError(`${path}: cannot read: ${(e as Error).message}`);
  }
  return parseMha2mlaConfig(json, path);
}

/** The MHA2MLA model's config.json: the source's keys plus the variant's identity and shape. */
export function mha2mlaConfigJson(source: ModelArgs, f: Mha2mlaFields): Record<string, unknown> {
  const raw = { ...source.raw };
  const moe = sourceMoe(source);
  for (const k of ['auto_map', 'pretraining_tp']) delete raw[k];
  return {
    ...raw,
    architectures: ['LlamaMHA2MLAForCausalLM'],
    model_type: MHA2MLA_MODEL_TYPE,
    transmla_variant: 'mha2mla',
    num_key_value_heads: source.numKvHeads,
    head_dim: source.headDim,
    kv_lora_rank: f.kvLoraRank,
    rope_pairs_per_head: f.ropePairsPerHead,
    mha2mla_rope_pairs: f.ropePairs,
    tie_word_embeddings: source.tieWordEmbeddings,
    // A Mixtral source: the fields whose MixtralConfig defaults differ from Llama's, stated, and its experts.
    ...(moe ? {
      rope_theta: source.ropeTheta, rms_norm_eps: source.rmsNormEps, max_position_embeddings: source.maxPositionEmbeddings,
      bos_token_id: source.bosTokenId, eos_token_id: source.eosTokenId, num_local_experts: moe.numExperts, num_experts_per_tok: moe.topK,
    } : {}),
  };
}

function shape(c: Mha2mlaArgs) {
  return { hidden: c.hiddenSize, nHeads: c.numHeads, nKvHeads: c.numKvHeads, headDim: c.headDim, ropePairs: c.mha2mla.ropePairsPerHead, kvLoraRank: c.mha2mla.kvLoraRank };
}

export const mha2mla: Family<Mha2mlaArgs> = {
  id: 'mha2mla',
  modelTypes: [MHA2MLA_MODEL_TYPE],
  architectures: { LlamaMHA2MLAForCausalLM: MHA2MLA_MODEL_TYPE },
  claims: isMha2mlaConfigJson,
  parse: (json, file) => parseMha2mlaConfig(json, file),
  engineLayers(c, opts = {}): LayerBuilder {
    // Each KV head rotates its kept pairs at the source frequencies.
    const inv = ropeInvFreq(c.headDim, c.ropeTheta, c.ropeScaling);
    const s = shape(c), D = c.hiddenSize;
    return (src, l) => {
      const p = `model.layers.${l}`;
      const inputNorm = normWeight(src, `${p}.input_layernorm.weight`, D);
      const attn = Mha2mlaAttention.load(src, `${p}.self_attn`, s, perHeadRopeTables(inv, c.mha2mla.ropePairs[l]!));
      if (opts.mode) attn.mode = opts.mode;
      const mlp = c.moe ? MoeMlp.load(src, mixtralMoeNames(p), c.moe) : SwiGluMlp.load(src, `${p}.mlp`, D, c.intermediateSize, c.mlpBias);
      return { inputNorm, attn, postNorm: normWeight(src, `${p}.post_attention_layernorm.weight`, D), mlp };
    };
  },
  attentionLayout: (c) => ({ summary: mha2mlaSummary(shape(c)), latent: true, cacheStores: Array.from({ length: c.numLayers }, () => [mha2mlaCacheWidth(shape(c))]) }),
  trainLayers(be, ps, c) {
    const inv = ropeInvFreq(c.headDim, c.ropeTheta, c.ropeScaling);
    const s = shape(c);
    return (l, prefix) => ({
      attn: new Mha2mlaAttentionLayer(be, ps, `${prefix}.self_attn`, s, perHeadRopeTables(inv, c.mha2mla.ropePairs[l]!)),
      mlp: c.moe ? new MoeLayer(be, ps, mixtralMoeNames(prefix), c.moe) : new MlpLayer(be, ps, `${prefix}.mlp`, c.hiddenSize, c.intermediateSize),
    });
  },
  attentionParams: (n) => /\.self_attn\./.test(n) && !/\.self_attn\.o_proj\./.test(n),
  conversions: { transmla: 'it is already an MLA model (MHA2MLA variant)', mha2mla: 'it is already an MLA model (MHA2MLA variant)' },
  ggufExport: 'MHA2MLA checkpoints (per-KV-head RoPE keys plus a shared latent) have no llama.cpp architecture',
};
