// What stock engines require of a DeepSeek-V3 (MLA) checkpoint, one rule per requirement.
// Each rule looks at the facts read from a folder (config.json, tensor names/shapes/dtypes,
// side files) and returns findings; a finding says, per engine, what breaks and why, citing
// the stock code path responsible. validate.ts turns findings into per-engine verdicts.
//
// Facts behind the rules (read in the engines' sources; docs/stock-engines.md summarises them, with the upstream files and commits):
// - transformers DeepseekV3 (modeling_deepseek_v3.py): builds kv_a_layernorm (and q_a_layernorm)
//   unconditionally; q_proj/q_b_proj/kv_b_proj never have biases, q_a_proj/kv_a_proj_with_mqa/
//   o_proj only with attention_bias (DeepseekV3Attention.__init__, huggingface/transformers
//   @00b676f8), so it keeps those three biases with attention_bias: true and drops every other
//   one as an unexpected key; honours rope_interleave; takes the RoPE width from head_dim
//   (set to qk_rope_head_dim unless config.json overrides it); repeats K/V by
//   num_attention_heads / num_key_value_heads; layer i is MoE when i >= first_k_dense_replace;
//   missing weights are initialised (Linear: random, RMSNorm: ones) with a warning; lm_head is
//   tied when tie_word_embeddings; rope_scaling is applied by its own rope_type. Its attention
//   caches the expanded per-head keys and values, not the latent.
// - vLLM DeepseekV2/V3 (model_executor/models/deepseek_v2.py): every projection bias=False
//   (DeepseekV2MLAAttention: fused_qkv_a_proj, kv_a_proj_with_mqa, q_b_proj/q_proj, kv_b_proj,
//   o_proj) and load_weights skips a ".bias" with no parameter (vllm-project/vllm @002d6073): it
//   drops every bias, silently; kv_a_layernorm always applied; RoPE is
//   always interleaved (is_neox_style=False) and any non-default rope type becomes
//   "deepseek_yarn" (with its mscale); no tied lm_head; weights missing from the checkpoint
//   abort loading ("Following weights were not initialized from checkpoint");
//   load_weights builds the expert map from n_routed_experts, so it must be a number.
//   MLA backends accept head size kv_lora_rank + qk_rope_head_dim = 576 (recent releases also
//   320); FlashMLA: 576, fp16/bf16, SM90/SM100; FlashInfer MLA: SM100, qk_nope_head_dim in
//   {64, 128, 192}; Triton MLA: any GPU.
// - SGLang DeepseekV2AttentionMLA (models/deepseek_v2.py): same layout assumptions as vLLM
//   (every projection bias=False and load_weights skips a ".bias" with no parameter, so it drops
//   every bias: sgl-project/sglang @00114aef; interleaved RoPE, rope_scaling → deepseek_yarn), no tied lm_head and no check
//   for missing weights (they stay at their initial values). Only its triton backend handles
//   latent shapes other than 512 + 64.
// - llama.cpp deepseek2 (convert_hf_to_gguf.py + llama-model.cpp): attn_kv_a_norm is a
//   required tensor; the graph has no attention or MLP bias (src/models/deepseek2.cpp,
//   ggml-org/llama.cpp @07bede6a: build_attn(..., wo, NULL, ...)), so the biases the converter
//   writes are tensors it never creates and the load fails ("wrong number of tensors",
//   llama-model-loader.cpp): it keeps none; RoPE is the pairwise (interleaved) kind; the converter writes linear and YaRN
//   scaling but has no deepseek2 form of Llama-3 frequency factors; it splits kv_b_proj per
//   head using config num_key_value_heads (asserting the row count); a tied lm_head is skipped
//   and output.weight falls back to token_embd.
import {
  DEEPSEEK_ARCHITECTURES, DEEPSEEK_MODEL_TYPES, STOCK_DEEPSEEK_EXTRA_KEYS, STOCK_DEEPSEEK_V3_KEYS, stockTensors,
} from '../arch/deepseek-stock.js';
import { checkMoe } from './moe-rules.js';
import { checkBiases } from './bias-rules.js';
import { ALL, EXPORT_FIX, isInt, isObj, type Finding, type FolderFacts, type Impact, type MlaDims, type TensorFact } from './findings.js';
import { checkKernels } from './kernels.js';
import { EXACT_MODEL_TYPE } from '../arch/deepseek.js';

