// llama2.c tokenizer files and our SentencePiece-BPE encoder/decoder for them.
//
// File format (llama2.c tokenizer.py export): u32 max_token_length, then for each token
// f32 score, i32 byte length, bytes. The token count is not stored: it is whatever fills
// the file (and must equal the model's vocab_size). Pieces are SentencePiece pieces with
// "▁" replaced by a space; BOS/EOS are stored as "\n<s>\n" / "\n</s>\n".
//
// Encoding follows llama2.c's algorithm: prepend a space (SentencePiece's dummy prefix),
// split into UTF-8 code points, map code points missing from the vocabulary to byte
// tokens "<0xXX>", then repeatedly merge the adjacent pair whose concatenation is a
// vocabulary piece with the highest score (leftmost on ties). llama2.c rescans all pairs
// per merge (quadratic); we keep candidate pairs in a heap ordered by (score desc,
// position asc), which selects the same pair at every step. Two deliberate differences
// from llama2.c, both matching SentencePiece: byte tokens and specials never take part
// in merges (text such as "<0x41>" is not turned into byte token 0x41), and a
// vocabulary without byte tokens maps a run of unknown code points to one <unk>
// (llama2.c would emit id byte+3, which is another token in such vocabularies).
import { readFileSync } from 'node:fs';
import { checkIds, TokenizerFormatError, withSpecials } from './common.js';
import { readSentencePieceModel, SpPieceType, type SentencePieceModel } from './sentencepiece-model.js';
import type { DecodeOptions, EncodeOptions, StreamDecoder, TextTokenizer } from './types.js';

export const TokenKind = {
  Normal: 0,
  Unknown: 1,
  Control: 2,
  Byte: 3,
  UserDefined: 4,
  Unused: 5,
} as const;
export type TokenKind = (typeof TokenKind)[keyof typeof TokenKind];

/** A vocabulary in llama2.c's convention. */
export interface Llama2cVocab {
  /** Token texts exactly as llama2.c stores them (space for "▁", "\n<s>\n" for BOS). */
  texts: string[];
  scores: Float32Array;
  kinds: Uint8Array;
  maxTokenLength: number;
}

const BYTE_PIECE = /^<0x([0-9A-F]{2})>$/;
const utf8Fatal = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

function kindFromBinText(text: string): TokenKind {
  if (text === '<unk>') return TokenKind.Unknown;
  if (text === '\n<s>\n' || text === '\n</s>\n') return TokenKind.Control;
  if (BYTE_PIECE.test(text)) return TokenKind.Byte;
  return TokenKind.Normal;
}

/**
 * Parses a llama2.c tokenizer .bin.
 * @param expectedVocabSize when given (the model's vocab_size), the token count must match.
 */
