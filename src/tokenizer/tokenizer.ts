// The tokenizer interface the engine, evaluation and CLI use, and its loader.
//
// Two implementations:
// - HfTokenizer: a Hugging Face `tokenizer.json` run by `@huggingface/tokenizers` (sync), and for
//   long texts (encodeAsync) by the Rust `tokenizers` binding when it loads (native-tokenizers.ts).
// - Llama2cTokenizer (llama2c-tokenizer.ts): our own SentencePiece-BPE encoder for
//   llama2.c tokenizer `.bin` files and SentencePiece `.model` files.
//
// BOS/EOS are never added implicitly: callers say `addBos` on every encode. The
// tokenizer.json post-processor is bypassed (we encode with add_special_tokens=false and
// prepend BOS ourselves) because post-processors differ between exports — some Llama
// tokenizer.json files have none and rely on transformers' LlamaTokenizerFast to apply
// `add_bos_token` — so relying on it would make BOS depend on how the file was written.
// `addBosByDefault` reports what the model's own config asks for.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { checkIds, TokenizerFormatError, withSpecials } from './common.js';
import { Llama2cTokenizer } from './llama2c-tokenizer.js';
import { nativeTokenizer, type NativeTokenizer } from './native-tokenizers.js';

export { TokenizerFormatError } from './common.js';

import type { DecodeOptions, EncodeOptions, StreamDecoder, TextTokenizer } from './types.js';

export type { DecodeOptions, EncodeOptions, StreamDecoder, TextTokenizer } from './types.js';


// ---------------------------------------------------------------------------------
// Hugging Face tokenizer.json

type Json = Record<string, unknown>;

/** BOS/EOS ids from config.json, used when the tokenizer config names no such token. */
export interface FallbackSpecialIds {
  bosId: number | null;
  eosId: number | null;
}

function readJson(path: string): Json {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new TokenizerFormatError(path, `cannot read: ${(e as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new TokenizerFormatError(path, `invalid JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TokenizerFormatError(path, 'expected a JSON object');
  return v as Json;
}

/** tokenizer_config.json writes special tokens as a string or as an AddedToken object. */
function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return null;
}

/** Whether a post_processor (possibly nested in a Sequence) starts single sequences with `bos`. */
function templateStartsWith(pp: unknown, bos: string): boolean {
  if (typeof pp !== 'object' || pp === null) return false;
  const p = pp as Json;
  if (p.type === 'Sequence' && Array.isArray(p.processors)) return p.processors.some((x) => templateStartsWith(x, bos));
  if (p.type === 'TemplateProcessing' && Array.isArray(p.single)) {
    const first = p.single[0] as Json | undefined;
    const st = first?.SpecialToken as Json | undefined;
    return st?.id === bos;
  }
  if (p.type === 'BertProcessing' || p.type === 'RobertaProcessing') {
    return Array.isArray(p.cls) && p.cls[0] === bos;
  }
  return false;
}

export class HfTokenizer implements TextTokenizer {
  readonly kind = 'hf' as const;
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly addBosByDefault: boolean;
  private readonly tok: Tokenizer;
  private readonly json: Json;
  private native: NativeTokenizer | null | undefined;
  private readonly idToTok: (string | undefined)[];
  private readonly special: Set<number>;

  /**
   * @param tokenizerJson parsed tokenizer.json
   * @param tokenizerConfig parsed tokenizer_config.json merged with special_tokens_map.json ({} when absent)
   * @param file path used in error messages
   * @param fallback BOS/EOS ids (config.json) for when the tokenizer config names none
   */
  constructor(
    tokenizerJson: Json,
    tokenizerConfig: Json,
    readonly file: string,
    fallback: FallbackSpecialIds = { bosId: null, eosId: null },
  ) {
    if (typeof tokenizerJson.model !== 'object' || tokenizerJson.model === null) {
      throw new TokenizerFormatError(file, 'tokenizer.json has no "model" object');
    }
    // The JS library cleans up spaces before punctuation unless told otherwise; the Rust
    // reference implementation never does. Apply it only when the config asks.
    const config: Json = { ...tokenizerConfig, clean_up_tokenization_spaces: tokenizerConfig.clean_up_tokenization_spaces === true };
    if (!Array.isArray(tokenizerJson.added_tokens)) tokenizerJson = { ...tokenizerJson, added_tokens: [] };
    this.json = tokenizerJson;
    try {
      this.tok = new Tokenizer(tokenizerJson, config);
    } catch (e) {
      throw new TokenizerFormatError(file, `unsupported tokenizer.json: ${(e as Error).message}`);
    }
    const vocab = this.tok.get_vocab(true);
    let maxId = -1;
    this.idToTok = [];
    for (const [t, id] of vocab) {
      if (id > maxId) maxId = id;
      this.idToTok[id] = t;
    }
    this.vocabSize = maxId + 1;
    this.special = new Set<number>();
    for (const [id, at] of this.tok.get_added_tokens_decoder()) if (at.special) this.special.add(id);

    const lookup = (name: string): number | null => {
      const content = tokenContent(tokenizerConfig[name]);
      if (content === null) {
        const id = name === 'bos_token' ? fallback.bosId : fallback.eosId;
        return id !== null && this.idToTok[id] !== undefined ? id : null;
      }
      const id = this.tok.token_to_id(content);
      if (id === undefined) throw new TokenizerFormatError(file, `${name} "${content}" is not in the vocabulary`);
      return id;
    };
    this.bosId = lookup('bos_token');
    this.eosId = lookup('eos_token');
    const bosText = this.bosId === null ? null : (this.idToTok[this.bosId] ?? null);
    this.addBosByDefault =
      typeof tokenizerConfig.add_bos_token === 'boolean'
        ? tokenizerConfig.add_bos_token && this.bosId !== null
        : bosText !== null && templateStartsWith(tokenizerJson.post_processor, bosText);
  }

