// Stage 2 — calibration (docs/methods.md#calibration).
//
// Samples: as TransMLA's prepare_dataloader, each sample joins random documents with "\n\n"
// until it reaches L tokens (BOS first when the tokenizer has one), then is cut to L. The
// document order comes from a seeded generator, so a seed reproduces the set.
//
// Statistics: the pipeline runs the model layer by layer over all N·L tokens. Before layer l
// it accumulates the float64 Gram Σ_l = Σ_t [x_t;1][x_t;1]ᵀ of that layer's attention input
// (x after input RMSNorm; the constant 1 carries the biases), so every covariance a stage needs
// — keys per frequency, [K_nope ; V], queries — is W·Σ_l·Wᵀ for the matching rows W. Then it
// pushes the hidden states through layer l (of whichever model the stage calls for) and moves on.
// Between layers the N·L×D hidden states live in a temporary file, read and written one sample
// at a time, so memory holds one sample and one layer's (D+1)² statistic whatever N·L is. (What a
// caller keeps across layers — convert.ts keeps each layer's (2·G·d)² [K;V] covariance — is
// likewise independent of N·L.)
import { mkdtempSync, openSync, closeSync, readdirSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ModelArgs } from '../arch/args.js';
import type { DecoderLayer, Decoder } from '../models/decoder.js';
import { registerTempPath } from '../io/interrupt.js';
import type { Tensor } from '../tensor.js';
import { kernels } from '../kernels/index.js';
import { gemmF64 } from '../linalg/dense.js';
import { addInPlace, embedRow, rmsNorm } from '../models/ops.js';
import { Workspace } from '../models/workspace.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import { OptionError } from '../option-error.js';

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

/** N samples of exactly L tokens each. */
export function calibrationSamples(tok: TextTokenizer, docs: readonly string[], o: SampleOptions): Int32Array[] {
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
      ids = tok.encode(text, { addBos });
    }
    out.push(Int32Array.from(ids.slice(0, o.seqLen)));
  }
  return out;
}

/** One decoder block on T tokens of one sequence (as Decoder.hidden does per layer), in place on x. */
export function decoderLayerForward(layer: DecoderLayer, x: Float32Array, T: number, D: number, eps: number, ws: Workspace): void {
  const xn = ws.get('cal.xn', T * D);
  const y = ws.get('cal.y', T * D);
  const cache = layer.attn.createCache();
  rmsNorm(x, T, D, layer.inputNorm, eps, xn);
  layer.attn.forward(xn, T, 0, cache, y, ws);
  addInPlace(x, y, T * D);
  rmsNorm(x, T, D, layer.postNorm, eps, xn);
  layer.mlp.forward(xn, T, y, ws);
  addInPlace(x, y, T * D);
}

const CALIB_PREFIX = 'transmla-calib-';

/** Removes calibration temp folders (`transmla-calib-<pid>-…`) of processes that no longer exist (killed runs). */
export function cleanStaleCalibrationFiles(dir = tmpdir()): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const n of names) {
    const m = /^transmla-calib-(\d+)-/.exec(n);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
      continue;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EPERM') continue;
    }
    rmSync(join(dir, n), { recursive: true, force: true });
    removed.push(n);
  }
  return removed;
}

/**
 * The hidden states of the calibration samples at some depth of some model, kept in a
 * temporary file. Call close() when done (it deletes the file).
 */
export class HiddenStates {
  readonly samples: number;
  readonly seqLen: number;
  readonly hidden: number;
  private readonly eps: number;
  private readonly dir: string;
  private readonly fd: number;
  private readonly unregister: () => void;
  private readonly ws = new Workspace();
  private readonly buf: Float32Array;
  /** Layers applied so far. */
  depth = 0;

  private constructor(samples: number, seqLen: number, hidden: number, eps: number) {
    this.samples = samples;
    this.seqLen = seqLen;
    this.hidden = hidden;
    this.eps = eps;
    cleanStaleCalibrationFiles();
    // The pid in the name lets a later run recognise (and delete) the folder of a killed one.
    this.dir = mkdtempSync(join(tmpdir(), `${CALIB_PREFIX}${process.pid}-`));
    this.unregister = registerTempPath(this.dir);
    this.fd = openSync(join(this.dir, 'hidden.f32'), 'w+');
    this.buf = new Float32Array(seqLen * hidden);
  }

  /** Embeds the samples with the model's embedding table (depth 0). */
  static embed(model: Decoder, samples: readonly Int32Array[]): HiddenStates {
    return HiddenStates.fromEmbedding(model.config, model.embed, samples);
  }

  /** The same from an embedding table alone (streaming conversion keeps no model). */
  static fromEmbedding(config: ModelArgs, embed: Tensor, samples: readonly Int32Array[]): HiddenStates {
    const L = samples[0]!.length, D = config.hiddenSize;
    const h = new HiddenStates(samples.length, L, D, config.rmsNormEps);
    samples.forEach((ids, s) => {
      if (ids.length !== L) throw new Error('calibration samples must have equal length');
      for (let t = 0; t < L; t++) embedRow(embed, ids[t]!, D, h.buf.subarray(t * D, (t + 1) * D));
      h.write(s);
    });
    return h;
  }

