// Training data: documents → token ids → fixed-length rows, and the deterministic order in
// which rows are drawn.
//
// Documents come from a text file (blank-line-separated) or JSONL ("text" fields) through the
// model's tokenizer, each as [BOS] + ids + [EOS] (BOS when the tokenizer adds one by default,
// EOS when it has one), or from a token file whose documents start at each BOS.
//
// Packing: documents are laid end to end into rows of T tokens. A document that does not fit
// in what is left of a row continues at the start of the next row. Each stretch of one document
// inside a row is a segment: positions restart at 0 and attention never crosses segments (so no
// token sees another document). Every token of a document except the first is a target exactly
// once: the last token of a stretch that continues in the next row is labelled with the token
// that starts the next stretch. Only the final row is padded (no targets there).
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { seededRandom } from '../convert/calibrate.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import type { TrainRow } from './model.js';

/**
 * Token ids of each document, with BOS/EOS as described above. Through encodeAsync (the Rust
 * binding when it loads), a batch of documents at a time, so they tokenize on several threads.
 */
export async function tokenizeDocuments(tok: TextTokenizer, docs: readonly string[]): Promise<Int32Array[]> {
  const addBos = tok.addBosByDefault && tok.bosId !== null;
  const addEos = tok.eosId !== null;
  const out: Int32Array[] = [];
  for (let i = 0; i < docs.length; i += 64) {
    const batch = await Promise.all(docs.slice(i, i + 64).map((d) => tok.encodeAsync(d, { addBos, addEos })));
    for (const ids of batch) out.push(Int32Array.from(ids));
  }
  return out;
}

export interface Packed {
  rows: TrainRow[];
  /** Targets over all rows (predictions one pass over the data makes). */
  targets: number;
  documents: number;
}

export function packDocuments(docs: readonly Int32Array[], T: number, padId = 0): Packed {
  if (!Number.isInteger(T) || T < 2) throw new Error(`sequence length must be an integer ≥ 2, got ${T}`);
  const rows: TrainRow[] = [];
  let tokens = new Int32Array(T), targets = new Int32Array(T).fill(-1), positions = new Int32Array(T);
  let starts: number[] = [];
  let pos = 0, nTargets = 0;
  const closeRow = (): void => {
    for (let t = pos; t < T; t++) tokens[t] = padId;
    // The padding is a segment of its own so nothing real attends to it.
    if (pos < T) starts.push(pos);
    rows.push({ T, tokens, targets, positions, segments: Int32Array.from(starts) });
    tokens = new Int32Array(T); targets = new Int32Array(T).fill(-1); positions = new Int32Array(T);
    starts = [];
    pos = 0;
  };
  let used = 0;
  for (const d of docs) {
    if (d.length < 2) continue;
    used++;
    for (let i = 0; i < d.length;) {
      if (pos === T) closeRow();
      const m = Math.min(T - pos, d.length - i);
      starts.push(pos);
      for (let j = 0; j < m; j++) {
        tokens[pos + j] = d[i + j]!;
        positions[pos + j] = j;
        const next = i + j + 1;
        if (next < d.length) { targets[pos + j] = d[next]!; nTargets++; }
      }
      pos += m;
      i += m;
    }
  }
  if (pos > 0) closeRow();
  if (rows.length === 0) throw new Error('no training data: every document has fewer than 2 tokens');
  return { rows, targets: nTargets, documents: used };
}

/**
 * Reads a token file: llm.c's format (a 256 × int32 header with magic 20240520, version 1 →
 * uint16 tokens, 2 → uint32, then the count), else raw little-endian uint16 (`.bin`, `.u16`,
 * nanoGPT's format) or uint32 (`.u32`). Documents start at each `bosId` (one document when
 * absent). Ids must be < vocab.
 */
export function readTokenFile(path: string, vocab: number, bosId: number | null): Int32Array[] {
  const size = statSync(path).size;
  const fd = openSync(path, 'r');
  let ids: Int32Array;
  try {
    const read = (pos: number, n: number): Uint8Array => {
      const buf = new Uint8Array(n);
      let got = 0;
      while (got < n) {
        const k = readSync(fd, buf, got, n - got, pos + got);
        if (k === 0) throw new Error(`${path}: file ended at byte ${pos + got}, expected ${pos + n}`);
        got += k;
      }
      return buf;
    };
    let offset = 0, width: 2 | 4;
    const head = size >= 1024 ? new Int32Array(read(0, 1024).buffer) : null;
    if (head && head[0] === 20240520) {
      if (head[1] !== 1 && head[1] !== 2) throw new Error(`${path}: llm.c token file version ${head[1]} (expected 1: uint16 or 2: uint32)`);
      width = head[1] === 1 ? 2 : 4;
      offset = 1024;
      const n = head[2]!;
      if (n < 0 || offset + n * width > size) throw new Error(`${path}: header says ${n} tokens, the file holds ${Math.floor((size - offset) / width)}`);
      ids = decode(read(offset, n * width), width);
    } else if (path.endsWith('.bin') || path.endsWith('.u16') || path.endsWith('.u32')) {
      width = path.endsWith('.u32') ? 4 : 2;
      if (size % width !== 0) throw new Error(`${path}: ${size} bytes is not a whole number of ${width}-byte tokens`);
      ids = decode(read(0, size), width);
    } else {
      throw new Error(`${path}: not a token file (llm.c .bin with magic 20240520, or raw .bin/.u16 uint16 / .u32 uint32)`);
    }
  } finally {
    closeSync(fd);
  }
  for (let i = 0; i < ids.length; i++) if (ids[i]! >= vocab) throw new Error(`${path}: token ${i} is ${ids[i]}, outside the vocabulary [0, ${vocab})`);
  const docs: Int32Array[] = [];
  let s = 0;
  for (let i = 1; i <= ids.length; i++) {
    if (i === ids.length || (bosId !== null && ids[i] === bosId)) {
      if (i > s) docs.push(ids.subarray(s, i));
      s = i;
    }
  }
  return docs;
}

function decode(bytes: Uint8Array, width: 2 | 4): Int32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength / width;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = width === 2 ? dv.getUint16(i * 2, true) : dv.getUint32(i * 4, true);
  return out;
}

/**
 * Row indices of optimizer step `step` (0-based) with `batch` rows per step: epochs walk the
 * rows in a seeded permutation, a fresh one per epoch. A pure function of (rows, batch, step,
 * seed), so a resumed run draws exactly the rows an uninterrupted one would.
 */
export function batchRows(nRows: number, batch: number, step: number, seed: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < batch; i++) {
    const g = step * batch + i;
    const epoch = Math.floor(g / nRows);
    out.push(epochPermutation(nRows, seed, epoch)[g % nRows]!);
  }
  return out;
}

const permCache = new Map<string, Int32Array>();

function epochPermutation(n: number, seed: number, epoch: number): Int32Array {
  const key = `${n}:${seed}:${epoch}`;
  let p = permCache.get(key);
  if (p) return p;
  const rnd = seededRandom((seed + Math.imul(epoch + 1, 0x9e3779b1)) >>> 0);
  p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    const t = p[i]!; p[i] = p[j]!; p[j] = t;
  }
  if (permCache.size > 16) permCache.clear();
  permCache.set(key, p);
  return p;
}
