// Hugging Face Llama-family model ⇄ llama.cpp GGUF ("llama" or "qwen2" architecture).
//
// Facts this file relies on (read from llama.cpp's sources, not copied):
// - llama.cpp's LLAMA arch applies "normal" RoPE to adjacent pairs (2i, 2i+1); HF Llama applies
//   rotate-half RoPE to pairs (i, i+d/2). convert_hf_to_gguf.py therefore permutes the rows of
//   q_proj/k_proj (weights and biases) inside each head: new row 2i ← old row i,
//   new row 2i+1 ← old row i+d/2. QWEN2 uses NEOX (rotate-half) RoPE: no permutation.
// - Tensor names: token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
//   ffn_gate, ffn_up, ffn_down}, output_norm, output (absent → llama.cpp reuses token_embd),
//   rope_freqs (llama3 per-frequency divisors, [head_dim/2] f32).
// - llama.cpp checks metadata types strictly (u32 hparams, f32 eps/theta, i32 token types,
//   f32 scores) and rejects files holding tensors it does not use.
// - SentencePiece vocabularies ("llama" tokenizer model): llama.cpp merges, among all adjacent
//   symbol pairs whose concatenation is a token, the one whose token has the highest score
//   (leftmost on ties). A BPE tokenizer.json instead applies listed merges in rank order. Giving
//   each token the score −(rank of the first merge producing it) makes the two agree whenever
//   every split of a token into two tokens is a listed merge (true for tokenizer.json files
//   converted from a SentencePiece model, like the Llama 2 one).
import { readFileSync, existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { FloatData, FloatDType } from '../kernels/types.js';
import { kernels } from '../kernels/index.js';
import { halfToInterleavedPerm, ropeInvFreq } from '../models/rope.js';
import type { Tensor, WeightSource } from '../tensor.js';
import type { LlamaConfig, RopeScaling } from './hf-config.js';
import { GgufError, readGguf, writeGguf, type GgufFile, type GgufMetadataEntry, type GgufTensorInput } from './gguf.js';

export type GgufLlamaArch = 'llama' | 'qwen2';

/** llama.cpp token types (llama_token_type). */
export const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

/** llama.cpp general.file_type for all-F32 / mostly-F16 / mostly-BF16 files. */
const FILE_TYPE: Record<FloatDType, number> = { f32: 0, f16: 1, bf16: 32 };

// Our own keys: llama.cpp has no metadata for llama3 RoPE parameters (it only reads the
// rope_freqs tensor), so they are recorded here to give openGgufModel an exact config back.
const LLAMA3_KEYS = {
  factor: 'transmla.rope.llama3.factor',
  lowFreqFactor: 'transmla.rope.llama3.low_freq_factor',
  highFreqFactor: 'transmla.rope.llama3.high_freq_factor',
  originalMaxPositionEmbeddings: 'transmla.rope.llama3.original_max_position_embeddings',
} as const;

// ---------------------------------------------------------------------------------------------
// Tensor layout shared by export and import

interface TensorSpec {
  gguf: string;
  hf: string;
  /** Row-major shape (HF convention). */
  shape: number[];
  /** Rows to permute between rotate-half (HF) and adjacent-pair (GGUF llama) order. */
  rope?: { heads: number; headDim: number };
}

function tensorSpecs(c: LlamaConfig, arch: GgufLlamaArch, embedName: string): TensorSpec[] {
  const D = c.hiddenSize, H = c.numHeads, G = c.numKvHeads, d = c.headDim, I = c.intermediateSize, V = c.vocabSize;
  const permute = arch === 'llama';
  const specs: TensorSpec[] = [{ gguf: 'token_embd.weight', hf: embedName, shape: [V, D] }];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`, b = `blk.${l}`;
    const qRope = permute ? { heads: H, headDim: d } : undefined;
    const kRope = permute ? { heads: G, headDim: d } : undefined;
    specs.push(
      { gguf: `${b}.attn_norm.weight`, hf: `${p}.input_layernorm.weight`, shape: [D] },
      { gguf: `${b}.attn_q.weight`, hf: `${p}.self_attn.q_proj.weight`, shape: [H * d, D], ...(qRope && { rope: qRope }) },
      { gguf: `${b}.attn_k.weight`, hf: `${p}.self_attn.k_proj.weight`, shape: [G * d, D], ...(kRope && { rope: kRope }) },
      { gguf: `${b}.attn_v.weight`, hf: `${p}.self_attn.v_proj.weight`, shape: [G * d, D] },
      { gguf: `${b}.attn_output.weight`, hf: `${p}.self_attn.o_proj.weight`, shape: [D, H * d] },
    );
    if (c.attentionBias) {
      specs.push(
        { gguf: `${b}.attn_q.bias`, hf: `${p}.self_attn.q_proj.bias`, shape: [H * d], ...(qRope && { rope: qRope }) },
        { gguf: `${b}.attn_k.bias`, hf: `${p}.self_attn.k_proj.bias`, shape: [G * d], ...(kRope && { rope: kRope }) },
        { gguf: `${b}.attn_v.bias`, hf: `${p}.self_attn.v_proj.bias`, shape: [G * d] },
      );
    }
    if (c.oBias) specs.push({ gguf: `${b}.attn_output.bias`, hf: `${p}.self_attn.o_proj.bias`, shape: [D] });
    specs.push(
      { gguf: `${b}.ffn_norm.weight`, hf: `${p}.post_attention_layernorm.weight`, shape: [D] },
      { gguf: `${b}.ffn_gate.weight`, hf: `${p}.mlp.gate_proj.weight`, shape: [I, D] },
      { gguf: `${b}.ffn_up.weight`, hf: `${p}.mlp.up_proj.weight`, shape: [I, D] },
      { gguf: `${b}.ffn_down.weight`, hf: `${p}.mlp.down_proj.weight`, shape: [D, I] },
    );
    if (c.mlpBias) {
      specs.push(
        { gguf: `${b}.ffn_gate.bias`, hf: `${p}.mlp.gate_proj.bias`, shape: [I] },
        { gguf: `${b}.ffn_up.bias`, hf: `${p}.mlp.up_proj.bias`, shape: [I] },
        { gguf: `${b}.ffn_down.bias`, hf: `${p}.mlp.down_proj.bias`, shape: [D] },
      );
    }
  }
  specs.push({ gguf: 'output_norm.weight', hf: 'model.norm.weight', shape: [D] });
  if (!c.tieWordEmbeddings) specs.push({ gguf: 'output.weight', hf: 'lm_head.weight', shape: [V, D] });
  return specs;
}

/**
 * Permutes rows within each head: toInterleaved=true maps HF rotate-half order to llama.cpp's
 * adjacent-pair order (convert_hf_to_gguf's permute), false is the inverse. Works on raw bits.
 */
export function permuteRopeRows(data: FloatData, heads: number, headDim: number, toInterleaved: boolean): FloatData {
  const rows = heads * headDim;
  if (data.length % rows !== 0) throw new GgufError(`cannot permute ${data.length} values as ${heads} heads × ${headDim} rows`);
  const cols = data.length / rows;
  const perm = halfToInterleavedPerm(headDim); // new[j] = old[perm[j]]
  const out = data instanceof Float32Array ? new Float32Array(data.length) : new Uint16Array(data.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < headDim; j++) {
      const a = (h * headDim + j) * cols, b = (h * headDim + perm[j]!) * cols;
      // forward: out row j ← in row perm[j]; inverse: out row perm[j] ← in row j.
      if (toInterleaved) out.set(data.subarray(b, b + cols), a);
      else out.set(data.subarray(a, a + cols), b);
    }
  }
  return out;
}

export function convertDType(t: Tensor, to: FloatDType): Tensor {
  if (t.dtype === to) return t;
  const f32 = t.dtype === 'f32' ? (t.data as Float32Array) : (() => {
    const o = new Float32Array(t.data.length);
    kernels().toF32(t.data as Uint16Array, t.dtype as 'f16' | 'bf16', o);
    return o;
  })();
  if (to === 'f32') return { dtype: 'f32', shape: t.shape, data: f32 };
  const bits = new Uint16Array(f32.length);
  kernels().fromF32(f32, to, bits);
  return { dtype: to, shape: t.shape, data: bits };
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ---------------------------------------------------------------------------------------------
// Tokenizer metadata

type Json = Record<string, unknown>;

function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function readJsonFile(path: string): Json {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new GgufError(`${path}: cannot read: ${(e as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new GgufError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
  if (!isObj(v)) throw new GgufError(`${path}: expected a JSON object`);
  return v;
}

/** Token content from a tokenizer_config value: "<s>" or {"content": "<s>", …}. */
function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (isObj(v) && typeof v.content === 'string') return v.content;
  return null;
}

// Pre-tokenizer regexes of tokenizer.json files and the llama.cpp pre-tokenizer names whose
// built-in regexes are equivalent (llama-vocab.cpp).
const LLAMA3_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function byteLevelOk(p: Json, useRegex: boolean): boolean {
  return p.type === 'ByteLevel' && p.add_prefix_space !== true && (p.use_regex ?? true) === useRegex;
}

/** Maps a byte-level pre-tokenizer to llama.cpp's name for it, or null when we know no equivalent. */
function gpt2PreName(pre: unknown): string | null {
  if (!isObj(pre)) return null;
  if (byteLevelOk(pre, true)) return 'gpt-2';
  if (pre.type !== 'Sequence' || !Array.isArray(pre.pretokenizers) || pre.pretokenizers.length !== 2) return null;
  const [a, b] = pre.pretokenizers as unknown[];
  if (!isObj(a) || !isObj(b)) return null;
  if (a.type === 'Split' && isObj(a.pattern) && typeof a.pattern.Regex === 'string' && a.behavior === 'Isolated' && a.invert !== true && byteLevelOk(b, false)) {
    if (a.pattern.Regex === LLAMA3_REGEX) return 'llama-bpe';
    if (a.pattern.Regex === QWEN2_REGEX) return 'qwen2';
    return null;
  }
  if (a.type === 'Digits' && a.individual_digits === true && byteLevelOk(b, true)) return 'smollm';
  return null;
}

function hasByteLevel(v: unknown): boolean {
  if (!isObj(v)) return false;
  if (v.type === 'ByteLevel') return true;
  const list = v.pretokenizers ?? v.decoders ?? v.processors;
  return Array.isArray(list) && list.some(hasByteLevel);
}

/**
 * Whether a SentencePiece-style tokenizer.json prepends "▁" (llama.cpp's add_space_prefix).
 * Only the normalizations llama.cpp's SPM tokenizer performs itself are accepted.
 */
function spmSpacePrefix(tj: Json, file: string): boolean {
  const norm = tj.normalizer, pre = tj.pre_tokenizer;
  function fail(what: string): never {
    throw new GgufError(`${file}: ${what} cannot be reproduced by llama.cpp's SentencePiece tokenizer (it only replaces spaces with "▁" and optionally prepends one)`);
  }
  let prefix = false;
  const steps: unknown[] = norm === null || norm === undefined ? [] : isObj(norm) && norm.type === 'Sequence' && Array.isArray(norm.normalizers) ? norm.normalizers : [norm];
  for (const s of steps) {
    if (!isObj(s)) fail(`normalizer ${JSON.stringify(s)}`);
    if (s.type === 'Prepend' && s.prepend === '▁') prefix = true;
    else if (s.type === 'Replace' && isObj(s.pattern) && s.pattern.String === ' ' && s.content === '▁') continue;
    else fail(`normalizer step ${JSON.stringify(s)}`);
  }
  if (pre !== null && pre !== undefined) {
    if (!isObj(pre) || pre.type !== 'Metaspace' || pre.replacement !== '▁' || pre.split === true) fail(`pre_tokenizer ${JSON.stringify(pre)}`);
    const scheme = pre.prepend_scheme ?? (pre.add_prefix_space === false ? 'never' : 'always');
    if (scheme !== 'never') prefix = true;
  }
  return prefix;
}

/** Whether the post-processor's single-sequence template starts (bos) or ends (eos) with a special token. */
function templateAdds(post: unknown, where: 'first' | 'last'): string | null {
  if (!isObj(post)) return null;
  if (post.type === 'Sequence' && Array.isArray(post.processors)) {
    for (const p of post.processors) {
      const r = templateAdds(p, where);
      if (r !== null) return r;
    }
    return null;
  }
  if (post.type !== 'TemplateProcessing' || !Array.isArray(post.single) || post.single.length === 0) return null;
  const item = post.single[where === 'first' ? 0 : post.single.length - 1] as unknown;
  if (isObj(item) && isObj(item.SpecialToken) && typeof item.SpecialToken.id === 'string') return item.SpecialToken.id;
  return null;
}

export interface TokenizerGgufInfo {
  model: 'llama' | 'gpt2';
  pre: string;
  tokenCount: number;
  /** Known behaviour differences between llama.cpp and the Hugging Face tokenizer for this vocabulary. */
  warnings: string[];
}

/**
 * Builds the `tokenizer.ggml.*` metadata from a Hugging Face tokenizer folder (tokenizer.json,
 * optional tokenizer_config.json / special_tokens_map.json). The token list is padded with
 * unused `[PAD<i>]` tokens up to `vocabSize` (the embedding's row count).
 */
export function tokenizerGgufMetadata(dir: string, vocabSize: number, fallback: { bos: number | null; eos: number | null } = { bos: null, eos: null }): { metadata: GgufMetadataEntry[]; info: TokenizerGgufInfo } {
  const file = join(dir, 'tokenizer.json');
  if (!existsSync(file)) throw new GgufError(`${dir}: no tokenizer.json (needed for the GGUF vocabulary)`);
  const tj = readJsonFile(file);
  const cfgPath = join(dir, 'tokenizer_config.json'), mapPath = join(dir, 'special_tokens_map.json');
  // tokenizer_config.json wins over special_tokens_map.json, as in transformers.
  const tc: Json = { ...(existsSync(mapPath) ? readJsonFile(mapPath) : {}), ...(existsSync(cfgPath) ? readJsonFile(cfgPath) : {}) };
  const model = tj.model;
  if (!isObj(model)) throw new GgufError(`${file}: no "model" object`);
  if (model.type !== 'BPE') throw new GgufError(`${file}: tokenizer model type ${JSON.stringify(model.type)} is not supported for GGUF export (only BPE: SentencePiece-style or byte-level)`);
  if (!isObj(model.vocab)) throw new GgufError(`${file}: model.vocab is not an object`);
  const rawMerges = model.merges ?? [];
  if (!Array.isArray(rawMerges)) throw new GgufError(`${file}: model.merges is not an array`);
  const merges: [string, string][] = rawMerges.map((m, i) => {
    if (typeof m === 'string') {
      const at = m.indexOf(' ', 1);
      if (at < 0) throw new GgufError(`${file}: merge #${i} ${JSON.stringify(m)} has no space separator`);
      return [m.slice(0, at), m.slice(at + 1)];
    }
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') return [m[0], m[1]];
    throw new GgufError(`${file}: merge #${i} is neither "a b" nor ["a", "b"]`);
  });

  // id → text, from the model vocab and the added tokens.
  const texts: (string | undefined)[] = [];
  const put = (text: string, id: unknown, what: string): void => {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) throw new GgufError(`${file}: ${what} ${JSON.stringify(text)} has invalid id ${JSON.stringify(id)}`);
    if (id >= vocabSize) throw new GgufError(`${file}: ${what} ${JSON.stringify(text)} has id ${id}, beyond the model's ${vocabSize} embedding rows`);
    const prev = texts[id];
    if (prev !== undefined && prev !== text) throw new GgufError(`${file}: id ${id} is both ${JSON.stringify(prev)} and ${JSON.stringify(text)}`);
    texts[id] = text;
  };
  for (const [text, id] of Object.entries(model.vocab)) put(text, id, 'vocab token');
  const special = new Set<number>(), added = new Set<number>();
  if (tj.added_tokens !== undefined && !Array.isArray(tj.added_tokens)) throw new GgufError(`${file}: added_tokens is not an array`);
  for (const a of (tj.added_tokens ?? []) as unknown[]) {
    if (!isObj(a) || typeof a.content !== 'string') throw new GgufError(`${file}: malformed added_tokens entry ${JSON.stringify(a)}`);
    put(a.content, a.id, 'added token');
    added.add(a.id as number);
    if (a.special === true) special.add(a.id as number);
  }
  const idOf = new Map<string, number>();
  texts.forEach((t, id) => { if (t !== undefined) idOf.set(t, id); });

  const isByteLevel = hasByteLevel(tj.pre_tokenizer) || hasByteLevel(tj.decoder);
  const kind: 'llama' | 'gpt2' = isByteLevel ? 'gpt2' : 'llama';
  const unkText = typeof model.unk_token === 'string' ? model.unk_token : tokenContent(tc.unk_token);
  const unkId = unkText !== null ? idOf.get(unkText) : undefined;

  const resolveId = (what: string, text: string | null, fb: number | null): number | null => {
    if (text !== null) {
      const id = idOf.get(text);
      if (id === undefined) throw new GgufError(`${dir}: ${what} token ${JSON.stringify(text)} is not in the vocabulary`);
      return id;
    }
    if (fb !== null && (fb < 0 || fb >= vocabSize)) throw new GgufError(`${dir}: ${what} token id ${fb} (from config.json) is outside the ${vocabSize}-token vocabulary`);
    return fb;
  };
  const bosText = tokenContent(tc.bos_token) ?? templateAdds(tj.post_processor, 'first');
  const eosText = tokenContent(tc.eos_token);
  const bos = resolveId('bos', bosText, fallback.bos);
  const eos = resolveId('eos', eosText, fallback.eos);
  const pad = resolveId('pad', tokenContent(tc.pad_token), null);
  // Special tokens named by the tokenizer config are control tokens even when absent from added_tokens.
  const controls = new Set<number>([...special, ...[bos, eos, pad].filter((x): x is number => x !== null)]);

  const tokens: string[] = new Array<string>(vocabSize);
  const types: number[] = new Array<number>(vocabSize);
  const seen = new Map<string, number>();
  for (let id = 0; id < vocabSize; id++) {
    let text = texts[id];
    let type: number;
    if (text === undefined) {
      text = `[PAD${id}]`;
      type = TokenType.UNUSED;
    } else if (id === unkId) type = TokenType.UNKNOWN;
    else if (controls.has(id)) type = TokenType.CONTROL;
    else if (added.has(id)) type = TokenType.USER_DEFINED;
    else if (kind === 'llama' && /^<0x[0-9A-Fa-f]{2}>$/.test(text)) type = TokenType.BYTE;
    else type = TokenType.NORMAL;
    // llama.cpp aborts on duplicate token texts (its text→id map must be a bijection).
    const dup = seen.get(text);
    if (dup !== undefined && text !== '') throw new GgufError(`${file}: token text ${JSON.stringify(text)} is used by ids ${dup} and ${id}; llama.cpp needs unique token texts`);
    seen.set(text, id);
    tokens[id] = text;
    types[id] = type;
  }

  const md: GgufMetadataEntry[] = [];
  const warnings: string[] = [];
  let pre: string;
  if (kind === 'llama') {
    pre = 'default';
    if (!types.includes(TokenType.BYTE)) {
      // llama.cpp looks up "<0xXX>", then the raw byte, with std::map::at: a miss throws and aborts.
      warnings.push(`${file}: the vocabulary has no <0xXX> byte tokens; llama.cpp aborts (std::out_of_range) on text with characters outside the vocabulary, where Hugging Face emits the unknown token`);
    }
    const prefix = spmSpacePrefix(tj, file);
    // Score = −(rank of the first merge producing the token): see the header comment.
    const scores = new Array<number>(vocabSize).fill(0);
    const done = new Set<string>();
    merges.forEach(([a, b], rank) => {
      const t = a + b;
      if (done.has(t)) return;
      done.add(t);
      const id = idOf.get(t);
      if (id === undefined) throw new GgufError(`${file}: merge #${rank} "${a} ${b}" produces ${JSON.stringify(t)}, which is not in the vocabulary`);
      scores[id] = -(rank + 1);
    });
    md.push(
      { key: 'tokenizer.ggml.model', type: 'string', value: 'llama' },
      { key: 'tokenizer.ggml.pre', type: 'string', value: pre },
      { key: 'tokenizer.ggml.tokens', type: 'array', itemType: 'string', value: tokens },
      { key: 'tokenizer.ggml.scores', type: 'array', itemType: 'f32', value: scores },
      { key: 'tokenizer.ggml.token_type', type: 'array', itemType: 'i32', value: types },
      { key: 'tokenizer.ggml.add_space_prefix', type: 'bool', value: prefix },
    );
  } else {
    const name = gpt2PreName(tj.pre_tokenizer);
    if (name === null) throw new GgufError(`${file}: byte-level pre-tokenizer ${JSON.stringify(tj.pre_tokenizer)} has no known llama.cpp equivalent (supported: GPT-2 ByteLevel, Llama 3 and Qwen2 split regexes, SmolLM digits + ByteLevel)`);
    const norm = tj.normalizer;
    if (norm !== null && norm !== undefined && !(isObj(norm) && norm.type === 'NFC')) {
      throw new GgufError(`${file}: normalizer ${JSON.stringify(norm)} is not applied by llama.cpp's BPE tokenizer`);
    }
    pre = name;
    const mergeStrings = merges.map(([a, b], i) => {
      if (a.includes(' ') || b.includes(' ')) throw new GgufError(`${file}: merge #${i} contains a space inside a part, which GGUF's "a b" merge strings cannot express`);
      return `${a} ${b}`;
    });
    md.push(
      { key: 'tokenizer.ggml.model', type: 'string', value: 'gpt2' },
      { key: 'tokenizer.ggml.pre', type: 'string', value: pre },
      { key: 'tokenizer.ggml.tokens', type: 'array', itemType: 'string', value: tokens },
      { key: 'tokenizer.ggml.token_type', type: 'array', itemType: 'i32', value: types },
      { key: 'tokenizer.ggml.merges', type: 'array', itemType: 'string', value: mergeStrings },
    );
  }

  if (bos !== null) md.push({ key: 'tokenizer.ggml.bos_token_id', type: 'u32', value: bos });
  if (eos !== null) md.push({ key: 'tokenizer.ggml.eos_token_id', type: 'u32', value: eos });
  if (unkId !== undefined) md.push({ key: 'tokenizer.ggml.unknown_token_id', type: 'u32', value: unkId });
  if (pad !== null) md.push({ key: 'tokenizer.ggml.padding_token_id', type: 'u32', value: pad });
  const addBos = typeof tc.add_bos_token === 'boolean' ? tc.add_bos_token : templateAdds(tj.post_processor, 'first') !== null;
  const addEos = typeof tc.add_eos_token === 'boolean' ? tc.add_eos_token : (() => {
    const last = templateAdds(tj.post_processor, 'last');
    return last !== null && last === eosText;
  })();
  if (addBos && bos === null) throw new GgufError(`${dir}: the tokenizer adds a BOS token but none is defined`);
  md.push(
    { key: 'tokenizer.ggml.add_bos_token', type: 'bool', value: addBos },
    { key: 'tokenizer.ggml.add_eos_token', type: 'bool', value: addEos },
  );
  if (typeof tc.chat_template === 'string') md.push({ key: 'tokenizer.chat_template', type: 'string', value: tc.chat_template });
  return { metadata: md, info: { model: kind, pre, tokenCount: vocabSize, warnings } };
}

// ---------------------------------------------------------------------------------------------
// Export

export interface LlamaGgufExportOptions {
  /** general.name; default: the tokenizer folder's name. */
  name?: string;
  /**
   * Storage type of the matrices. 1-D tensors (norms, biases, rope_freqs) are always F32, as
   * llama.cpp's converter writes them. Default: the checkpoint dtype (config torch_dtype; F32 when unstated).
   */
  outType?: FloatDType;
  /** llama.cpp architecture. Default: "qwen2" for model_type qwen2, else "llama". */
  arch?: GgufLlamaArch;
}

export interface LlamaGgufExportResult {
  path: string;
  arch: GgufLlamaArch;
  outType: FloatDType;
  tensorNames: string[];
  tokenizer: TokenizerGgufInfo;
  /** Ways llama.cpp will behave differently from the Hugging Face model (tokenizer warnings included). */
  warnings: string[];
}

function defaultOutType(c: LlamaConfig): FloatDType {
  return c.torchDtype === 'bfloat16' ? 'bf16' : c.torchDtype === 'float16' ? 'f16' : 'f32';
}

/**
 * Writes a Hugging Face Llama-family model (config + weights + tokenizer folder) as a GGUF file
 * that llama.cpp loads. Tensors are read, converted and written one at a time.
 */
export function exportLlamaGguf(outPath: string, config: LlamaConfig, weights: WeightSource, tokenizerDir: string, options: LlamaGgufExportOptions = {}): LlamaGgufExportResult {
  const c = config;
  const arch: GgufLlamaArch = options.arch ?? (c.modelType === 'qwen2' ? 'qwen2' : 'llama');
  const outType = options.outType ?? defaultOutType(c);
  const where = `GGUF export to ${outPath}`;
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
  const embedName = weights.has('model.embed_tokens.weight') ? 'model.embed_tokens.weight'
    : c.tieWordEmbeddings && weights.has('lm_head.weight') ? 'lm_head.weight' : 'model.embed_tokens.weight';
  const specs = tensorSpecs(c, arch, embedName);
  for (const s of specs) if (!weights.has(s.hf)) throw new GgufError(`${where}: the checkpoint has no tensor "${s.hf}" (needed for ${s.gguf})`);

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
  md.push(...tok.metadata);

  const tensors: GgufTensorInput[] = specs.map((s) => {
    const dtype: FloatDType = s.shape.length === 1 ? 'f32' : outType;
    return {
      name: s.gguf,
      dtype,
      shape: s.shape,
      load: (): Tensor => {
        const t = weights.get(s.hf);
        if (!sameShape(t.shape, s.shape)) throw new GgufError(`${where}: tensor "${s.hf}" has shape [${t.shape.join(', ')}], expected [${s.shape.join(', ')}]`);
        const conv = convertDType(t, dtype);
        return s.rope ? { ...conv, data: permuteRopeRows(conv.data, s.rope.heads, s.rope.headDim, true) } : conv;
      },
    };
  });
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
  if (c.modelType === 'mistral' && typeof sw === 'number' && sw < c.maxPositionEmbeddings && c.raw.use_sliding_window !== false) {
    warnings.push(`config sliding_window ${sw}: llama.cpp's llama architecture attends to the whole context, so outputs differ beyond ${sw} tokens`);
  }
  return { path: outPath, arch, outType, tensorNames: tensors.map((t) => t.name), tokenizer: tok.info, warnings };
}

// ---------------------------------------------------------------------------------------------
// Import

export interface GgufModel {
  file: GgufFile;
  arch: GgufLlamaArch;
  config: LlamaConfig;
  /** Tensors under their Hugging Face names, q/k rows back in rotate-half order. */
  weights: WeightSource;
}

/** The shortest decimal that rounds to the same f32 (so 1e-5 stored as f32 reads back as 1e-5). */
function f32Decimal(x: number): number {
  for (let p = 1; p <= 9; p++) {
    const y = Number(x.toPrecision(p));
    if (Math.fround(y) === x) return y;
  }
  return x;
}

const GGUF_TO_TORCH: Record<FloatDType, LlamaConfig['torchDtype']> = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' };

/**
 * Opens a llama/qwen2 GGUF holding F32/F16/BF16 tensors as a config plus a lazy WeightSource
 * with Hugging Face tensor names, so the engine can run it directly.
 */
export function openGgufModel(path: string): GgufModel {
  const f = readGguf(path);
  function fail(msg: string): never {
    throw new GgufError(`${path}: ${msg}`);
  }
  const archName = f.requireString('general.architecture');
  if (archName !== 'llama' && archName !== 'qwen2') fail(`architecture "${archName}" is not supported (llama, qwen2)`);
  const arch = archName as GgufLlamaArch;
  const u = (k: string): number => {
    const v = f.requireNumber(`${arch}.${k}`);
    if (!Number.isSafeInteger(v) || v <= 0) fail(`${arch}.${k} = ${v} must be a positive integer`);
    return v;
  };
  const opt = (k: string): number | undefined => f.getNumber(`${arch}.${k}`);
  const hidden = u('embedding_length'), heads = u('attention.head_count');
  const kvHeads = opt('attention.head_count_kv') ?? heads;
  const headDim = opt('attention.key_length') ?? hidden / heads;
  const vDim = opt('attention.value_length') ?? hidden / heads;
  if (!Number.isSafeInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) fail(`head size ${headDim} must be a positive even integer`);
  if (vDim !== headDim) fail(`value_length ${vDim} differs from key_length ${headDim}; not a Llama-family layout`);
  const rot = opt('rope.dimension_count') ?? headDim;
  if (rot !== headDim) fail(`rope.dimension_count ${rot} differs from the head size ${headDim} (partial RoPE is not a Llama-family layout)`);
  if (!Number.isSafeInteger(kvHeads) || kvHeads <= 0 || heads % kvHeads !== 0) fail(`head_count_kv ${kvHeads} must divide head_count ${heads}`);
  if (!f.has('token_embd.weight')) fail('no token_embd.weight tensor');
  const emb = f.tensorInfo('token_embd.weight');
  if (emb.shape.length !== 2 || emb.shape[1] !== hidden) fail(`token_embd.weight has shape [${emb.shape.join(', ')}], expected [vocab, ${hidden}]`);

  let ropeScaling: RopeScaling | null = null;
  const scalingType = f.getString(`${arch}.rope.scaling.type`);
  if (scalingType === 'linear') {
    const factor = opt('rope.scaling.factor');
    if (factor !== undefined && factor !== 1) ropeScaling = { type: 'linear', factor: f32Decimal(factor) };
  } else if (scalingType !== undefined && scalingType !== 'none') {
    fail(`RoPE scaling type "${scalingType}" is not supported`);
  }
  if (f.has('rope_freqs.weight')) {
    const factor = f.getNumber(LLAMA3_KEYS.factor);
    const low = f.getNumber(LLAMA3_KEYS.lowFreqFactor);
    const high = f.getNumber(LLAMA3_KEYS.highFreqFactor);
    const orig = f.getNumber(LLAMA3_KEYS.originalMaxPositionEmbeddings);
    if (factor === undefined || low === undefined || high === undefined || orig === undefined) {
      fail('has a rope_freqs.weight tensor without the llama3 RoPE parameters transmla records; per-frequency RoPE factors cannot be expressed as a Llama config');
    }
    ropeScaling = { type: 'llama3', factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: orig };
  }

  const layers = u('block_count');
  const q0 = f.has('blk.0.attn_q.weight') ? f.floatDType('blk.0.attn_q.weight') : null;
  const bos = f.getNumber('tokenizer.ggml.bos_token_id'), eos = f.getNumber('tokenizer.ggml.eos_token_id');
  const config: LlamaConfig = {
    modelType: arch,
    hiddenSize: hidden,
    intermediateSize: u('feed_forward_length'),
    numLayers: layers,
    numHeads: heads,
    numKvHeads: kvHeads,
    headDim,
    vocabSize: emb.shape[0]!,
    rmsNormEps: f32Decimal(f.requireNumber(`${arch}.attention.layer_norm_rms_epsilon`)),
    ropeTheta: f32Decimal(opt('rope.freq_base') ?? 10000),
    ropeScaling,
    maxPositionEmbeddings: u('context_length'),
    tieWordEmbeddings: !f.has('output.weight'),
    attentionBias: f.has('blk.0.attn_q.bias'),
    oBias: f.has('blk.0.attn_output.bias'),
    mlpBias: f.has('blk.0.ffn_up.bias'),
    bosTokenId: bos ?? null,
    eosTokenId: eos ?? null,
    torchDtype: q0 ? GGUF_TO_TORCH[q0] : null,
    raw: {},
  };
  config.raw = hfConfigJson(config);

  const specs = tensorSpecs(config, arch, 'model.embed_tokens.weight');
  const byHf = new Map<string, TensorSpec>();
  const known = new Set<string>(['rope_freqs.weight']);
  for (const s of specs) {
    if (!f.has(s.gguf)) fail(`missing tensor ${s.gguf}`);
    const info = f.tensorInfo(s.gguf);
    if (!sameShape(info.shape, s.shape)) fail(`tensor ${s.gguf} has shape [${info.shape.join(', ')}], expected [${s.shape.join(', ')}]`);
    if (f.floatDType(s.gguf) === null) fail(`tensor ${s.gguf} has type ${info.typeName}; only F32, F16 and BF16 GGUF models can be run`);
    byHf.set(s.hf, s);
    known.add(s.gguf);
  }
  for (const t of f.tensors) if (!known.has(t.name)) fail(`tensor ${t.name} has no place in a ${arch} model`);

  const weights: WeightSource = {
    names: () => [...byHf.keys()],
    has: (name) => byHf.has(name),
    get: (name) => {
      const s = byHf.get(name);
      if (!s) fail(`no tensor "${name}" (GGUF models expose Hugging Face tensor names)`);
      const t = f.readTensor(s.gguf);
      return s.rope ? { ...t, data: permuteRopeRows(t.data, s.rope.heads, s.rope.headDim, false) } : t;
    },
  };
  return { file: f, arch, config, weights };
}

/** A config.json equivalent of a LlamaConfig (for writers that save a Hugging Face folder). */
function hfConfigJson(c: LlamaConfig): Record<string, unknown> {
  const rs = c.ropeScaling;
  return {
    architectures: [c.modelType === 'qwen2' ? 'Qwen2ForCausalLM' : 'LlamaForCausalLM'],
    model_type: c.modelType,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    vocab_size: c.vocabSize,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: rs === null ? null : rs.type === 'linear' ? { rope_type: 'linear', factor: rs.factor } : {
      rope_type: 'llama3', factor: rs.factor, low_freq_factor: rs.lowFreqFactor, high_freq_factor: rs.highFreqFactor,
      original_max_position_embeddings: rs.originalMaxPositionEmbeddings,
    },
    max_position_embeddings: c.maxPositionEmbeddings,
    tie_word_embeddings: c.tieWordEmbeddings,
    attention_bias: c.attentionBias,
    mlp_bias: c.mlpBias,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    torch_dtype: c.torchDtype,
    hidden_act: 'silu',
  };
}

