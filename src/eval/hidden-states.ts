// Hidden states of many sequences at some depth of some model, parked in a temporary file between
// layers: the layer-by-layer sweeps of calibration (docs/methods.md#calibration) and of the stage
// evaluation run every sequence through one decoder layer at a time, so memory holds one layer's
// weights and one sequence of states whatever the number of tokens.
import { mkdtempSync, openSync, closeSync, readdirSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ModelArgs } from '../models/model-args.js';
import { registerTempPath } from '../io/interrupt.js';
import type { Tensor, WeightDType } from '../tensor.js';
import { kernels } from '../kernels/index.js';
import type { Decoder, DecoderLayer } from '../models/decoder.js';
import { addInPlace, embedRow, rmsNorm } from '../models/ops.js';
import { Workspace } from '../models/workspace.js';

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

// One scratch folder per process while any sweep file is open (hidden states, spilled
// statistics): created with the first, removed with the last. The pid in the name lets a later
// run recognise (and delete) the folder of a killed one.
let scratch: { dir: string; users: number; unregister: () => void } | null = null;
let serial = 0;

function openScratchFile(name: string): { fd: number; release(): void } {
  if (!scratch) {
    cleanStaleCalibrationFiles();
    const dir = mkdtempSync(join(tmpdir(), `${CALIB_PREFIX}${process.pid}-`));
    scratch = { dir, users: 0, unregister: registerTempPath(dir) };
  }
  const s = scratch;
  s.users++;
  const path = join(s.dir, `${name}-${serial++}`);
  const fd = openSync(path, 'w+');
  return {
    fd,
    release: () => {
      closeSync(fd);
      rmSync(path, { force: true });
      if (--s.users === 0) {
        rmSync(s.dir, { recursive: true, force: true });
        s.unregister();
        if (scratch === s) scratch = null;
      }
    },
  };
}

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
  private readonly fd: number;
  private readonly release: () => void;
  private readonly ws: Workspace;
  private readonly buf: Float32Array;
  /** Layers applied so far. */
  depth = 0;

  private constructor(samples: number, seqLen: number, hidden: number, eps: number, ws: Workspace) {
    this.ws = ws;
    this.samples = samples;
    this.seqLen = seqLen;
    this.hidden = hidden;
    this.eps = eps;
    const f = openScratchFile('hidden.f32');
    this.fd = f.fd;
    this.release = f.release;
    this.buf = new Float32Array(seqLen * hidden);
  }

  /** Embeds the samples with the model's embedding table (depth 0). */
  static embed(model: Decoder, samples: readonly Int32Array[]): HiddenStates {
    return HiddenStates.fromEmbedding(model.config, model.embed, samples);
  }

  /**
   * The same from an embedding table alone (streaming conversion keeps no model). `ws`: scratch
   * shared with other streams that are never used inside one another's calls (a stage sweep's),
   * so their layer scratch (the MLP's T × intermediate buffers) exists once, not per stream.
   */
  static fromEmbedding(config: ModelArgs, embed: Tensor<WeightDType>, samples: readonly Int32Array[], ws = new Workspace()): HiddenStates {
    const L = samples[0]!.length, D = config.hiddenSize;
    const h = new HiddenStates(samples.length, L, D, config.rmsNormEps, ws);
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

  /** Sample s's states [seqLen × D] (a reused buffer, valid until the next call). */
  sample(s: number): Float32Array {
    this.read(s);
    return this.buf;
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
    this.release();
  }
}

/**
 * Float64 arrays parked in a temporary file (pushed in order, read back by index): per-layer
 * statistics that a later pass needs, without holding every layer's in memory. close() deletes it.
 */
export class Float64Spill {
  private readonly fd: number;
  private readonly release: () => void;
  private readonly spans: { offset: number; length: number }[] = [];
  private end = 0;

  constructor() {
    const f = openScratchFile('stats.f64');
    this.fd = f.fd;
    this.release = f.release;
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
    this.release();
  }
}
