// llama2.c model checkpoints (.bin): reader, writer, and conversion to/from a Hugging Face
// llama folder.
//
// Supported formats (karpathy/llama2.c export.py):
// - v0 "legacy": 7 × i32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//   vocab_size — negative when the classifier is not shared —, seq_len), then f32 arrays:
//   token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3 (each stacked over
//   layers), rms_final, freq_cis_real, freq_cis_imag ([seq_len, head_dim/2] each, unused:
//   run.c recomputes RoPE), then wcls when not shared. Read and written.
// - v1: 256-byte header: u32 magic 0x616b3432 ("ak42"), i32 version, the 7 × i32,
//   u8 shared_classifier; f32 arrays rms_att, rms_ffn, rms_final, token_embedding, wq, wk,
//   wv, wo, w1, w2, w3, [wcls]. Read and written.
// - v2: v1 header + i32 group_size; f32 norms, then each matrix as Q8_0 (i8 values, then
//   f32 scale per group_size values). Read only, dequantized to f32 (so not lossless).
//
// RoPE: llama2.c rotates adjacent pairs (2i, 2i+1) of each head; Hugging Face llama rotates
// (i, i + head_dim/2). Converting permutes the rows of wq and wk inside each head to
// [0, 2, 4, …, 1, 3, 5, …] so the HF model computes the same function; export undoes it.
import { closeSync, copyFileSync, existsSync, fstatSync, openSync, readSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { kernels } from '../kernels/index.js';
import type { Tensor, WeightSource } from '../tensor.js';
import { Llama2cTokenizer, encodeLlama2cTokenizerBin, toHfTokenizerFiles } from '../tokenizer/llama2c-tokenizer.js';
import { withAtomicDir } from './atomic-dir.js';
import { INDEX_FILE, openCheckpoint, writeCheckpoint } from './checkpoint.js';
import { readLlamaConfig, type LlamaConfig } from './hf-config.js';
import type { NamedTensor } from './safetensors.js';

export class Llama2cFormatError extends Error {
  override name = 'Llama2cFormatError';
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
  }
}

export const LLAMA2C_MAGIC = 0x616b3432;
const V1_HEADER_BYTES = 256;
const V0_HEADER_BYTES = 28;
/** llama2.c's run.c hard-codes these; they are not in the file. */
export const LLAMA2C_RMS_EPS = 1e-5;
export const LLAMA2C_ROPE_THETA = 10000;

export interface Llama2cHeader {
  version: 0 | 1 | 2;
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  sharedClassifier: boolean;
  /** Q8_0 group size (v2 only). */
  groupSize: number | null;
}

export interface Llama2cLayer {
  rmsAtt: Float32Array;
  wq: Float32Array;
  wk: Float32Array;
  wv: Float32Array;
  wo: Float32Array;
  rmsFfn: Float32Array;
  w1: Float32Array;
  w2: Float32Array;
  w3: Float32Array;
}

/** Weights in llama2.c's layout (adjacent-pair RoPE rows in wq/wk). */
export interface Llama2cCheckpoint {
  header: Llama2cHeader;
  tokenEmbedding: Float32Array;
  layers: Llama2cLayer[];
  rmsFinal: Float32Array;
  /** null when the classifier is shared with the embedding. */
  wcls: Float32Array | null;
  /**
   * The v0 file's RoPE tables ([seq_len, head_dim/2] each), kept so a v0 file is rewritten
   * byte for byte; absent (recomputed on write) for v1/v2 files and HF sources.
   */
  freqCis?: { real: Float32Array; imag: Float32Array };
}

function headDimOf(h: Llama2cHeader): number {
  return h.dim / h.nHeads;
}

/** Element counts of every array, in llama2.c terms. */
function sizes(h: Llama2cHeader) {
  const hd = headDimOf(h);
  const kvDim = h.nKvHeads * hd;
  return {
    emb: h.vocabSize * h.dim,
    norm: h.dim,
    wq: h.dim * h.dim,
    wk: kvDim * h.dim,
    wv: kvDim * h.dim,
    wo: h.dim * h.dim,
    w1: h.hiddenDim * h.dim,
    w2: h.dim * h.hiddenDim,
    w3: h.hiddenDim * h.dim,
    freq: (h.seqLen * hd) / 2,
  };
}

