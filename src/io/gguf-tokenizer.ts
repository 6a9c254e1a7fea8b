// Tokenizer → GGUF metadata (tokenizer.ggml.*) from a Hugging Face tokenizer folder, for every
// GGUF writer.
//
// Facts this file relies on (read from llama.cpp's sources, not copied):
// - SentencePiece vocabularies ("llama" tokenizer model): llama.cpp merges, among all adjacent
//   symbol pairs whose concatenation is a token, the one whose token has the highest score
//   (leftmost on ties). A BPE tokenizer.json instead applies listed merges in rank order. Giving
//   each token the score −(rank of the first merge producing it) makes the two agree whenever
//   every split of a token into two tokens is a listed merge (true for tokenizer.json files
//   converted from a SentencePiece model, like the Llama 2 one).
// - llama.cpp checks metadata types strictly (i32 token types, f32 scores).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GgufError, type GgufMetadataEntry } from './gguf.js';

/** llama.cpp token types (llama_token_type). */
export const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

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

