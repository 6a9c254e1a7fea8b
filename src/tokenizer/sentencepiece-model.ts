// Minimal reader for SentencePiece `.model` files (a serialized ModelProto protobuf).
// We read only what a BPE encoder needs: the pieces with their scores and types, the
// model type and byte_fallback from the trainer spec, and add_dummy_prefix /
// remove_extra_whitespaces from the normalizer spec. The `.model` is preferred over the
// `.vocab` text file because only the protobuf records piece types (control, byte, …)
// and the model type, which decide how unknown characters and specials are handled.
import { readFileSync } from 'node:fs';
import { TokenizerFormatError } from './common.js';

/** SentencePiece piece types (sentencepiece_model.proto, SentencePiece.Type). */
export const SpPieceType = {
  Normal: 1,
  Unknown: 2,
  Control: 3,
  UserDefined: 4,
  Unused: 5,
  Byte: 6,
} as const;

/** TrainerSpec.ModelType. */
export type SpModelType = 'unigram' | 'bpe' | 'word' | 'char';

export interface SentencePieceModel {
  /** Pieces as stored, with U+2581 "▁" standing for a space. */
  pieces: string[];
  scores: Float32Array;
  types: Uint8Array;
  modelType: SpModelType;
  byteFallback: boolean;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  /** Normalization rule name ("identity", "nmt_nfkc", …). */
  normalizerName: string;
}

class ProtoReader {
  pos = 0;
  constructor(
    readonly buf: Uint8Array,
    readonly file: string,
    readonly end = buf.length,
    start = 0,
  ) {
    this.pos = start;
  }
  fail(what: string): never {
    throw new TokenizerFormatError(this.file, `malformed SentencePiece protobuf at byte ${this.pos}: ${what}`);
  }
  varint(): number {
    // Values we need fit in 53 bits; larger varints only appear in fields we skip.
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail('truncated varint');
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return result;
      mul *= 128;
    }
    return this.fail('varint longer than 10 bytes');
  }
  /** Returns [start, end) of a length-delimited field. */
  bytes(): [number, number] {
    const len = this.varint();
    const start = this.pos;
    if (start + len > this.end) this.fail(`field of ${len} bytes runs past its message`);
    this.pos += len;
    return [start, start + len];
  }
  fixed32(): number {
    if (this.pos + 4 > this.end) this.fail('truncated fixed32');
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }
  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        if (this.pos + 8 > this.end) this.fail('truncated fixed64');
        this.pos += 8;
        return;
      case 2:
        this.bytes();
        return;
      case 5:
        if (this.pos + 4 > this.end) this.fail('truncated fixed32');
        this.pos += 4;
        return;
      default:
        this.fail(`unsupported wire type ${wireType}`);
    }
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const MODEL_TYPES: Record<number, SpModelType> = { 1: 'unigram', 2: 'bpe', 3: 'word', 4: 'char' };

export function parseSentencePieceModel(buf: Uint8Array, file: string): SentencePieceModel {
  const pieces: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  // proto2 defaults from sentencepiece_model.proto.
  let modelType: SpModelType = 'unigram';
  let byteFallback = false;
  let addDummyPrefix = true;
  let removeExtraWhitespaces = true;
  let normalizerName = '';
  const text = (r: ProtoReader, [s, e]: [number, number]): string => {
    try {
      return utf8.decode(buf.subarray(s, e));
    } catch {
      return r.fail('string field is not valid UTF-8');
    }
  };

  const top: ProtoReader = new ProtoReader(buf, file);
  while (top.pos < top.end) {
    const key = top.varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (field === 1 && wire === 2) {
      const [s, e] = top.bytes();
      const r: ProtoReader = new ProtoReader(buf, file, e, s);
      let piece: string | null = null;
      let score = 0;
      let type: number = SpPieceType.Normal;
      while (r.pos < r.end) {
        const k = r.varint();
        const f = Math.floor(k / 8);
        const w = k & 7;
        if (f === 1 && w === 2) piece = text(r, r.bytes());
        else if (f === 2 && w === 5) score = r.fixed32();
        else if (f === 3 && w === 0) type = r.varint();
        else r.skip(w);
      }
      if (piece === null) top.fail(`piece ${pieces.length} has no text`);
      pieces.push(piece);
      scores.push(score);
      types.push(type);
    } else if (field === 2 && wire === 2) {
      const [s, e] = top.bytes();
      const r: ProtoReader = new ProtoReader(buf, file, e, s);
      while (r.pos < r.end) {
        const k = r.varint();
        const f = Math.floor(k / 8);
        const w = k & 7;
        if (f === 3 && w === 0) {
          const t = r.varint();
          const m = MODEL_TYPES[t];
          if (!m) r.fail(`unknown model_type ${t}`);
          modelType = m;
        } else if (f === 35 && w === 0) byteFallback = r.varint() !== 0;
        else r.skip(w);
      }
    } else if (field === 3 && wire === 2) {
      const [s, e] = top.bytes();
      const r: ProtoReader = new ProtoReader(buf, file, e, s);
      while (r.pos < r.end) {
        const k = r.varint();
        const f = Math.floor(k / 8);
        const w = k & 7;
        if (f === 1 && w === 2) normalizerName = text(r, r.bytes());
        else if (f === 3 && w === 0) addDummyPrefix = r.varint() !== 0;
        else if (f === 4 && w === 0) removeExtraWhitespaces = r.varint() !== 0;
        else r.skip(w);
      }
    } else {
      top.skip(wire);
    }
  }
  if (pieces.length === 0) throw new TokenizerFormatError(file, 'SentencePiece model has no pieces (not a .model file?)');
  return {
    pieces,
    scores: Float32Array.from(scores),
    types: Uint8Array.from(types),
    modelType,
    byteFallback,
    addDummyPrefix,
    removeExtraWhitespaces,
    normalizerName,
  };
}

export function readSentencePieceModel(path: string): SentencePieceModel {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new TokenizerFormatError(path, `cannot read SentencePiece model: ${(e as Error).message}`);
  }
  return parseSentencePieceModel(buf, path);
}