export * from './findings.js';
export { checkBiases } from './bias-rules.js';
export { checkKernels, kernelTables, type KernelStatus, type KernelTables } from './kernels.js';

// ---------------------------------------------------------------------------------------------
// Identity and shape of the config

const MLA_MODEL_TYPES: readonly string[] = DEEPSEEK_MODEL_TYPES;
const ARCHITECTURES = Object.keys(DEEPSEEK_ARCHITECTURES);

/** model_type / architectures: what every engine dispatches on. */
export function checkIdentity(c: Record<string, unknown>): Finding[] {
  const out: Finding[] = [];
  const mt = c.model_type;
  if (typeof mt !== 'string' || !MLA_MODEL_TYPES.includes(mt)) {
    const ours = mt === 'llama_mha2mla' ? ' (transmla\'s MHA2MLA variant: a RoPE key per KV head, which the DeepSeek layout cannot express; it runs only in transmla)'
      : mt === EXACT_MODEL_TYPE ? ' (transmla\'s exact variant, named so that no stock engine takes it for DeepSeek: it has no kv_a_layernorm and runs only in transmla)' : '';
    out.push({
      rule: 'model-type',
      impact: ALL('will-not-load'),
      message: `model_type ${JSON.stringify(mt)} is not deepseek_v3/deepseek_v2${ours}: transformers, vLLM, SGLang and llama.cpp's converter pick the DeepSeek MLA code by it`,
      ...(mt === EXACT_MODEL_TYPE ? { fix: `${EXPORT_FIX} (writes the stock folder)` } : {}),
    });
    return out;
  }
  const arch = c.architectures;
  if (!Array.isArray(arch) || !arch.some((a) => ARCHITECTURES.includes(a as string))) {
    out.push({
      rule: 'architectures',
      impact: { vllm: 'will-not-load', sglang: 'will-not-load', 'llama.cpp': 'will-not-load' },
      message: `architectures ${JSON.stringify(arch)} names no DeepseekV3ForCausalLM/DeepseekV2ForCausalLM: vLLM, SGLang and convert_hf_to_gguf.py choose the model class by it (transformers goes by model_type)`,
      fix: 'set "architectures": ["DeepseekV3ForCausalLM"]',
    });
  }
  return out;
}

const REQUIRED_INTS: [key: string, min: number][] = [
  ['num_hidden_layers', 1], ['hidden_size', 1], ['num_attention_heads', 1], ['vocab_size', 1], ['intermediate_size', 1],
  ['kv_lora_rank', 1], ['qk_rope_head_dim', 2], ['qk_nope_head_dim', 0], ['v_head_dim', 1],
];

/** The MLA dimensions, or a finding saying which are missing (stock defaults are DeepSeek-V3's 671B shapes). */
export function readDims(c: Record<string, unknown>): MlaDims | Finding {
  const bad: string[] = [];
  for (const [k, min] of REQUIRED_INTS) if (!isInt(c[k], min)) bad.push(`${k} (${JSON.stringify(c[k])})`);
  const q = c.q_lora_rank;
  if (q !== null && q !== undefined && !isInt(q, 1)) bad.push(`q_lora_rank (${JSON.stringify(q)})`);
  if (q === undefined) bad.push('q_lora_rank (absent: transformers defaults to 1536; write null for a plain q_proj)');
  if (bad.length > 0) {
    return {
      rule: 'config-dims',
      impact: ALL('will-not-load'),
      message: `config.json lacks valid ${bad.join(', ')}: stock code falls back to DeepSeek-V3's own sizes, which do not match the weights`,
    };
  }
  const n = (k: string): number => c[k] as number;
  return {
    layers: n('num_hidden_layers'), hidden: n('hidden_size'), heads: n('num_attention_heads'), vocab: n('vocab_size'),
    intermediate: n('intermediate_size'), kvLoraRank: n('kv_lora_rank'), qLoraRank: (q as number | null) ?? null,
    qkRopeHeadDim: n('qk_rope_head_dim'), qkNopeHeadDim: n('qk_nope_head_dim'), vHeadDim: n('v_head_dim'),
    denseLayers: n('num_hidden_layers'),
  };
}