/** Bytes the whole file must have, given its header. */
export function expectedFileBytes(h: Llama2cHeader): number {
  const s = sizes(h);
  const L = h.nLayers;
  const matrices = [s.emb, ...Array<number>(L).fill(s.wq), ...Array<number>(L).fill(s.wk), ...Array<number>(L).fill(s.wv), ...Array<number>(L).fill(s.wo), ...Array<number>(L).fill(s.w1), ...Array<number>(L).fill(s.w2), ...Array<number>(L).fill(s.w3)];
  if (!h.sharedClassifier) matrices.push(s.emb);
  const norms = (2 * L + 1) * s.norm;
  if (h.version === 0) return V0_HEADER_BYTES + 4 * (norms + matrices.reduce((a, b) => a + b, 0) + 2 * s.freq);
  if (h.version === 1) return V1_HEADER_BYTES + 4 * (norms + matrices.reduce((a, b) => a + b, 0));
  const g = h.groupSize!;
  return V1_HEADER_BYTES + 4 * norms + matrices.reduce((a, n) => a + n + 4 * (n / g), 0);
}

function validateHeader(h: Llama2cHeader, file: string): void {
  const bad = (what: string): never => {
    throw new Llama2cFormatError(file, `implausible llama2.c header (${what}); dim=${h.dim} hidden_dim=${h.hiddenDim} n_layers=${h.nLayers} n_heads=${h.nHeads} n_kv_heads=${h.nKvHeads} vocab_size=${h.vocabSize} seq_len=${h.seqLen} — not a llama2.c checkpoint or corrupt`);
  };
  // Bounds far above any llama2.c model; they catch garbage read as a header.
  const limits: [string, number, number][] = [
    ['dim', h.dim, 1 << 16],
    ['hidden_dim', h.hiddenDim, 1 << 18],
    ['n_layers', h.nLayers, 1024],
    ['n_heads', h.nHeads, 1024],
    ['n_kv_heads', h.nKvHeads, 1024],
    ['vocab_size', h.vocabSize, 1 << 22],
    ['seq_len', h.seqLen, 1 << 22],
  ];
  for (const [name, v, max] of limits) if (!Number.isInteger(v) || v <= 0 || v > max) bad(`${name} = ${v} is outside [1, ${max}]`);
  if (h.dim % h.nHeads !== 0) bad('dim is not a multiple of n_heads');
  if (h.nHeads % h.nKvHeads !== 0) bad('n_heads is not a multiple of n_kv_heads');
  if (headDimOf(h) % 2 !== 0) bad('head_dim is odd, RoPE needs pairs');
  if (h.version === 2) {
    const g = h.groupSize!;
    if (!Number.isInteger(g) || g <= 0) bad(`group_size = ${g}`);
    const s = sizes(h);
    for (const [name, n] of Object.entries(s)) if (name !== 'norm' && name !== 'freq' && n % g !== 0) bad(`${name} has ${n} values, not a multiple of group_size ${g}`);
  }
}

