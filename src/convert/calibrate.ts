// Stage 2 — calibration (docs/methods.md#calibration).
//
// Samples: as TransMLA's prepare_dataloader, each sample joins random documents with "\n\n"
// until it reaches L tokens (BOS first when the tokenizer has one), then is cut to L. The
// document order comes from a seeded generator, so a seed reproduces the set.
//
// Statistics: the pipeline runs the model layer by layer over all N·L tokens. Before layer l
// it accumulates the float64 Gram Σ_l = Σ_t [x_t;1][x_t;1]ᵀ of that layer's attention input
// (x after input RMSNorm; the constant 1 carries the biases; eval/hidden-states.ts), so every covariance a stage needs
// — keys per frequency, [K_nope ; V], queries — is W·Σ_l·Wᵀ for the matching rows W. Then it
// pushes the hidden states through layer l (of whichever model the stage calls for) and moves on.
// Between layers the N·L×D hidden states live in a temporary file, read and written one sample
// at a time, so memory holds one sample and one layer's (D+1)² statistic whatever N·L is. (What a
// caller keeps across layers — transmla.ts spills each layer's (2·G·d)² [K;V] covariance to a
// temporary file — is likewise independent of N·L.)
import { readFileSync } from 'node:fs';
import { gemmF64 } from '../linalg/dense.js';
import { OptionError } from '../option-error.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';

/** Documents of a calibration text: JSONL "text" fields, or blank-line-separated blocks of a plain file. */
export function readDocuments(path: string): string[] {
  const raw = readFileSync(path, 'utf8');
  let docs: string[];
  if (path.endsWith('.jsonl')) {
    docs = [];
    raw.split('\n').forEach((line, i) => {
      if (line.trim() === '') return;
      let obj: unknown;
      try {
        obj = JSON.parse(line);
      } catch (e) {
        throw new Error(`${path}:${i + 1}: not valid JSON: ${(e as Error).message}`);
      }
      const t = (obj as { text?: unknown } | null)?.text;
      if (typeof t !== 'string') throw new Error(`${path}:${i + 1}: the object has no string "text" field`);
      if (t.trim() !== '') docs.push(t);
    });
  } else {
    docs = raw.split(/\n[ \t\r]*\n/).map((d) => d.trim()).filter((d) => d !== '');
  }
  if (docs.length === 0) throw new Error(`${path}: no documents (expected text with blank-line-separated documents, or JSONL with "text" fields)`);
  return docs;
}

/** A small seeded generator (mulberry32): uniform [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface SampleOptions {
  samples: number;
  seqLen: number;
  seed: number;
}

/**
 * N samples of exactly L tokens each. Encoded by encodeAsync (the Rust tokenizer where it loads:
 * the same ids, and the growing sample text is re-encoded once per document it takes).
 */
export async function calibrationSamples(tok: TextTokenizer, docs: readonly string[], o: SampleOptions): Promise<Int32Array[]> {
  if (!Number.isInteger(o.samples) || o.samples < 1) throw new OptionError(`--calib-samples must be a positive integer, got ${o.samples}`);
  if (!Number.isInteger(o.seqLen) || o.seqLen < 2) throw new OptionError(`--calib-seqlen must be an integer ≥ 2, got ${o.seqLen}`);
  if (docs.length === 0) throw new Error('no calibration documents');
  const rnd = seededRandom(o.seed);
  const addBos = tok.addBosByDefault && tok.bosId !== null;
  const out: Int32Array[] = [];
  for (let s = 0; s < o.samples; s++) {
    let text = '';
    let ids: number[] = [];
    // Bounded: each round adds a non-empty document, so the token count strictly grows.
    for (let round = 0; ids.length < o.seqLen; round++) {
      if (round > 100_000) throw new Error('calibration text too short to fill a sample');
      const doc = docs[Math.floor(rnd() * docs.length)]!;
      text = text === '' ? doc : `${text}\n\n${doc}`;
      ids = await tok.encodeAsync(text, { addBos });
    }
    out.push(Int32Array.from(ids.slice(0, o.seqLen)));
  }
  return out;
}

/** W·Σ·Wᵀ [rows²] for W [rows × (D+1)] and a Gram Σ [(D+1)²]: the covariance of W's outputs. */
export function projectedCov(W: Float64Array, rows: number, gram: Float64Array, Dp: number): Float64Array {
  if (W.length !== rows * Dp || gram.length !== Dp * Dp) throw new Error(`projectedCov: shapes ${W.length} / ${gram.length} do not match ${rows}×${Dp}`);
  return gemmF64(gemmF64(W, gram, rows, Dp, Dp), W, rows, rows, Dp, true);
}