/** num_key_value_heads and head_dim, which MLA does not use but stock code still reads. */
export function checkHeadKeys(c: Record<string, unknown>, d: MlaDims): Finding[] {
  const out: Finding[] = [];
  const kv = c.num_key_value_heads;
  if (kv !== undefined && kv !== null && kv !== d.heads) {
    out.push({
      rule: 'num-key-value-heads',
      impact: { transformers: 'will-not-load', 'llama.cpp': 'will-not-load' },
      message: `num_key_value_heads ${JSON.stringify(kv)} ≠ num_attention_heads ${d.heads}; MLA expands the latent into one key/value per query head`,
      effect: {
        transformers: 'it repeats the expanded keys by num_attention_heads / num_key_value_heads, so attention fails at the first forward',
        'llama.cpp': 'convert_hf_to_gguf.py splits kv_b_proj into num_key_value_heads heads and its shape assertion fails',
      },
      fix: `set "num_key_value_heads": ${d.heads}`,
    });
  } else if (kv === undefined || kv === null) {
    out.push({
      rule: 'num-key-value-heads',
      impact: { 'llama.cpp': 'will-not-load' },
      message: 'num_key_value_heads is absent',
      effect: { 'llama.cpp': 'convert_hf_to_gguf.py reads it to split kv_b_proj (KeyError)' },
      fix: `set "num_key_value_heads": ${d.heads}`,
    });
  }
  const hd = c.head_dim;
  if (hd !== undefined && hd !== null && hd !== d.qkRopeHeadDim) {
    out.push({
      rule: 'head-dim',
      impact: { transformers: 'will-not-load' },
      message: `head_dim ${JSON.stringify(hd)} ≠ qk_rope_head_dim ${d.qkRopeHeadDim}: transformers' DeepseekV3 rotary embedding takes its width from head_dim, so its cos/sin no longer fit q_pe/k_pe`,
      fix: `set "head_dim": ${d.qkRopeHeadDim} (or drop it)`,
    });
  }
  return out;
}