export function parseLlama2cTokenizerBin(buf: Uint8Array, file: string, expectedVocabSize?: number): Llama2cVocab {
  if (buf.length < 4) throw new TokenizerFormatError(file, `file of ${buf.length} bytes is too short for a llama2.c tokenizer header`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const maxTokenLength = dv.getInt32(0, true);
  // No real vocabulary has pieces longer than a few hundred bytes; a huge value means this is not a tokenizer file.
  if (maxTokenLength <= 0 || maxTokenLength > 65536) {
    throw new TokenizerFormatError(file, `max_token_length ${maxTokenLength} is not plausible (not a llama2.c tokenizer?)`);
  }
  const texts: string[] = [];
  const scores: number[] = [];
  let off = 4;
  while (off < buf.length) {
    const i = texts.length;
    if (off + 8 > buf.length) throw new TokenizerFormatError(file, `truncated: token ${i} header at byte ${off} needs 8 bytes, ${buf.length - off} left`);
    const score = dv.getFloat32(off, true);
    const len = dv.getInt32(off + 4, true);
    off += 8;
    if (len < 0 || len > maxTokenLength) {
      throw new TokenizerFormatError(file, `token ${i} has length ${len}, outside [0, max_token_length=${maxTokenLength}]`);
    }
    if (off + len > buf.length) throw new TokenizerFormatError(file, `truncated: token ${i} needs ${len} bytes at byte ${off}, ${buf.length - off} left`);
    if (!Number.isFinite(score)) throw new TokenizerFormatError(file, `token ${i} has non-finite score ${score}`);
    let text: string;
    try {
      text = utf8Fatal.decode(buf.subarray(off, off + len));
    } catch {
      throw new TokenizerFormatError(file, `token ${i} is not valid UTF-8`);
    }
    off += len;
    texts.push(text);
    scores.push(score);
  }
  if (texts.length === 0) throw new TokenizerFormatError(file, 'tokenizer has no tokens');
  if (expectedVocabSize !== undefined && texts.length !== expectedVocabSize) {
    throw new TokenizerFormatError(file, `tokenizer has ${texts.length} tokens but the model's vocab_size is ${expectedVocabSize}`);
  }
  return { texts, scores: Float32Array.from(scores), kinds: Uint8Array.from(texts.map(kindFromBinText)), maxTokenLength };
}

/** Serializes a vocabulary in llama2.c's tokenizer .bin format. */
export function encodeLlama2cTokenizerBin(vocab: Llama2cVocab): Uint8Array {
  const bytes = vocab.texts.map((t) => utf8Encoder.encode(t));
  const maxLen = bytes.reduce((m, b) => Math.max(m, b.length), 0);
  const out = new Uint8Array(4 + bytes.reduce((s, b) => s + 8 + b.length, 0));
  const dv = new DataView(out.buffer);
  dv.setInt32(0, Math.max(maxLen, vocab.maxTokenLength), true);
  let off = 4;
  bytes.forEach((b, i) => {
    dv.setFloat32(off, vocab.scores[i]!, true);
    dv.setInt32(off + 4, b.length, true);
    out.set(b, off + 8);
    off += 8 + b.length;
  });
  return out;
}

/** Converts a SentencePiece model to llama2.c's convention, as llama2.c's tokenizer.py export does. */
export function vocabFromSentencePiece(sp: SentencePieceModel, file: string): Llama2cVocab {
  if (sp.modelType !== 'bpe') {
    throw new TokenizerFormatError(file, `SentencePiece model type "${sp.modelType}" is not supported: the llama2.c encoder implements BPE only`);
  }
  const kinds = new Uint8Array(sp.pieces.length);
  const texts = sp.pieces.map((p, i) => {
    switch (sp.types[i]) {
      case SpPieceType.Unknown:
        kinds[i] = TokenKind.Unknown;
        return p;
      case SpPieceType.Control:
        kinds[i] = TokenKind.Control;
        return p === '<s>' || p === '</s>' ? `\n${p}\n` : p;
      case SpPieceType.Byte:
        kinds[i] = TokenKind.Byte;
        return p;
      case SpPieceType.UserDefined:
        kinds[i] = TokenKind.UserDefined;
        return p.replaceAll('\u2581', ' ');
      case SpPieceType.Unused:
        kinds[i] = TokenKind.Unused;
        return p.replaceAll('\u2581', ' ');
      default:
        kinds[i] = TokenKind.Normal;
        return p.replaceAll('\u2581', ' ');
    }
  });
  const maxTokenLength = texts.reduce((m, t) => Math.max(m, utf8Encoder.encode(t).length), 1);
  return { texts, scores: sp.scores.slice(), kinds, maxTokenLength };
}

// ---------------------------------------------------------------------------------
// Encoder

interface Candidate {
  score: number;
  left: number;
  right: number;
  leftId: number;
  rightId: number;
  merged: number;
}

/** Max-heap on (score, then smaller left position). */
class CandidateHeap {
  private readonly a: Candidate[] = [];
  get size(): number {
    return this.a.length;
  }
  private before(x: Candidate, y: Candidate): boolean {
    return x.score > y.score || (x.score === y.score && x.left < y.left);
  }
  push(c: Candidate): void {
    const a = this.a;
    a.push(c);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): Candidate {
    const a = this.a;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.before(a[l]!, a[m]!)) m = l;
        if (r < a.length && this.before(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

export interface Llama2cTokenizerOptions {
  /** Prepend a space to non-empty text (SentencePiece add_dummy_prefix; llama2.c always does). */
  addDummyPrefix?: boolean;
}

export class Llama2cTokenizer implements TextTokenizer {
  readonly kind = 'llama2c' as const;
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly unkId: number | null;
  /** llama2.c always starts a sequence with BOS. */
  readonly addBosByDefault = true;
  readonly addDummyPrefix: boolean;
  /** ids of the 256 byte tokens, or null when the vocabulary has no complete byte table. */
  readonly byteIds: Int32Array | null;
  /** Mergeable pieces (normal and user-defined) by text; first id wins on duplicates. */
  private readonly lookup = new Map<string, number>();
  private readonly byteValue: Int16Array;
  private readonly maxPieceChars: number;
  private readonly pieceBytes: Uint8Array[];

  constructor(
    readonly vocab: Llama2cVocab,
    readonly file: string,
    opts: Llama2cTokenizerOptions = {},
  ) {
    const n = vocab.texts.length;
    this.vocabSize = n;
    this.addDummyPrefix = opts.addDummyPrefix ?? true;
    this.byteValue = new Int16Array(n).fill(-1);
    const byteIds = new Int32Array(256).fill(-1);
    let bos: number | null = null;
    let eos: number | null = null;
    let unk: number | null = null;
    let maxChars = 1;
    for (let id = 0; id < n; id++) {
      const t = vocab.texts[id]!;
      const k = vocab.kinds[id]!;
      if (k === TokenKind.Normal || k === TokenKind.UserDefined) {
        if (!this.lookup.has(t)) this.lookup.set(t, id);
        maxChars = Math.max(maxChars, t.length);
      } else if (k === TokenKind.Byte) {
        const m = BYTE_PIECE.exec(t);
        if (!m) throw new TokenizerFormatError(file, `byte token ${id} has text "${t}", expected <0xXX>`);
        const b = parseInt(m[1]!, 16);
        this.byteValue[id] = b;
        if (byteIds[b] === -1) byteIds[b] = id;
      } else if (k === TokenKind.Control) {
        if (bos === null && t.trim() === '<s>') bos = id;
        if (eos === null && t.trim() === '</s>') eos = id;
      } else if (k === TokenKind.Unknown && unk === null) unk = id;
    }
    this.bosId = bos;
    this.eosId = eos;
    this.unkId = unk;
    this.byteIds = byteIds.every((x) => x >= 0) ? byteIds : null;
    this.maxPieceChars = maxChars;
    this.pieceBytes = vocab.texts.map((t) => utf8Encoder.encode(t));
  }

  static fromBinFile(path: string, expectedVocabSize?: number): Llama2cTokenizer {
    let buf: Buffer;
    try {
      buf = readFileSync(path);
    } catch (e) {
      throw new TokenizerFormatError(path, `cannot read llama2.c tokenizer: ${(e as Error).message}`);
    }
    return new Llama2cTokenizer(parseLlama2cTokenizerBin(buf, path, expectedVocabSize), path);
  }

  static fromSentencePieceFile(path: string): Llama2cTokenizer {
    const sp = readSentencePieceModel(path);
    return new Llama2cTokenizer(vocabFromSentencePiece(sp, path), path, { addDummyPrefix: sp.addDummyPrefix });
  }

  /** Token ids of `text` without specials. */
  private encodeText(text: string): number[] {
    if (text.length === 0) return [];
    // SentencePiece escapes spaces as "▁", so a literal "▁" in the text is a space too.
    const spaced = text.replaceAll('\u2581', ' ');
    const src = this.addDummyPrefix ? ' ' + spaced : spaced;
    // Initial symbols: one per code point, or byte tokens / <unk> for unknown ones.
    const ids: number[] = [];
    const mergeable: boolean[] = [];
    const strs: string[] = [];
    for (const ch of src) {
      const id = this.lookup.get(ch);
      if (id !== undefined) {
        ids.push(id);
        strs.push(ch);
        mergeable.push(true);
      } else if (this.byteIds) {
        for (const b of utf8Encoder.encode(ch)) {
          ids.push(this.byteIds[b]!);
          strs.push('');
          mergeable.push(false);
        }
      } else {
        if (this.unkId === null) throw new TokenizerFormatError(this.file, `character U+${ch.codePointAt(0)!.toString(16).toUpperCase()} is not in the vocabulary, which has neither byte tokens nor <unk>`);
        // SentencePiece emits one <unk> per run of unknown characters.
        if (ids.length > 0 && !mergeable[mergeable.length - 1] && ids[ids.length - 1] === this.unkId) continue;
        ids.push(this.unkId);
        strs.push('');
        mergeable.push(false);
      }
    }
    const n = ids.length;
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const alive = new Uint8Array(n).fill(1);
    const heap = new CandidateHeap();
    const scores = this.vocab.scores;
    const consider = (l: number, r: number): void => {
      if (l < 0 || r < 0 || !mergeable[l] || !mergeable[r]) return;
      const a = strs[l]!;
      const b = strs[r]!;
      if (a.length + b.length > this.maxPieceChars) return;
      const merged = this.lookup.get(a + b);
      if (merged === undefined) return;
      heap.push({ score: scores[merged]!, left: l, right: r, leftId: ids[l]!, rightId: ids[r]!, merged });
    };
    for (let i = 0; i + 1 < n; i++) consider(i, i + 1);
    while (heap.size > 0) {
      const c = heap.pop();
      // Stale when either side was merged since: a symbol's id changes with every merge.
      if (!alive[c.left] || !alive[c.right] || next[c.left] !== c.right || ids[c.left] !== c.leftId || ids[c.right] !== c.rightId) continue;
      ids[c.left] = c.merged;
      strs[c.left] = strs[c.left]! + strs[c.right]!;
      alive[c.right] = 0;
      const nr = next[c.right]!;
      next[c.left] = nr;
      if (nr >= 0) prev[nr] = c.left;
      consider(prev[c.left]!, c.left);
      consider(c.left, nr);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0 && i < n; i = next[i]!) out.push(ids[i]!);
    return out;
  }

  encode(text: string, opts: EncodeOptions): number[] {
    return withSpecials(this.encodeText(text), opts, this.bosId, this.eosId, this.file);
  }

  /** Our own encoder has no faster variant. */
  async encodeAsync(text: string, opts: EncodeOptions): Promise<number[]> {
    return this.encode(text, opts);
  }

  /** Bytes of token `id` when it follows `prev` (null: first token of the output). */
  private bytesOf(id: number, prev: number | null, skipSpecial: boolean): Uint8Array {
    const kind = this.vocab.kinds[id]!;
    if (kind === TokenKind.Byte) return Uint8Array.of(this.byteValue[id]!);
    if (kind === TokenKind.Control || kind === TokenKind.Unknown) {
      return skipSpecial ? new Uint8Array(0) : utf8Encoder.encode(this.vocab.texts[id]!.trim());
    }
    const b = this.pieceBytes[id]!;
    // SentencePiece drops the dummy-prefix space at the start of the text; llama2.c after BOS.
    if ((prev === null || prev === this.bosId) && b[0] === 0x20) return b.subarray(1);
    return b;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    checkIds(ids, this.vocabSize, this.file);
    const skip = opts.skipSpecial ?? true;
    const parts: Uint8Array[] = [];
    let total = 0;
    let prev: number | null = null;
    for (const id of ids) {
      const b = this.bytesOf(id, prev, skip);
      parts.push(b);
      total += b.length;
      prev = id;
    }
    const all = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      all.set(p, off);
      off += p.length;
    }
    return new TextDecoder('utf-8', { ignoreBOM: true }).decode(all);
  }

  idToToken(id: number): string | null {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) return null;
    return hfPieceText(this.vocab, id);
  }

  isSpecial(id: number): boolean {
    const k = this.vocab.kinds[id];
    return k === TokenKind.Control || k === TokenKind.Unknown;
  }

  createStreamDecoder(context: readonly number[] = [], opts: DecodeOptions = {}): StreamDecoder {
    checkIds(context, this.vocabSize, this.file);
    const skip = opts.skipSpecial ?? true;
    const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });
    let prev: number | null = context.length > 0 ? context[context.length - 1]! : null;
    return {
      push: (id: number): string => {
        checkIds([id], this.vocabSize, this.file);
        const b = this.bytesOf(id, prev, skip);
        prev = id;
        // stream: true keeps an incomplete UTF-8 sequence until its remaining bytes arrive.
        return utf8.decode(b, { stream: true });
      },
      flush: (): string => utf8.decode(),
    };
  }
}

/** The SentencePiece piece string of a token ("▁" for space, "<s>" for BOS). */
export function hfPieceText(vocab: Llama2cVocab, id: number): string {
  const t = vocab.texts[id]!;
  const k = vocab.kinds[id]!;
  if (k === TokenKind.Control || k === TokenKind.Unknown) return t.trim();
  if (k === TokenKind.Byte) return t;
  return t.replaceAll(' ', '\u2581');
}
