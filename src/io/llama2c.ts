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
import { closeSync, existsSync, fstatSync, openSync, readSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { Tensor } from '../tensor.js';
import { permuteRopeRows } from './rope-rows.js';
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

function openLlama2c(path: string): number {
  try {
    return openSync(path, 'r');
  } catch (e) {
    throw new Llama2cFormatError(path, `cannot open: ${(e as Error).message}`);
  }
}

function headerOf(fd: number, path: string): Llama2cHeader {
  const st = fstatSync(fd);
  // A folder opens fine on Linux but fails on read with a bare EISDIR.
  if (!st.isFile()) throw new Llama2cFormatError(path, 'not a regular file');
  const head = new Uint8Array(V1_HEADER_BYTES);
  readSync(fd, head, 0, Math.min(V1_HEADER_BYTES, st.size), 0);
  return parseLlama2cHeader(head, st.size, path);
}

/** The header of a llama2.c checkpoint (validated against the file size); no weight is read. */
export function readLlama2cHeader(path: string): Llama2cHeader {
  const fd = openLlama2c(path);
  try {
    return headerOf(fd, path);
  } finally {
    closeSync(fd);
  }
}

/** Reads a llama2.c checkpoint (v0, v1 or v2) into memory. */
export function readLlama2c(path: string): Llama2cCheckpoint {
  const fd = openLlama2c(path);
  try {
    const h = headerOf(fd, path);
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
      { name: `${p}.self_attn.q_proj.weight`, tensor: t([h.dim, h.dim], permuteRopeRows(l.wq, { blocks: h.nHeads, dim: hd }, 'half')) },
      { name: `${p}.self_attn.k_proj.weight`, tensor: t([kvDim, h.dim], permuteRopeRows(l.wk, { blocks: h.nKvHeads, dim: hd }, 'half')) },
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
  return { config: llama2cHfConfig(h, special), tensors };
}

/** The HF config.json of a llama2.c checkpoint with this header. */
export function llama2cHfConfig(h: Llama2cHeader, special: { bosId: number | null; eosId: number | null }): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: h.dim,
    intermediate_size: h.hiddenDim,
    num_hidden_layers: h.nLayers,
    num_attention_heads: h.nHeads,
    num_key_value_heads: h.nKvHeads,
    head_dim: headDimOf(h),
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
}

