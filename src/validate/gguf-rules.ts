// What llama.cpp's deepseek2 loader requires of a GGUF file (docs/stock-engines.md#llama-cpp) (llama-model.cpp load_hparams /
// load_tensors for LLM_ARCH_DEEPSEEK2, as written by convert_hf_to_gguf.py's DeepseekV2Model):
// - required keys: block_count, context_length, embedding_length, feed_forward_length,
//   attention.head_count, attention.layer_norm_rms_epsilon, attention.kv_lora_rank,
//   rope.dimension_count, leading_dense_block_count, expert_feed_forward_length,
//   expert_shared_count, expert_weights_scale; attention.q_lora_rank selects q_a/q_b over q;
// - MLA (latent cache) needs attention.key_length_mla / value_length_mla and the split
//   attn_k_b / attn_v_b tensors; without them the file loads as legacy attention with attn_kv_b
//   and caches full keys and values;
// - every tensor the graph creates must be present with its exact shape, and no others
//   ("wrong number of tensors"); output.weight may be absent (token_embd is used).
// Shapes here are row-major (GGUF ne reversed), as GgufFile reports them.
import type { GgufFile } from '../io/gguf.js';
import type { Finding } from './rules.js';

const LC = 'llama.cpp' as const;

function int(f: GgufFile, key: string): number | undefined {
  try {
    const v = f.getNumber(key);
    return v !== undefined && Number.isSafeInteger(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

export interface GgufDims {
  layers: number;
  hidden: number;
  heads: number;
  kvLoraRank: number;
  qLoraRank: number;
  ropeDim: number;
  denseLead: number;
  ff: number;
  /** key_length_mla / value_length_mla when present (MLA form). */
  kMla: number | null;
  vMla: number | null;
}

export function runGgufRules(f: GgufFile): { findings: Finding[]; dims: GgufDims | null } {
  const arch = f.getString('general.architecture');
  const out: Finding[] = [];
  const k = (s: string): string => `${arch}.${s}`;
  const required = ['block_count', 'context_length', 'embedding_length', 'feed_forward_length', 'attention.head_count',
    'attention.layer_norm_rms_epsilon', 'attention.kv_lora_rank', 'rope.dimension_count', 'leading_dense_block_count',
    'expert_feed_forward_length', 'expert_shared_count', 'expert_weights_scale'];
  const missing = required.filter((s) => f.getNumber(k(s)) === undefined);
  if (missing.length > 0) {
    out.push({ rule: 'gguf-keys', impact: { [LC]: 'will-not-load' }, message: `missing metadata ${missing.map(k).join(', ')}: llama.cpp's deepseek2 loader requires them` });
  }
  if (f.getString('tokenizer.ggml.model') === undefined || f.value('tokenizer.ggml.tokens') === undefined) {
    out.push({ rule: 'gguf-vocab', impact: { [LC]: 'will-not-load' }, message: 'no tokenizer.ggml.model / tokenizer.ggml.tokens: llama.cpp cannot build the vocabulary' });
  }
  if (missing.some((s) => ['block_count', 'embedding_length', 'attention.head_count', 'attention.kv_lora_rank', 'rope.dimension_count', 'feed_forward_length'].includes(s))) {
    return { findings: out, dims: null };
  }
  const d: GgufDims = {
    layers: int(f, k('block_count'))!, hidden: int(f, k('embedding_length'))!, heads: int(f, k('attention.head_count'))!,
    kvLoraRank: int(f, k('attention.kv_lora_rank'))!, qLoraRank: int(f, k('attention.q_lora_rank')) ?? 0,
    ropeDim: int(f, k('rope.dimension_count'))!, denseLead: int(f, k('leading_dense_block_count')) ?? 0,
    ff: int(f, k('feed_forward_length'))!, kMla: int(f, k('attention.key_length_mla')) ?? null, vMla: int(f, k('attention.value_length_mla')) ?? null,
  };
  const mla = d.kMla !== null && d.vMla !== null;
  const kLen = int(f, k('attention.key_length')), vLen = int(f, k('attention.value_length'));
  if (!mla) {
    out.push({
      rule: 'gguf-legacy',
      impact: { [LC]: 'not-fast' },
      message: `no ${k('attention.key_length_mla')}/${k('attention.value_length_mla')}: llama.cpp loads it as legacy (non-MLA) attention and caches full per-head keys and values; re-convert with a current convert_hf_to_gguf.py`,
    });
  } else {
    const hkv = int(f, k('attention.head_count_kv'));
    if (kLen !== d.kvLoraRank + d.ropeDim || vLen !== d.kvLoraRank || (hkv !== undefined && hkv !== 1)) {
      out.push({
        rule: 'gguf-mla-lengths',
        impact: { [LC]: 'will-not-load' },
        message: `MLA form needs attention.key_length = kv_lora_rank + rope = ${d.kvLoraRank + d.ropeDim} (has ${kLen}), value_length = kv_lora_rank = ${d.kvLoraRank} (has ${vLen}) and head_count_kv 1 (has ${hkv})`,
      });
    }
  }
  // Head sizes after decompression.
  const kHead = mla ? d.kMla! : kLen, vHead = mla ? d.vMla! : vLen;
  if (kHead === undefined || vHead === undefined) {
    out.push({ rule: 'gguf-keys', impact: { [LC]: 'will-not-load' }, message: `missing ${k('attention.key_length')}/${k('attention.value_length')}` });
    return { findings: out, dims: d };
  }
  const dn = kHead - d.ropeDim, H = d.heads, D = d.hidden, r = d.kvLoraRank;
  const emb = f.tensors.find((t) => t.name === 'token_embd.weight');
  const V = emb?.shape[0] ?? 0;
  const exp: [string, number[]][] = [['token_embd.weight', [V, D]], ['output_norm.weight', [D]]];
  for (let l = 0; l < d.layers; l++) {
    const b = `blk.${l}.`;
    exp.push([`${b}attn_norm.weight`, [D]], [`${b}ffn_norm.weight`, [D]]);
    if (d.qLoraRank > 0) exp.push([`${b}attn_q_a.weight`, [d.qLoraRank, D]], [`${b}attn_q_a_norm.weight`, [d.qLoraRank]], [`${b}attn_q_b.weight`, [H * kHead, d.qLoraRank]]);
    else exp.push([`${b}attn_q.weight`, [H * kHead, D]]);
    exp.push([`${b}attn_kv_a_mqa.weight`, [r + d.ropeDim, D]], [`${b}attn_kv_a_norm.weight`, [r]], [`${b}attn_output.weight`, [D, H * vHead]]);
    if (mla) exp.push([`${b}attn_k_b.weight`, [H, r, dn]], [`${b}attn_v_b.weight`, [H, vHead, r]]);
    else exp.push([`${b}attn_kv_b.weight`, [H * (dn + vHead), r]]);
    if (l < d.denseLead) exp.push([`${b}ffn_gate.weight`, [d.ff, D]], [`${b}ffn_up.weight`, [d.ff, D]], [`${b}ffn_down.weight`, [D, d.ff]]);
  }
  const have = new Map(f.tensors.map((t) => [t.name, t.shape]));
  const miss = exp.filter(([n]) => !have.has(n)).map(([n]) => n);
  const wrong = exp.filter(([n, s]) => have.has(n) && !(have.get(n)!.length === s.length && have.get(n)!.every((x, i) => x === s[i])));
  if (miss.length > 0) {
    const norm = miss.filter((n) => n.endsWith('attn_kv_a_norm.weight'));
    out.push({
      rule: norm.length > 0 ? 'gguf-kv-a-norm' : 'gguf-missing-tensors',
      impact: { [LC]: 'will-not-load' },
      message: `missing tensor(s) ${miss.slice(0, 3).join(', ')}${miss.length > 3 ? ` and ${miss.length - 3} more` : ''}: llama.cpp's deepseek2 loader requires them` +
        (norm.length > 0 ? ' (attn_kv_a_norm is the stock latent RMSNorm; transmla\'s exact variant has none)' : ''),
    });
  }
  if (wrong.length > 0) {
    const [n, s] = wrong[0]!;
    out.push({ rule: 'gguf-shapes', impact: { [LC]: 'will-not-load' }, message: `${wrong.length} tensor(s) have the wrong shape: ${n} is [${have.get(n)!.join(', ')}], the metadata implies [${s.join(', ')}]` });
  }
  const expected = new Set(exp.map(([n]) => n));
  const extra = f.tensors.map((t) => t.name).filter((n) => !expected.has(n) && n !== 'output.weight' && !(d.denseLead < d.layers && /^blk\.\d+\.ffn_.*(exps|shexp|inp)/.test(n)));
  if (extra.length > 0) {
    out.push({ rule: 'gguf-extra-tensors', impact: { [LC]: 'will-not-load' }, message: `tensor(s) the deepseek2 graph does not create: ${extra.slice(0, 3).join(', ')}${extra.length > 3 ? ` and ${extra.length - 3} more` : ''} (llama.cpp fails with "wrong number of tensors")` });
  }
  if (d.denseLead < d.layers) {
    out.push({ rule: 'moe-not-checked', impact: { [LC]: 'unknown' }, message: `${d.layers - d.denseLead} mixture-of-experts layer(s): expert tensors are not checked by validate` });
  }
  return { findings: out, dims: d };
}