/** Reads and validates the header; `fileBytes` is checked against what the header implies. */
export function parseLlama2cHeader(buf: Uint8Array, fileBytes: number, file: string): Llama2cHeader {
  if (fileBytes < V0_HEADER_BYTES) throw new Llama2cFormatError(file, `file of ${fileBytes} bytes is too short for a llama2.c header (${V0_HEADER_BYTES} bytes)`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = dv.getUint32(0, true);
  let h: Llama2cHeader;
  if (magic === LLAMA2C_MAGIC) {
    if (fileBytes < V1_HEADER_BYTES) throw new Llama2cFormatError(file, `file of ${fileBytes} bytes starts with the "ak42" magic but is shorter than the ${V1_HEADER_BYTES}-byte header`);
    const version = dv.getInt32(4, true);
    if (version !== 1 && version !== 2) throw new Llama2cFormatError(file, `llama2.c format version ${version} is not supported (supported: legacy v0, v1 f32, v2 Q8_0)`);
    const p = (i: number) => dv.getInt32(8 + 4 * i, true);
    const shared = dv.getUint8(36);
    if (shared > 1) throw new Llama2cFormatError(file, `shared_classifier flag is ${shared}, expected 0 or 1`);
    h = { version, dim: p(0), hiddenDim: p(1), nLayers: p(2), nHeads: p(3), nKvHeads: p(4), vocabSize: p(5), seqLen: p(6), sharedClassifier: shared === 1, groupSize: version === 2 ? dv.getInt32(37, true) : null };
  } else {
    const p = (i: number) => dv.getInt32(4 * i, true);
    const v = p(5);
    h = { version: 0, dim: p(0), hiddenDim: p(1), nLayers: p(2), nHeads: p(3), nKvHeads: p(4), vocabSize: Math.abs(v), seqLen: p(6), sharedClassifier: v > 0, groupSize: null };
  }
  validateHeader(h, file);
  const want = expectedFileBytes(h);
  if (fileBytes < want) throw new Llama2cFormatError(file, `truncated: the v${h.version} header implies ${want} bytes but the file has ${fileBytes}`);
  if (fileBytes > want) {
    throw new Llama2cFormatError(file, `the file has ${fileBytes - want} bytes beyond the ${want} its v${h.version} header implies (wrong format, or the vocab_size sign / shared-classifier flag is wrong)`);
  }
  return h;
}

/** Sequential reader of f32 arrays (and Q8_0 blocks) from a file descriptor, into fresh aligned buffers. */
class ArrayReader {
  constructor(
    private readonly fd: number,
    private pos: number,
    private readonly file: string,
  ) {}
  private fill(dst: Uint8Array): void {
    let done = 0;
    const CHUNK = 1 << 30;
    while (done < dst.length) {
      const n = readSync(this.fd, dst, done, Math.min(CHUNK, dst.length - done), this.pos + done);
      if (n === 0) throw new Llama2cFormatError(this.file, `unexpected end of file at byte ${this.pos + done}`);
      done += n;
    }
    this.pos += dst.length;
  }
  f32(n: number): Float32Array {
    const out = new Float32Array(n);
    this.fill(new Uint8Array(out.buffer));
    return out;
  }
  q80(n: number, group: number): Float32Array {
    const q = new Int8Array(n);
    this.fill(new Uint8Array(q.buffer));
    const s = this.f32(n / group);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = q[i]! * s[Math.floor(i / group)]!;
    return out;
  }
}

/** Reads a llama2.c checkpoint (v0, v1 or v2) into memory. */
export function readLlama2c(path: string): Llama2cCheckpoint {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw new Llama2cFormatError(path, `cannot open: ${(e as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    // A folder opens fine on Linux but fails on read with a bare EISDIR.
    if (!st.isFile()) throw new Llama2cFormatError(path, 'not a regular file');
    const fileBytes = st.size;
    const head = new Uint8Array(V1_HEADER_BYTES);
    readSync(fd, head, 0, Math.min(V1_HEADER_BYTES, fileBytes), 0);
    const h = parseLlama2cHeader(head, fileBytes, path);
    const s = sizes(h);
    const L = h.nLayers;
    const r = new ArrayReader(fd, h.version === 0 ? V0_HEADER_BYTES : V1_HEADER_BYTES, path);
    const stack = (n: number, read: (n: number) => Float32Array) => Array.from({ length: L }, () => read(n));
    let emb: Float32Array, rmsAtt: Float32Array[], rmsFfn: Float32Array[], rmsFinal: Float32Array;
    let wq: Float32Array[], wk: Float32Array[], wv: Float32Array[], wo: Float32Array[], w1: Float32Array[], w2: Float32Array[], w3: Float32Array[];
    let wcls: Float32Array | null = null;
    let ropeTables: Llama2cCheckpoint['freqCis'];
    if (h.version === 0) {
      const f = (n: number) => r.f32(n);
      emb = f(s.emb);
      rmsAtt = stack(s.norm, f);
      wq = stack(s.wq, f);
      wk = stack(s.wk, f);
      wv = stack(s.wv, f);
      wo = stack(s.wo, f);
      rmsFfn = stack(s.norm, f);
      w1 = stack(s.w1, f);
      w2 = stack(s.w2, f);
      w3 = stack(s.w3, f);
      rmsFinal = f(s.norm);
      ropeTables = { real: f(s.freq), imag: f(s.freq) };
      if (!h.sharedClassifier) wcls = f(s.emb);
    } else {
      const f = (n: number) => r.f32(n);
      rmsAtt = stack(s.norm, f);
      rmsFfn = stack(s.norm, f);
      rmsFinal = f(s.norm);
      const m = h.version === 1 ? f : (n: number) => r.q80(n, h.groupSize!);
      emb = m(s.emb);
      wq = stack(s.wq, m);
      wk = stack(s.wk, m);
      wv = stack(s.wv, m);
      wo = stack(s.wo, m);
      w1 = stack(s.w1, m);
      w2 = stack(s.w2, m);
      w3 = stack(s.w3, m);
      if (!h.sharedClassifier) wcls = m(s.emb);
    }
    const layers = Array.from({ length: L }, (_, i) => ({ rmsAtt: rmsAtt[i]!, wq: wq[i]!, wk: wk[i]!, wv: wv[i]!, wo: wo[i]!, rmsFfn: rmsFfn[i]!, w1: w1[i]!, w2: w2[i]!, w3: w3[i]! }));
    return { header: h, tokenEmbedding: emb, layers, rmsFinal, wcls, ...(ropeTables ? { freqCis: ropeTables } : {}) };
  } finally {
    closeSync(fd);
  }
}

/**
 * RoPE tables as llama2.c's model.py computes them in float32 (cos/sin of t·θ^(−2i/d)).
 * run.c never reads them; v0 files carry them only for layout compatibility.
 */
function freqCis(headDim: number, seqLen: number): [Float32Array, Float32Array] {
  const half = headDim / 2;
  const re = new Float32Array(seqLen * half);
  const im = new Float32Array(seqLen * half);
  for (let i = 0; i < half; i++) {
    const f = Math.fround(1 / Math.fround(Math.pow(LLAMA2C_ROPE_THETA, Math.fround((2 * i) / headDim))));
    for (let t = 0; t < seqLen; t++) {
      const a = Math.fround(t * f);
      re[t * half + i] = Math.cos(a);
      im[t * half + i] = Math.sin(a);
    }
  }
  return [re, im];
}

function checkArrays(ck: Llama2cCheckpoint, where: string): void {
  const s = sizes(ck.header);
  const expect = (name: string, a: Float32Array | null, n: number) => {
    if (!a || a.length !== n) throw new Llama2cFormatError(where, `${name} has ${a?.length ?? 'no'} values, the header needs ${n}`);
  };
  validateHeader(ck.header, where);
  if (ck.layers.length !== ck.header.nLayers) throw new Llama2cFormatError(where, `${ck.layers.length} layers given, header says ${ck.header.nLayers}`);
  expect('token_embedding', ck.tokenEmbedding, s.emb);
  expect('rms_final', ck.rmsFinal, s.norm);
  if (ck.header.sharedClassifier !== (ck.wcls === null)) throw new Llama2cFormatError(where, 'wcls must be given exactly when the classifier is not shared');
  if (ck.wcls) expect('wcls', ck.wcls, s.emb);
  ck.layers.forEach((l, i) => {
    expect(`layer ${i} rms_att`, l.rmsAtt, s.norm);
    expect(`layer ${i} rms_ffn`, l.rmsFfn, s.norm);
    for (const k of ['wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'] as const) expect(`layer ${i} ${k}`, l[k], s[k]);
  });
}

/** Serializes a checkpoint in format v0 (legacy, default) or v1. */
export function encodeLlama2c(ck: Llama2cCheckpoint, version: 0 | 1 = 0): Uint8Array[] {
  checkArrays(ck, 'llama2.c writer');
  const h = ck.header;
  const s = sizes(h);
  const parts: Uint8Array[] = [];
  const f = (a: Float32Array) => parts.push(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  const params = [h.dim, h.hiddenDim, h.nLayers, h.nHeads, h.nKvHeads, h.vocabSize, h.seqLen];
  const L = ck.layers;
  if (version === 0) {
    const header = new Int32Array(params);
    if (!h.sharedClassifier) header[5] = -h.vocabSize;
    parts.push(new Uint8Array(header.buffer));
    f(ck.tokenEmbedding);
    for (const k of ['rmsAtt', 'wq', 'wk', 'wv', 'wo', 'rmsFfn', 'w1', 'w2', 'w3'] as const) L.forEach((l) => f(l[k]));
    f(ck.rmsFinal);
    const kept = ck.freqCis;
    const [re, im] = kept && kept.real.length === s.freq && kept.imag.length === s.freq ? [kept.real, kept.imag] : freqCis(headDimOf(h), h.seqLen);
    f(re);
    f(im);
    if (ck.wcls) f(ck.wcls);
  } else {
    const header = new Uint8Array(V1_HEADER_BYTES);
    const dv = new DataView(header.buffer);
    dv.setUint32(0, LLAMA2C_MAGIC, true);
    dv.setInt32(4, 1, true);
    params.forEach((p, i) => dv.setInt32(8 + 4 * i, p, true));
    dv.setUint8(36, h.sharedClassifier ? 1 : 0);
    parts.push(header);
    L.forEach((l) => f(l.rmsAtt));
    L.forEach((l) => f(l.rmsFfn));
    f(ck.rmsFinal);
    f(ck.tokenEmbedding);
    for (const k of ['wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'] as const) L.forEach((l) => f(l[k]));
    if (ck.wcls) f(ck.wcls);
  }
  return parts;
}

/** Writes `path` via a temporary sibling and a rename, so a failed write leaves no partial file. */
function writeFileAtomic(path: string, parts: Uint8Array[], overwrite: boolean): void {
  const target = resolve(path);
  if (existsSync(target)) {
    if (statSync(target).isDirectory()) throw new Llama2cFormatError(target, 'output path is a folder');
    if (!overwrite) throw new Llama2cFormatError(target, 'output file exists; pass --overwrite to replace it');
  }
  const tmp = join(dirname(target), `.${basename(target)}.tmp-${process.pid}-${Date.now().toString(36)}`);
  try {
    const fd = openSync(tmp, 'w');
    try {
      for (const p of parts) writeFileSync(fd, p);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, target);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

export function writeLlama2c(path: string, ck: Llama2cCheckpoint, opts: { version?: 0 | 1; overwrite?: boolean } = {}): void {
  writeFileAtomic(path, encodeLlama2c(ck, opts.version ?? 0), opts.overwrite ?? false);
}

// ---------------------------------------------------------------------------------
// RoPE row permutation

/**
 * Reorders the rows of a [nHeads·headDim, cols] projection within each head.
 * toHalf: llama2.c (adjacent pairs) → HF rotate-half, new row j·d/2 + i = old row 2i + j.
 * !toHalf: the inverse.
 */
export function permuteRopeRows(w: Float32Array, nHeads: number, headDim: number, cols: number, toHalf: boolean): Float32Array {
  if (w.length !== nHeads * headDim * cols) throw new RangeError(`permuteRopeRows: ${w.length} values for ${nHeads} heads × ${headDim} rows × ${cols} columns`);
  const out = new Float32Array(w.length);
  const half = headDim / 2;
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const hfRow = h * headDim + j * half + i;
        const l2cRow = h * headDim + 2 * i + j;
        const [dst, src] = toHalf ? [hfRow, l2cRow] : [l2cRow, hfRow];
        out.set(w.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------
// llama2.c → Hugging Face

export interface HfLlamaModel {
  config: Record<string, unknown>;
  tensors: NamedTensor[];
}

/** The HF config.json and tensors (rotate-half layout, f32) of a llama2.c checkpoint. */
export function llama2cToHf(ck: Llama2cCheckpoint, special: { bosId: number | null; eosId: number | null }): HfLlamaModel {
  const h = ck.header;
  const hd = headDimOf(h);
  const t = (shape: number[], data: Float32Array): Tensor => ({ dtype: 'f32', shape, data });
  const kvDim = h.nKvHeads * hd;
  const tensors: NamedTensor[] = [{ name: 'model.embed_tokens.weight', tensor: t([h.vocabSize, h.dim], ck.tokenEmbedding) }];
  ck.layers.forEach((l, i) => {
    const p = `model.layers.${i}`;
    tensors.push(
      { name: `${p}.input_layernorm.weight`, tensor: t([h.dim], l.rmsAtt) },
      { name: `${p}.self_attn.q_proj.weight`, tensor: t([h.dim, h.dim], permuteRopeRows(l.wq, h.nHeads, hd, h.dim, true)) },
      { name: `${p}.self_attn.k_proj.weight`, tensor: t([kvDim, h.dim], permuteRopeRows(l.wk, h.nKvHeads, hd, h.dim, true)) },
      { name: `${p}.self_attn.v_proj.weight`, tensor: t([kvDim, h.dim], l.wv) },
      { name: `${p}.self_attn.o_proj.weight`, tensor: t([h.dim, h.dim], l.wo) },
      { name: `${p}.post_attention_layernorm.weight`, tensor: t([h.dim], l.rmsFfn) },
      { name: `${p}.mlp.gate_proj.weight`, tensor: t([h.hiddenDim, h.dim], l.w1) },
      { name: `${p}.mlp.down_proj.weight`, tensor: t([h.dim, h.hiddenDim], l.w2) },
      { name: `${p}.mlp.up_proj.weight`, tensor: t([h.hiddenDim, h.dim], l.w3) },
    );
  });
  tensors.push({ name: 'model.norm.weight', tensor: t([h.dim], ck.rmsFinal) });
  if (ck.wcls) tensors.push({ name: 'lm_head.weight', tensor: t([h.vocabSize, h.dim], ck.wcls) });
  const config: Record<string, unknown> = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: h.dim,
    intermediate_size: h.hiddenDim,
    num_hidden_layers: h.nLayers,
    num_attention_heads: h.nHeads,
    num_key_value_heads: h.nKvHeads,
    head_dim: hd,
    hidden_act: 'silu',
    max_position_embeddings: h.seqLen,
    rms_norm_eps: LLAMA2C_RMS_EPS,
    rope_theta: LLAMA2C_ROPE_THETA,
    rope_scaling: null,
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: h.sharedClassifier,
    vocab_size: h.vocabSize,
    bos_token_id: special.bosId,
    eos_token_id: special.eosId,
    torch_dtype: 'float32',
    initializer_range: 0.02,
    use_cache: true,
  };
  return { config, tensors };
}

export interface ImportLlama2cOptions {
  /** Replace a non-empty output folder. Default false. */
  overwrite?: boolean;
}

export interface ImportLlama2cResult {
  outDir: string;
  header: Llama2cHeader;
  files: string[];
}

/**
 * Converts a llama2.c checkpoint and its tokenizer into a Hugging Face llama folder:
 * config.json, model.safetensors (f32), generation_config.json, tokenizer.json (+ config
 * and special-tokens map) equivalent to the llama2.c tokenizer, and the tokenizer itself
 * as tokenizer.bin (plus tokenizer.model when given a SentencePiece model).
 * @param tokenizerPath a llama2.c tokenizer .bin or a SentencePiece BPE .model
 */
export async function importLlama2c(binPath: string, tokenizerPath: string, outDir: string, opts: ImportLlama2cOptions = {}): Promise<ImportLlama2cResult> {
  const ck = readLlama2c(binPath);
  const h = ck.header;
  if (tokenizerPath.endsWith('.vocab')) {
    throw new Llama2cFormatError(tokenizerPath, 'a SentencePiece .vocab file lacks piece types and the model type; pass the .model file beside it');
  }
  const isModel = tokenizerPath.endsWith('.model');
  const tok = isModel ? Llama2cTokenizer.fromSentencePieceFile(tokenizerPath) : Llama2cTokenizer.fromBinFile(tokenizerPath, h.vocabSize);
  if (tok.vocabSize !== h.vocabSize) {
    throw new Llama2cFormatError(tokenizerPath, `tokenizer has ${tok.vocabSize} tokens but ${binPath} has vocab_size ${h.vocabSize}`);
  }
  const hf = llama2cToHf(ck, { bosId: tok.bosId, eosId: tok.eosId });
  const tokFiles = toHfTokenizerFiles(tok, h.seqLen);
  const generation: Record<string, unknown> = { bos_token_id: tok.bosId, eos_token_id: tok.eosId, max_length: h.seqLen };
  const json = (v: unknown) => JSON.stringify(v, null, 2) + '\n';
  // The inputs are files; an output folder holding them (e.g. their own folder) would delete them.
  const files = await withAtomicDir(outDir, { overwrite: opts.overwrite ?? false, source: [binPath, tokenizerPath] }, async (tmp) => {
    const written = await writeCheckpoint(tmp, hf.tensors, { metadata: { source: `llama2.c v${h.version}` } });
    writeFileSync(join(tmp, 'config.json'), json(hf.config));
    writeFileSync(join(tmp, 'generation_config.json'), json(generation));
    for (const [name, content] of Object.entries(tokFiles)) writeFileSync(join(tmp, name), json(content));
    if (isModel) {
      writeFileSync(join(tmp, 'tokenizer.bin'), encodeLlama2cTokenizerBin(tok.vocab));
      copyFileSync(tokenizerPath, join(tmp, 'tokenizer.model'));
    } else {
      copyFileSync(tokenizerPath, join(tmp, 'tokenizer.bin'));
    }
    return [...written.files, 'config.json', 'generation_config.json', ...Object.keys(tokFiles), 'tokenizer.bin', ...(isModel ? ['tokenizer.model'] : [])];
  });
  return { outDir: resolve(outDir), header: h, files };
}

// ---------------------------------------------------------------------------------
// Hugging Face → llama2.c

function f32Of(t: Tensor): Float32Array {
  if (t.dtype === 'f32') return t.data as Float32Array;
  const out = new Float32Array(t.data.length);
  kernels().toF32(t.data as Uint16Array, t.dtype, out);
  return out;
}

/**
 * Builds a llama2.c checkpoint from an HF llama config and weights. Throws when the model
 * uses something llama2.c cannot express (biases, rope scaling, theta ≠ 10000, head_dim ≠
 * hidden/heads); returns warnings for what it approximates (rms_norm_eps ≠ 1e-5, which
 * run.c hard-codes).
 */
export function hfToLlama2c(c: LlamaConfig, src: WeightSource, where: string): { checkpoint: Llama2cCheckpoint; warnings: string[] } {
  const no = (what: string): never => {
    throw new Llama2cFormatError(where, `cannot be expressed as a llama2.c checkpoint: ${what}`);
  };
  if (c.modelType !== 'llama') no(`model_type ${c.modelType} (llama only)`);
  if (c.attentionBias || c.oBias || c.mlpBias) no('the model has biases');
  if (c.ropeScaling) no(`rope_scaling ${c.ropeScaling.type}`);
  if (c.ropeTheta !== LLAMA2C_ROPE_THETA) no(`rope_theta ${c.ropeTheta} (run.c uses ${LLAMA2C_ROPE_THETA})`);
  if (c.headDim * c.numHeads !== c.hiddenSize) no(`head_dim ${c.headDim} × ${c.numHeads} heads ≠ hidden_size ${c.hiddenSize}`);
  const act = c.raw.hidden_act ?? 'silu';
  if (act !== 'silu') no(`hidden_act ${String(act)}`);
  const warnings: string[] = [];
  if (c.rmsNormEps !== LLAMA2C_RMS_EPS) warnings.push(`rms_norm_eps ${c.rmsNormEps} is not stored in llama2.c files; run.c uses ${LLAMA2C_RMS_EPS}`);
  const D = c.hiddenSize;
  const V = c.vocabSize;
  const hd = c.headDim;
  const kv = c.numKvHeads * hd;
  const get = (name: string, shape: number[]): Float32Array => {
    if (!src.has(name)) throw new Llama2cFormatError(where, `no tensor "${name}"`);
    const t = src.get(name);
    if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
      throw new Llama2cFormatError(where, `tensor "${name}" has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    return f32Of(t);
  };
  // A tied head may be stored under either name.
  const embName = src.has('model.embed_tokens.weight') || !c.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  const header: Llama2cHeader = {
    version: 0,
    dim: D,
    hiddenDim: c.intermediateSize,
    nLayers: c.numLayers,
    nHeads: c.numHeads,
    nKvHeads: c.numKvHeads,
    vocabSize: V,
    seqLen: c.maxPositionEmbeddings,
    sharedClassifier: c.tieWordEmbeddings,
    groupSize: null,
  };
  const layers: Llama2cLayer[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}`;
    layers.push({
      rmsAtt: get(`${p}.input_layernorm.weight`, [D]),
      wq: permuteRopeRows(get(`${p}.self_attn.q_proj.weight`, [D, D]), c.numHeads, hd, D, false),
      wk: permuteRopeRows(get(`${p}.self_attn.k_proj.weight`, [kv, D]), c.numKvHeads, hd, D, false),
      wv: get(`${p}.self_attn.v_proj.weight`, [kv, D]),
      wo: get(`${p}.self_attn.o_proj.weight`, [D, D]),
      rmsFfn: get(`${p}.post_attention_layernorm.weight`, [D]),
      w1: get(`${p}.mlp.gate_proj.weight`, [c.intermediateSize, D]),
      w2: get(`${p}.mlp.down_proj.weight`, [D, c.intermediateSize]),
      w3: get(`${p}.mlp.up_proj.weight`, [c.intermediateSize, D]),
    });
  }
  const checkpoint: Llama2cCheckpoint = {
    header,
    tokenEmbedding: get(embName, [V, D]),
    layers,
    rmsFinal: get('model.norm.weight', [D]),
    wcls: c.tieWordEmbeddings ? null : get('lm_head.weight', [V, D]),
  };
  return { checkpoint, warnings };
}

/** realpath when the file exists (symlinks seen through), else the resolved path. */
function realOrSelf(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return resolve(p);
  }
}

export interface ExportLlama2cOptions {
  /** 0 (legacy, default; what run.c of every llama2.c fork reads) or 1. */
  version?: 0 | 1;
  overwrite?: boolean;
}

/** Writes an HF llama folder as a llama2.c checkpoint. Returns the header written and any warnings. */
export function exportLlama2c(hfFolder: string, outBin: string, opts: ExportLlama2cOptions = {}): { header: Llama2cHeader; warnings: string[] } {
  const config = readLlamaConfig(hfFolder);
  const src = openCheckpoint(hfFolder);
  try {
    const { checkpoint, warnings } = hfToLlama2c(config, src, hfFolder);
    const version = opts.version ?? 0;
    const inputs = [join(hfFolder, 'config.json'), ...src.shardPaths(), ...(existsSync(join(hfFolder, INDEX_FILE)) ? [join(hfFolder, INDEX_FILE)] : [])];
    const target = realOrSelf(outBin);
    const clash = inputs.find((p) => realOrSelf(p) === target);
    if (clash) throw new Llama2cFormatError(resolve(outBin), `output is an input of the export (${clash}); choose another output file`);
    writeLlama2c(outBin, checkpoint, { version, overwrite: opts.overwrite ?? false });
    return { header: { ...checkpoint.header, version }, warnings };
  } finally {
    src.close();
  }
}