  encode(text: string, opts: EncodeOptions): number[] {
    const ids = text.length === 0 ? [] : this.tok.encode(text, { add_special_tokens: false }).ids;
    return withSpecials(ids, opts, this.bosId, this.eosId, this.file);
  }

  async encodeAsync(text: string, opts: EncodeOptions): Promise<number[]> {
    // Built on first use: most runs (generation, serving) only encode short prompts.
    if (this.native === undefined) this.native = nativeTokenizer(JSON.stringify(this.json));
    if (!this.native || text.length === 0) return this.encode(text, opts);
    const ids = (await this.native.encode(text, null, { addSpecialTokens: false })).getIds();
    return withSpecials(ids, opts, this.bosId, this.eosId, this.file);
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    checkIds(ids, this.vocabSize, this.file);
    if (ids.length === 0) return '';
    return this.tok.decode(ids as number[], { skip_special_tokens: opts.skipSpecial ?? true });
  }

  idToToken(id: number): string | null {
    return this.idToTok[id] ?? null;
  }

  isSpecial(id: number): boolean {
    return this.special.has(id);
  }

  createStreamDecoder(context: readonly number[] = [], opts: DecodeOptions = {}): StreamDecoder {
    return new WindowStreamDecoder((ids) => this.decode(ids, opts), context);
  }
}

/**
 * Streams text by decoding a short window of ids twice — without and with the new
 * tokens — and emitting the difference. Decoders such as SentencePiece's (strip the
 * first space, fuse byte tokens) are not per-token functions, so only this
 * difference is exact. Text ending in U+FFFD is an incomplete UTF-8 sequence and is
 * held back until more tokens arrive.
 */
export class WindowStreamDecoder implements StreamDecoder {
  private ids: number[];
  private prefixOffset = 0;
  private readOffset: number;

  constructor(
    private readonly decodeIds: (ids: number[]) => string,
    context: readonly number[],
  ) {
    // A few context tokens are enough to fix the spacing of the next one.
    this.ids = context.slice(-6);
    this.readOffset = this.ids.length;
  }

  push(id: number): string {
    this.ids.push(id);
    return this.emit(false);
  }

  flush(): string {
    return this.emit(true);
  }

  private emit(final: boolean): string {
    if (this.readOffset === this.ids.length) return '';
    const prefix = this.decodeIds(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.decodeIds(this.ids.slice(this.prefixOffset));
    if (!final && (full.length <= prefix.length || full.endsWith('\uFFFD'))) return '';
    const delta = full.startsWith(prefix) ? full.slice(prefix.length) : full;
    // Drop ids that no longer influence the window.
    this.ids = this.ids.slice(this.readOffset);
    this.prefixOffset = 0;
    this.readOffset = this.ids.length;
    return delta;
  }
}

/**
 * The tokenizer settings of a folder: tokenizer_config.json over special_tokens_map.json
 * (as in transformers); BOS/EOS from config.json's token ids when neither names them.
 */
function folderTokenizerConfig(folder: string): { config: Json; fallback: FallbackSpecialIds } {
  const read = (name: string): Json => (existsSync(join(folder, name)) ? readJson(join(folder, name)) : {});
  const config: Json = { ...read('special_tokens_map.json'), ...read('tokenizer_config.json') };
  const model = read('config.json');
  const firstId = (v: unknown): number | null => (typeof v === 'number' ? v : Array.isArray(v) && typeof v[0] === 'number' ? v[0] : null);
  return { config, fallback: { bosId: firstId(model.bos_token_id), eosId: firstId(model.eos_token_id) } };
}

/** Reads tokenizer.json (+ tokenizer_config.json, special_tokens_map.json, config.json) from a folder. */
export function loadHfTokenizer(folder: string): HfTokenizer {
  const jsonPath = join(folder, 'tokenizer.json');
  const { config, fallback } = folderTokenizerConfig(folder);
  return new HfTokenizer(readJson(jsonPath), config, jsonPath, fallback);
}

/**
 * Loads the tokenizer of a model folder or a tokenizer file:
 * - folder with tokenizer.json → HfTokenizer (preferred when both files exist);
 * - folder with tokenizer.bin (llama2.c) or tokenizer.model (SentencePiece) → Llama2cTokenizer;
 * - a `.json` / `.bin` / `.model` file path directly.
 */
export function loadTokenizer(path: string): TextTokenizer {
  if (!existsSync(path)) throw new TokenizerFormatError(path, 'no such file or folder');
  if (statSync(path).isDirectory()) {
    if (existsSync(join(path, 'tokenizer.json'))) return loadHfTokenizer(path);
    if (existsSync(join(path, 'tokenizer.bin'))) return Llama2cTokenizer.fromBinFile(join(path, 'tokenizer.bin'));
    if (existsSync(join(path, 'tokenizer.model'))) return Llama2cTokenizer.fromSentencePieceFile(join(path, 'tokenizer.model'));
    throw new TokenizerFormatError(path, 'folder has no tokenizer.json, tokenizer.bin or tokenizer.model');
  }
  if (path.endsWith('.json')) {
    const { config, fallback } = folderTokenizerConfig(dirname(path));
    return new HfTokenizer(readJson(path), config, path, fallback);
  }
  if (path.endsWith('.bin')) return Llama2cTokenizer.fromBinFile(path);
  if (path.endsWith('.model')) return Llama2cTokenizer.fromSentencePieceFile(path);
  throw new TokenizerFormatError(path, 'unrecognised tokenizer file (expected tokenizer.json, a llama2.c .bin or a SentencePiece .model)');
}