  private offset(s: number): number {
    return s * this.buf.byteLength;
  }

  private read(s: number): void {
    const bytes = new Uint8Array(this.buf.buffer);
    let got = 0;
    while (got < bytes.length) {
      const n = readSync(this.fd, bytes, got, bytes.length - got, this.offset(s) + got);
      if (n === 0) throw new Error('calibration hidden-state file ended early');
      got += n;
    }
  }

  private write(s: number): void {
    const bytes = new Uint8Array(this.buf.buffer);
    let put = 0;
    while (put < bytes.length) put += writeSync(this.fd, bytes, put, bytes.length - put, this.offset(s) + put);
  }

  /** Σ [rmsnorm(x);1][rmsnorm(x);1]ᵀ over every token, float64 [(D+1)²], for a layer's input norm. */
  gram(inputNorm: Float32Array): Float64Array {
    const T = this.seqLen, D = this.hidden, Dp = D + 1;
    const acc = new Float64Array(Dp * Dp);
    const xn = this.ws.get('cal.gram.xn', T * D);
    const x1 = this.ws.get('cal.gram.x1', T * Dp);
    for (let s = 0; s < this.samples; s++) {
      this.read(s);
      rmsNorm(this.buf, T, D, inputNorm, this.eps, xn);
      for (let t = 0; t < T; t++) {
        x1.set(xn.subarray(t * D, (t + 1) * D), t * Dp);
        x1[t * Dp + D] = 1;
      }
      kernels().gramAccumulate(x1, T, Dp, acc);
    }
    return acc;
  }

  /**
   * Calls fn with every sample's normed layer input rmsnorm(x) [seqLen × D] (a reused buffer), for
   * statistics a Gram cannot give (MHA2MLA's mean per-token pair norms, rope-select.ts).
   */
  visitNormed(inputNorm: Float32Array, fn: (xn: Float32Array, T: number) => void): void {
    const T = this.seqLen, D = this.hidden;
    const xn = this.ws.get('cal.visit.xn', T * D);
    for (let s = 0; s < this.samples; s++) {
      this.read(s);
      rmsNorm(this.buf, T, D, inputNorm, this.eps, xn);
      fn(xn, T);
    }
  }

  /** Runs every sample through one decoder layer. */
  advance(layer: DecoderLayer): void {
    for (let s = 0; s < this.samples; s++) {
      this.read(s);
      decoderLayerForward(layer, this.buf, this.seqLen, this.hidden, this.eps, this.ws);
      this.write(s);
    }
    this.depth++;
  }

  close(): void {
    closeSync(this.fd);
    rmSync(this.dir, { recursive: true, force: true });
    this.unregister();
  }
}

/** W·Σ·Wᵀ [rows²] for W [rows × (D+1)] and a Gram Σ [(D+1)²]: the covariance of W's outputs. */
export function projectedCov(W: Float64Array, rows: number, gram: Float64Array, Dp: number): Float64Array {
  if (W.length !== rows * Dp || gram.length !== Dp * Dp) throw new Error(`projectedCov: shapes ${W.length} / ${gram.length} do not match ${rows}×${Dp}`);
  return gemmF64(gemmF64(W, gram, rows, Dp, Dp), W, rows, rows, Dp, true);
}

/**
 * Float64 arrays parked in a temporary file (pushed in order, read back by index): per-layer
 * statistics that a later pass needs, without holding every layer's in memory. close() deletes it.
 */
export class Float64Spill {
  private readonly dir: string;
  private readonly fd: number;
  private readonly unregister: () => void;
  private readonly spans: { offset: number; length: number }[] = [];
  private end = 0;

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), `${CALIB_PREFIX}${process.pid}-`));
    this.unregister = registerTempPath(this.dir);
    this.fd = openSync(join(this.dir, 'stats.f64'), 'w+');
  }

  push(a: Float64Array): number {
    const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    let put = 0;
    while (put < bytes.length) put += writeSync(this.fd, bytes, put, bytes.length - put, this.end + put);
    this.spans.push({ offset: this.end, length: a.length });
    this.end += a.byteLength;
    return this.spans.length - 1;
  }

  read(i: number): Float64Array {
    const s = this.spans[i];
    if (!s) throw new Error(`Float64Spill: no entry ${i}`);
    const out = new Float64Array(s.length);
    const bytes = new Uint8Array(out.buffer);
    let got = 0;
    while (got < bytes.length) {
      const n = readSync(this.fd, bytes, got, bytes.length - got, s.offset + got);
      if (n === 0) throw new Error('statistics spill file ended early');
      got += n;
    }
    return out;
  }

  close(): void {
    closeSync(this.fd);
    rmSync(this.dir, { recursive: true, force: true });
    this.unregister();
  }
}