/** Dense vs MoE layers: which MLP each engine builds per layer (sets d.denseLayers for the tensor checks). */
export function checkMlpLayout(c: Record<string, unknown>, d: MlaDims, tensors: ReadonlyMap<string, TensorFact>): Finding[] {
  const out: Finding[] = [];
  const experts = c.n_routed_experts;
  const fk = c.first_k_dense_replace;
  const firstDense = isInt(fk, 0) ? fk : 3; // transformers' default
  const hasExpertTensors = [...tensors.keys()].some((n) => n.includes('.mlp.experts.') || n.includes('.mlp.gate.weight'));
  if (experts === null || experts === undefined) {
    out.push({
      rule: 'moe-keys',
      impact: { vllm: 'will-not-load', sglang: 'will-not-load' },
      message: `n_routed_experts is ${experts === null ? 'null' : 'absent'}`,
      effect: {
        vllm: 'DeepseekV2 load_weights adds to it to build the expert map (TypeError on None)',
        sglang: 'DeepseekV2 load_weights adds to it to build the expert map (TypeError on None)',
      },
      fix: 'write harmless MoE values (n_routed_experts 1, n_shared_experts 1, num_experts_per_tok 1, moe_intermediate_size, first_k_dense_replace = num_hidden_layers), as transmla convert does',
    });
  }
  const moeLayers = (typeof experts === 'number' && experts > 0) || experts === undefined ? Math.max(0, d.layers - firstDense) : 0;
  if (moeLayers > 0 && !hasExpertTensors) {
    out.push({
      rule: 'dense-layers',
      impact: { transformers: 'incorrect', vllm: 'will-not-load', sglang: 'will-not-load', 'llama.cpp': 'will-not-load' },
      message: `first_k_dense_replace ${isInt(fk, 0) ? fk : `absent (default 3)`} < num_hidden_layers ${d.layers}: stock code builds mixture-of-experts MLPs for ${moeLayers} layer(s), but the checkpoint has dense MLP weights only`,
      fix: `set "first_k_dense_replace": ${d.layers}`,
    });
  } else if (moeLayers > 0) {
    d.denseLayers = Math.min(d.layers, firstDense);
    out.push(...checkMoe(c, d, tensors, d.denseLayers));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tensors

const sameShape = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** Lists a few names and how many more. */
function few(names: string[], n = 3): string {
  return names.slice(0, n).join(', ') + (names.length > n ? ` and ${names.length - n} more` : '');
}

/** Missing tensors and shape mismatches against the config, with the exact-variant norm called out. */
export function checkTensors(c: Record<string, unknown>, d: MlaDims, f: FolderFacts): Finding[] {
  const out: Finding[] = [];
  const exp = stockTensors(d);
  const wrong = exp.filter((e) => f.tensors.has(e.name) && !sameShape(f.tensors.get(e.name)!.shape, e.shape));
  if (wrong.length > 0) {
    const w = wrong[0]!;
    out.push({
      rule: 'tensor-shapes',
      impact: ALL('will-not-load'),
      message: `${wrong.length} tensor(s) do not match config.json: ${w.name} is [${f.tensors.get(w.name)!.shape.join(', ')}], the config implies [${w.shape.join(', ')}]${wrong.length > 1 ? ` (also ${few(wrong.slice(1).map((x) => x.name))})` : ''}`,
    });
  }
  const missing = exp.filter((e) => !f.tensors.has(e.name));
  const kvNorm = missing.filter((e) => e.name.endsWith('.kv_a_layernorm.weight'));
  if (kvNorm.length > 0) {
    const exact = c.qk_latent_layernorm === false || f.transmla !== null;
    out.push({
      rule: 'kv-a-layernorm',
      impact: { transformers: 'incorrect', vllm: 'will-not-load', sglang: 'incorrect', 'llama.cpp': 'will-not-load' },
      message: `no self_attn.kv_a_layernorm.weight in ${kvNorm.length === d.layers ? `any of the ${d.layers} layers` : `${kvNorm.length} of ${d.layers} layers`}` +
        (exact ? ' (transmla\'s exact variant, which uses the latent without a norm)' : '') +
        '; stock DeepSeek code always RMS-normalises the latent before kv_b_proj',
      effect: {
        transformers: 'it initialises the missing norm to ones, which is not the identity (it rescales every token\'s latent to unit RMS)',
        vllm: 'loading stops with "Following weights were not initialized from checkpoint"',
        sglang: 'the norm keeps its initial ones and rescales every token\'s latent',
        'llama.cpp': 'blk.N.attn_kv_a_norm is a required tensor of deepseek2',
      },
      fix: `${EXPORT_FIX} (writes a calibrated kv_a_layernorm)`,
    });
  }
  const rest = missing.filter((e) => !e.name.endsWith('.kv_a_layernorm.weight'));
  const restNorms = rest.filter((e) => e.norm), restLinear = rest.filter((e) => !e.norm);
  if (restLinear.length > 0) {
    out.push({
      rule: 'missing-tensors',
      impact: { transformers: 'incorrect', vllm: 'will-not-load', sglang: 'incorrect', 'llama.cpp': 'will-not-load' },
      message: `${restLinear.length} weight(s) the config implies are missing: ${few(restLinear.map((e) => e.name))}`,
      effect: { transformers: 'initialised at random (with a warning)', vllm: 'loading stops (weights not initialized from checkpoint)', sglang: 'left uninitialised', 'llama.cpp': 'missing tensor' },
    });
  }
  if (restNorms.length > 0) {
    out.push({
      rule: 'missing-norms',
      impact: { transformers: 'incorrect', vllm: 'will-not-load', sglang: 'incorrect', 'llama.cpp': 'will-not-load' },
      message: `${restNorms.length} RMSNorm weight(s) are missing: ${few(restNorms.map((e) => e.name))}`,
      effect: { transformers: 'ones are used instead', vllm: 'loading stops (weights not initialized from checkpoint)', sglang: 'ones are used instead', 'llama.cpp': 'missing tensor' },
    });
  }
  return out;
}

/** Tensors stock code has no parameter for (biases and lm_head have their own rules). */
export function checkUnexpectedTensors(d: MlaDims, f: FolderFacts): Finding[] {
  const expected = new Set(stockTensors(d).map((e) => e.name));
  const extra = [...f.tensors.keys()].filter((n) => !expected.has(n) && n !== 'lm_head.weight' &&
    !/^model\.layers\.\d+\.(self_attn|mlp)\.[a-z_]+\.bias$/.test(n) && !n.endsWith('rotary_emb.inv_freq') &&
    !n.includes('.mlp.experts.') && !n.includes('.mlp.gate.') && !n.includes('.mlp.shared_experts.'));
  if (extra.length === 0) return [];
  return [{
    rule: 'unexpected-tensors',
    impact: { transformers: 'unknown', vllm: 'will-not-load', sglang: 'will-not-load', 'llama.cpp': 'will-not-load' },
    message: `${extra.length} tensor(s) stock DeepseekV3 code has no parameter for: ${few(extra)}`,
    effect: {
      transformers: 'they are dropped as unexpected keys (with a warning); whatever they did is lost',
      vllm: 'load_weights looks every name up in its parameters (KeyError)',
      sglang: 'load_weights looks every name up in its parameters (KeyError)',
      'llama.cpp': 'convert_hf_to_gguf.py cannot map them ("Can not map tensor")',
    },
  }];
}

/** lm_head.weight, which only transformers (and current llama.cpp) can take from a tie. */
export function checkLmHead(c: Record<string, unknown>, d: MlaDims, f: FolderFacts): Finding[] {
  const t = f.tensors.get('lm_head.weight');
  if (t) {
    if (!sameShape(t.shape, [d.vocab, d.hidden])) {
      return [{ rule: 'tensor-shapes', impact: ALL('will-not-load'), message: `lm_head.weight is [${t.shape.join(', ')}], the config implies [${d.vocab}, ${d.hidden}]` }];
    }
    return [];
  }
  const fix = 'write lm_head.weight (a copy of model.embed_tokens.weight)';
  if (c.tie_word_embeddings === true) {
    return [{
      rule: 'tied-lm-head',
      impact: { vllm: 'will-not-load', sglang: 'incorrect' },
      message: 'no lm_head.weight (tie_word_embeddings: true); transformers ties it to the embedding and current llama.cpp falls back to token_embd, but vLLM\'s and SGLang\'s DeepseekV2 have no tied head',
      effect: { vllm: 'loading stops: lm_head.weight is not initialized from the checkpoint', sglang: 'logits come from an uninitialised lm_head' },
      fix,
    }];
  }
  return [{
    rule: 'missing-lm-head',
    impact: { transformers: 'incorrect', vllm: 'will-not-load', sglang: 'incorrect' },
    message: 'no lm_head.weight and tie_word_embeddings is not true: stock code builds an untied output head',
    effect: { transformers: 'initialised at random (with a warning)', vllm: 'loading stops: lm_head.weight is not initialized from the checkpoint', sglang: 'left uninitialised' },
    fix,
  }];
}

/** RoPE pairing: only transformers honours rope_interleave: false. */
export function checkRopeLayout(c: Record<string, unknown>): Finding[] {
  if (c.rope_interleave !== false) return [];
  return [{
    rule: 'rope-layout',
    impact: { vllm: 'incorrect', sglang: 'incorrect', 'llama.cpp': 'incorrect' },
    message: 'rope_interleave: false (rotate-half pairing of q_pe/k_pe); transformers honours it',
    effect: {
      vllm: 'RoPE always rotates adjacent pairs (is_neox_style=False): the wrong elements are paired',
      sglang: 'RoPE always rotates adjacent pairs (is_neox_style=False): the wrong elements are paired',
      'llama.cpp': 'deepseek2 uses pairwise (adjacent) RoPE: the wrong elements are paired',
    },
    fix: `${EXPORT_FIX} (permutes the q_pe/k_pe rows into interleaved pairs and sets rope_interleave: true)`,
  }];
}

/** rope_scaling: vLLM/SGLang coerce any scaling to DeepSeek YaRN; llama.cpp converts only YaRN. */
export function checkRopeScaling(c: Record<string, unknown>): Finding[] {
  const rs = isObj(c.rope_scaling) ? c.rope_scaling : isObj(c.rope_parameters) ? c.rope_parameters : null;
  if (!rs) return [];
  const type = String(rs.rope_type ?? rs.type ?? 'default');
  if (type === 'default') return [];
  if (type === 'yarn' || type === 'deepseek_yarn') {
    return [{
      rule: 'rope-scaling-yarn',
      impact: { transformers: 'note', vllm: 'note', sglang: 'note', 'llama.cpp': 'note' },
      message: `rope_scaling ${type} (factor ${JSON.stringify(rs.factor)}): every stock engine applies DeepSeek YaRN with its attention mscale; transmla's own engine does not run YaRN`,
    }];
  }
  const llamaCppDrops = type !== 'linear';
  return [{
    rule: 'rope-scaling',
    impact: { vllm: 'incorrect', sglang: 'incorrect', ...(llamaCppDrops ? { 'llama.cpp': 'incorrect' as const } : {}) },
    message: `rope_scaling of type "${type}"; transformers applies it as written`,
    effect: {
      vllm: 'any rope scaling becomes "deepseek_yarn": other frequencies and an attention mscale',
      sglang: 'any rope_scaling becomes "deepseek_yarn": other frequencies and an attention mscale',
      ...(llamaCppDrops ? { 'llama.cpp': `convert_hf_to_gguf.py has no deepseek2 form of "${type}" scaling (it writes linear and YaRN only), so the scaling is dropped` } : {}),
    },
    fix: `${EXPORT_FIX} (drops or converts rope_scaling and documents the context limit)`,
  }];
}

// Keys transformers' DeepseekV3Config and PretrainedConfig define, plus DeepSeek's own keys vLLM
// reads. Anything else is carried along and ignored by every stock engine.
const KNOWN_KEYS = new Set([...STOCK_DEEPSEEK_V3_KEYS, ...STOCK_DEEPSEEK_EXTRA_KEYS]);

/**
 * Keys that carry meaning in transmla/TransMLA but that stock code ignores. Whether ignoring
 * them changes the result is the weights' business: qk_latent_layernorm: false is harmful
 * exactly when kv_a_layernorm is missing, which the kv-a-layernorm rule reports.
 */
const MEANINGFUL_CUSTOM: Record<string, (v: unknown) => { why: string; impact: Impact } | null> = {
  qk_latent_layernorm: (v) => (v === false ? { why: 'declares a latent without RMSNorm; stock code ignores it and applies kv_a_layernorm', impact: 'note' } : null),
  transmla_variant: (v) => ({ why: `declares the ${JSON.stringify(v)} variant, which stock code cannot express`, impact: 'incorrect' }),
};

export function checkCustomKeys(c: Record<string, unknown>): Finding[] {
  const out: Finding[] = [];
  const unknown = Object.keys(c).filter((k) => !KNOWN_KEYS.has(k));
  const meaningful = unknown.flatMap((k) => {
    const m = MEANINGFUL_CUSTOM[k]?.(c[k]);
    return m ? [{ text: `${k}: ${JSON.stringify(c[k])} ${m.why}`, impact: m.impact }] : [];
  });
  if (meaningful.length > 0) {
    const harmful = meaningful.some((m) => m.impact === 'incorrect');
    out.push({
      rule: 'custom-keys',
      impact: ALL(harmful ? 'incorrect' : 'note'),
      message: `transmla/TransMLA config key(s) every stock engine ignores: ${meaningful.map((m) => m.text).join('; ')}`,
      ...(harmful ? { fix: `${EXPORT_FIX} (writes stock keys only)` } : {}),
    });
  }
  const ignored = unknown.filter((k) => !(k in MEANINGFUL_CUSTOM));
  if (ignored.length > 0) {
    out.push({ rule: 'unused-keys', impact: ALL('note'), message: `config key(s) no stock DeepseekV3 code reads (harmless): ${ignored.join(', ')}` });
  }
  return out;
}

/** Checkpoint dtype: the MLA kernels take fp16/bf16 only. */
export function checkDtype(c: Record<string, unknown>, f: FolderFacts): Finding[] {
  const dtypes = new Set([...f.tensors.values()].map((t) => t.dtype));
  const declared = c.torch_dtype ?? c.dtype;
  if (!dtypes.has('F32') && declared !== 'float32') return [];
  return [{
    rule: 'dtype-f32',
    impact: { vllm: 'note', sglang: 'note' },
    message: `float32 weights (${[...dtypes].sort().join('/')}, torch_dtype ${JSON.stringify(declared ?? null)}): vLLM's and SGLang's MLA kernels run only float16/bfloat16, so --dtype auto serves it in half precision (results differ slightly from float32) and --dtype float32 finds no MLA backend`,
  }];
}

/** transmla.json beside the weights: say which variant this is. */
export function checkTransmlaReport(f: FolderFacts): Finding[] {
  if (!f.transmla) return [];
  const method = typeof f.transmla.method === 'string' ? f.transmla.method : 'unknown method';
  return [{ rule: 'transmla-report', impact: ALL('note'), message: `written by transmla convert: ${method}` }];
}

/** tokenizer.json: what convert_hf_to_gguf.py builds the GGUF vocabulary from. */
export function checkTokenizer(f: FolderFacts): Finding[] {
  if (f.files.has('tokenizer.json')) return [];
  return [{
    rule: 'tokenizer',
    impact: { 'llama.cpp': 'will-not-load', transformers: 'note', vllm: 'note', sglang: 'note' },
    message: 'no tokenizer.json: convert_hf_to_gguf.py cannot build the deepseek2 vocabulary (the other engines need a tokenizer from somewhere too)',
  }];
}

/** The folder rules in order; the first two can stop the rest. */
export function runFolderRules(f: FolderFacts): { findings: Finding[]; dims: MlaDims | null } {
  const c = f.config;
  const findings = checkIdentity(c);
  if (findings.some((x) => x.rule === 'model-type')) return { findings, dims: null };
  const dims = readDims(c);
  if (!('layers' in dims)) return { findings: [...findings, dims], dims: null };
  findings.push(
    ...checkHeadKeys(c, dims),
    ...checkMlpLayout(c, dims, f.tensors),
    ...checkTensors(c, dims, f),
    ...checkUnexpectedTensors(dims, f),
    ...checkLmHead(c, dims, f),
    ...checkBiases(c, f),
    ...checkRopeLayout(c),
    ...checkRopeScaling(c),
    ...checkCustomKeys(c),
    ...checkKernels(dims),
    ...checkDtype(c, f),
    ...checkTokenizer(f),
    ...checkTransmlaReport(f),
  );
  return { findings, dims };
}
