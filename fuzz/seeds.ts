// Seed corpus per format: small valid files written by the project's own writers (every dtype,
// shape style and metadata type they support) plus the real asset files when present.
// Real checkpoints bigger than a few MB keep only their header in memory; the rest of the file
// becomes a sparse zero tail (see FileImage).
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCheckpoint, writeCheckpoint } from '../src/io/checkpoint.js';
import { exportLlamaGguf } from '../src/export/gguf-llama.js';
import { exportMixtralGguf } from '../src/export/gguf-mixtral.js';
import { readConfig } from '../src/arch/registry.js';
import { writeGguf, type GgufMetadataEntry, type GgufTensorInput } from '../src/io/gguf.js';
import { encodeLlama2c, type Llama2cCheckpoint, type Llama2cHeader } from '../src/io/llama2c.js';
import { encodeHeader, writeSafetensors, type NamedTensor, type SafetensorsDType } from '../src/io/safetensors.js';
import type { Tensor, WeightSource } from '../src/tensor.js';
import { encodeLlama2cTokenizerBin, TokenKind, vocabFromSentencePiece, type Llama2cVocab } from '../src/tokenizer/llama2c-tokenizer.js';
import { readSentencePieceModel } from '../src/tokenizer/sentencepiece-model.js';
import { assetPath } from '../test/helpers/assets.js';
import { randomLlama } from '../test/helpers/random-llama.js';
import { Rng, type FileImage } from './mutate.js';
import type { Seed, SeedSet } from './types.js';

/** Files above this size keep only their header in memory (the rest is a sparse zero tail). */
const FULL_COPY_LIMIT = 4 * 1024 * 1024;

function img(bytes: Uint8Array): FileImage {
  return { bytes, tail: 0 };
}

function fileImage(path: string): FileImage {
  return img(new Uint8Array(readFileSync(path)));
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** A safetensors asset: whole when small, else header bytes plus a zero tail of the data size. */
function safetensorsAsset(path: string): FileImage {
  const size = statSync(path).size;
  if (size <= FULL_COPY_LIMIT) return fileImage(path);
  const all = readFileSync(path);
  const n = Number(all.readBigUInt64LE(0));
  return { bytes: new Uint8Array(all.subarray(0, 8 + n)), tail: size - 8 - n };
}

function randomTensor(rng: Rng, dtype: 'f32' | 'f16' | 'bf16', shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (dtype === 'f32') return { dtype, shape, data: Float32Array.from({ length: n }, () => rng.float() * 2 - 1) };
  // f16/bf16 bit patterns of finite values in a sane range (exponent bits kept moderate).
  return { dtype, shape, data: Uint16Array.from({ length: n }, () => (rng.int(2) << 15) | ((dtype === 'f16' ? 12 : 120) << (dtype === 'f16' ? 10 : 7)) | rng.int(dtype === 'f16' ? 1024 : 128)) };
}

// ---------------------------------------------------------------------------------------------

function safetensorsSeeds(dir: string, rng: Rng): Seed[] {
  const seeds: Seed[] = [];
  const write = (name: string, tensors: NamedTensor[], metadata: Record<string, string> = {}) => {
    const p = join(dir, `${name}.safetensors`);
    writeSafetensors(p, tensors, metadata);
    seeds.push({ name: `st:${name}`, weight: 4, files: { 'model.safetensors': fileImage(p) } });
  };
  write('mixed', [
    { name: 'a.weight', tensor: randomTensor(rng, 'f32', [4, 8]) },
    { name: 'b.weight', tensor: randomTensor(rng, 'f16', [3, 5]) },
    { name: 'c.weight', tensor: randomTensor(rng, 'bf16', [7]) },
    { name: 'd.scalar', tensor: randomTensor(rng, 'f32', []) },
    { name: 'e.empty', tensor: randomTensor(rng, 'f32', [0, 4]) },
  ], { note: 'fuzz seed' });
  write('single', [{ name: 'w', tensor: randomTensor(rng, 'f32', [16, 16]) }]);
  write('nd', [{ name: 'x', tensor: randomTensor(rng, 'bf16', [2, 3, 4, 5]) }, { name: 'y', tensor: randomTensor(rng, 'f16', [1, 1, 1]) }]);
  // Non-float dtypes through the header encoder (the writer itself only takes float tensors).
  const items: { name: string; dtype: SafetensorsDType; shape: number[]; byteLength: number }[] = [
    { name: 'i8', dtype: 'I8', shape: [5], byteLength: 5 },
    { name: 'i64', dtype: 'I64', shape: [2, 2], byteLength: 32 },
    { name: 'bool', dtype: 'BOOL', shape: [3], byteLength: 3 },
    { name: 'f64', dtype: 'F64', shape: [1], byteLength: 8 },
    { name: 'u16', dtype: 'U16', shape: [3], byteLength: 6 },
    { name: 'f8', dtype: 'F8_E4M3', shape: [4], byteLength: 4 },
  ];
  const header = encodeHeader(items, { format: 'pt' });
  const data = new Uint8Array(items.reduce((s, it) => s + it.byteLength, 0)).map(() => rng.int(256));
  seeds.push({ name: 'st:int-dtypes', weight: 3, files: { 'model.safetensors': img(concat([header, data])) } });
  // A synthetic model with Llama tensor names.
  const m = randomLlama({ hidden: 16, heads: 4, kvHeads: 2, inter: 24, vocab: 32, layers: 1, seed: 7, dtype: 'bf16' });
  write('tiny-llama', m.src.names().map((n) => ({ name: n, tensor: m.src.get(n) })));
  for (const rel of ['models/TinyStories-656K/model.safetensors', 'models/TinyStories-656K-bf16/model.safetensors', 'models/kjv-gqa/model.safetensors', 'models/kjv-mha/model.safetensors']) {
    const p = assetPath(rel);
    if (p === null) continue;
    const image = safetensorsAsset(p);
    seeds.push({ name: `asset:${rel}`, weight: image.tail > 0 ? 0.25 : 0.5, files: { 'model.safetensors': image } });
  }
  return seeds;
}

async function indexSeeds(dir: string): Promise<Seed[]> {
  const seeds: Seed[] = [];
  const specs = [
    { name: 'two-shards', model: randomLlama({ hidden: 16, heads: 4, kvHeads: 2, inter: 24, vocab: 32, layers: 1, seed: 3 }), maxShardBytes: 3000 },
    { name: 'many-shards', model: randomLlama({ hidden: 8, heads: 2, kvHeads: 1, inter: 16, vocab: 16, layers: 2, seed: 4, dtype: 'bf16', tied: true }), maxShardBytes: 300 },
  ];
  for (const s of specs) {
    const out = join(dir, `index-${s.name}`);
    mkdirSync(out);
    await writeCheckpoint(out, s.model.src.names().map((n) => ({ name: n, tensor: s.model.src.get(n) })), { maxShardBytes: s.maxShardBytes });
    const files: Record<string, FileImage> = {};
    const shards: Record<string, string[]> = {};
    for (const f of readdirSync(out)) files[f] = fileImage(join(out, f));
    const ck = openCheckpoint(out);
    try {
      for (const n of ck.names()) (shards[ck.info(n).file] ??= []).push(n);
    } finally {
      ck.close();
    }
    if (!('model.safetensors.index.json' in files)) throw new Error(`fuzz seed ${s.name}: expected a sharded checkpoint`);
    seeds.push({ name: `ix:${s.name}`, weight: 1, files, shards });
  }
  return seeds;
}

function configSeeds(): Seed[] {
  const seeds: Seed[] = [];
  const add = (name: string, json: unknown) => seeds.push({ name: `cfg:${name}`, weight: 1, files: { 'config.json': img(new TextEncoder().encode(JSON.stringify(json, null, 2))) } });
  add('llama', randomLlama({ hidden: 16, heads: 4, kvHeads: 2, inter: 24, vocab: 32, layers: 1 }).json);
  add('qwen2', randomLlama({ hidden: 16, heads: 4, kvHeads: 4, inter: 24, vocab: 32, layers: 1, modelType: 'qwen2', tied: true }).json);
  add('mistral', randomLlama({ hidden: 16, heads: 4, kvHeads: 1, inter: 24, vocab: 32, layers: 1, modelType: 'mistral' }).json);
  const l3 = randomLlama({ hidden: 16, heads: 2, kvHeads: 1, headDim: 16, inter: 24, vocab: 32, layers: 1, attentionBias: true, ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } }).json;
  add('llama3-rope', l3);
  const { rope_theta: theta, rope_scaling: scaling, ...rest } = l3;
  add('rope-parameters', { ...rest, rope_parameters: { ...(scaling as object), rope_theta: theta }, eos_token_id: [2, 3], dtype: 'bfloat16' });
  const models = assetPath('models');
  if (models !== null) {
    for (const m of readdirSync(models).sort()) {
      const p = join(models, m, 'config.json');
      if (existsSync(p)) seeds.push({ name: `asset:${m}/config.json`, weight: 1, files: { 'config.json': fileImage(p) } });
    }
  }
  return seeds;
}

function ggufSeeds(dir: string, rng: Rng): Seed[] {
  const seeds: Seed[] = [];
  const write = (name: string, metadata: GgufMetadataEntry[], tensors: GgufTensorInput[], weight = 3) => {
    const p = join(dir, `${name}.gguf`);
    writeGguf(p, { metadata, tensors });
    seeds.push({ name: `gguf:${name}`, weight, files: { 'model.gguf': fileImage(p) } });
  };
  const allTypes: GgufMetadataEntry[] = [
    { key: 'general.architecture', type: 'string', value: 'llama' },
    { key: 't.u8', type: 'u8', value: 200 },
    { key: 't.i8', type: 'i8', value: -5 },
    { key: 't.u16', type: 'u16', value: 60000 },
    { key: 't.i16', type: 'i16', value: -30000 },
    { key: 't.u32', type: 'u32', value: 4000000000 },
    { key: 't.i32', type: 'i32', value: -2000000000 },
    { key: 't.f32', type: 'f32', value: 0.5 },
    { key: 't.f64', type: 'f64', value: 1e-300 },
    { key: 't.u64', type: 'u64', value: 2n ** 60n },
    { key: 't.i64', type: 'i64', value: -(2n ** 60n) },
    { key: 't.bool', type: 'bool', value: true },
    { key: 't.str', type: 'string', value: 'héllo ▁wörld' },
    { key: 't.astr', type: 'array', itemType: 'string', value: ['a', '', 'ü', '<0x0A>'] },
    { key: 't.af32', type: 'array', itemType: 'f32', value: [1, -2, 0.25] },
    { key: 't.ai32', type: 'array', itemType: 'i32', value: [1, 2, 3] },
    { key: 't.abool', type: 'array', itemType: 'bool', value: [true, false] },
    { key: 't.au64', type: 'array', itemType: 'u64', value: [1n, 2n] },
    { key: 't.nest', type: 'array', itemType: 'array', value: [{ type: 'array', itemType: 'u8', value: [1, 2] }, { type: 'array', itemType: 'array', value: [{ type: 'array', itemType: 'string', value: ['x'] }] }] },
  ];
  // Tensor names of equal length so the mutator can copy one over another (duplicate names).
  write('all-types', allTypes, [
    { name: 'tensor.a', tensor: randomTensor(rng, 'f32', [4, 8]) },
    { name: 'tensor.b', tensor: randomTensor(rng, 'f16', [3, 5]) },
    { name: 'tensor.c', tensor: randomTensor(rng, 'bf16', [2, 3, 2, 2]) },
  ]);
  write('align1', [{ key: 'general.alignment', type: 'u32', value: 1 }], [
    { name: 'odd.a', tensor: randomTensor(rng, 'f16', [3]) },
    { name: 'odd.b', tensor: randomTensor(rng, 'f32', [1, 5]) },
  ]);
  write('align64', [{ key: 'general.alignment', type: 'u32', value: 64 }, { key: 'x', type: 'string', value: '' }], [
    { name: 'w0', tensor: randomTensor(rng, 'f32', [0, 4]) },
    { name: 'w1', tensor: randomTensor(rng, 'bf16', [9]) },
  ]);
  write('metadata-only', [{ key: 'general.name', type: 'string', value: 'no tensors' }, { key: 'a.b', type: 'array', itemType: 'f64', value: [] }], []);
  const vocab = assetPath('tokenizers/ggml-vocab-llama-spm.gguf');
  if (vocab !== null) seeds.push({ name: 'asset:ggml-vocab-llama-spm.gguf', weight: 0.5, files: { 'model.gguf': fileImage(vocab) } });
  // A real llama model exported by the project (llama.cpp layout and tokenizer metadata).
  const ts = assetPath('models/TinyStories-656K');
  if (ts !== null) {
    const p = join(dir, 'tinystories.gguf');
    const src = openCheckpoint(ts);
    try {
      exportLlamaGguf(p, readConfig(ts), src, ts);
    } finally {
      src.close();
    }
    seeds.push({ name: 'export:TinyStories-656K.gguf', weight: 0.5, files: { 'model.gguf': fileImage(p) } });
    // The same model as a 2-expert Mixtral (both experts its MLP, a random router): stacked expert
    // tensors, read back one slab at a time.
    const mx = join(dir, 'tinystories-mixtral.gguf');
    const ck = openCheckpoint(ts);
    try {
      const c = readConfig(ts);
      const router = randomTensor(rng, 'f32', [2, c.hiddenSize]);
      const hf = (n: string): string => n.replace(/block_sparse_moe\.experts\.\d\.w([123])/, (_, w: string) => `mlp.${({ 1: 'gate', 2: 'down', 3: 'up' } as Record<string, string>)[w]}_proj`);
      const src: WeightSource = { names: () => ck.names(), has: (n) => n.endsWith('block_sparse_moe.gate.weight') || ck.has(hf(n)), get: (n) => (n.endsWith('block_sparse_moe.gate.weight') ? router : ck.get(hf(n))) };
      exportMixtralGguf(mx, { ...c, family: 'mixtral', modelType: 'mixtral', moe: { numExperts: 2, topK: 1, routerJitterNoise: 0 } }, src, ts);
    } finally {
      ck.close();
    }
    seeds.push({ name: 'export:TinyStories-656K-mixtral.gguf', weight: 0.5, files: { 'model.gguf': fileImage(mx) } });
  }
  return seeds;
}

function llama2cSeeds(rng: Rng): Seed[] {
  const seeds: Seed[] = [];
  const make = (shared: boolean): Llama2cCheckpoint => {
    const header: Llama2cHeader = { version: 0, dim: 16, hiddenDim: 24, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 32, seqLen: 8, sharedClassifier: shared, groupSize: null };
    const f = (n: number) => Float32Array.from({ length: n }, () => rng.float() * 2 - 1);
    const kv = 2 * 4;
    return {
      header,
      tokenEmbedding: f(32 * 16),
      layers: Array.from({ length: 2 }, () => ({ rmsAtt: f(16), wq: f(256), wk: f(kv * 16), wv: f(kv * 16), wo: f(256), rmsFfn: f(16), w1: f(24 * 16), w2: f(24 * 16), w3: f(24 * 16) })),
      rmsFinal: f(16),
      wcls: shared ? null : f(32 * 16),
    };
  };
  for (const shared of [true, false]) {
    for (const version of [0, 1] as const) {
      const parts = encodeLlama2c(make(shared), version);
      seeds.push({ name: `l2c:v${version}-${shared ? 'shared' : 'unshared'}`, weight: 3, files: { 'model.bin': img(concat(parts)) } });
    }
  }
  seeds.push({ name: 'l2c:v2-q80', weight: 3, files: { 'model.bin': img(llama2cV2(rng)) } });
  for (const rel of ['models/stories260K/stories260K.bin', 'models/babyllama-tok105/model5000.bin']) {
    const p = assetPath(rel);
    if (p !== null) seeds.push({ name: `asset:${rel}`, weight: 0.5, files: { 'model.bin': fileImage(p) } });
  }
  return seeds;
}

/**
 * A version-2 (Q8_0) llama2.c file, built from the documented layout since the project only
 * reads v2: v1-style 256-byte header with group_size at byte 37, f32 norms, then each matrix as
 * int8 values followed by one f32 scale per group.
 */
function llama2cV2(rng: Rng): Uint8Array {
  const dim = 16, hidden = 32, layers = 1, heads = 4, kvHeads = 4, vocab = 32, seq = 8, group = 16;
  const header = new Uint8Array(256);
  const dv = new DataView(header.buffer);
  dv.setUint32(0, 0x616b3432, true);
  dv.setInt32(4, 2, true);
  [dim, hidden, layers, heads, kvHeads, vocab, seq].forEach((v, i) => dv.setInt32(8 + 4 * i, v, true));
  header[36] = 1;
  dv.setInt32(37, group, true);
  const f32 = (n: number) => new Uint8Array(Float32Array.from({ length: n }, () => 1 + rng.float()).buffer);
  const q80 = (n: number) => concat([new Uint8Array(Int8Array.from({ length: n }, () => rng.int(255) - 127).buffer), new Uint8Array(Float32Array.from({ length: n / group }, () => rng.float() / 64).buffer)]);
  const kv = kvHeads * (dim / heads);
  const parts = [header, f32(layers * dim), f32(layers * dim), f32(dim), q80(vocab * dim)];
  for (const n of [dim * dim, kv * dim, kv * dim, dim * dim, hidden * dim, dim * hidden, hidden * dim]) for (let l = 0; l < layers; l++) parts.push(q80(n));
  return concat(parts);
}

function tokenizerSeeds(): Seed[] {
  const seeds: Seed[] = [];
  const add = (name: string, bytes: Uint8Array, weight: number) => seeds.push({ name: `tok:${name}`, weight, files: { 'tokenizer.bin': img(bytes) } });
  const texts = ['<unk>', '\n<s>\n', '\n</s>\n', ...Array.from({ length: 256 }, (_, i) => `<0x${i.toString(16).toUpperCase().padStart(2, '0')}>`), ' ', 'a', 'b', 'c', 'ab', ' a', ' ab', 'ü', ' the', 'e', 'h', 't', 'th', ' t', 'he'];
  const tiny: Llama2cVocab = {
    texts,
    scores: Float32Array.from(texts, (_, i) => -i),
    kinds: Uint8Array.from(texts, () => TokenKind.Normal),
    maxTokenLength: 0,
  };
  add('tiny-bytes', encodeLlama2cTokenizerBin(tiny), 3);
  const noBytes = texts.filter((t) => !t.startsWith('<0x'));
  add('tiny-nobytes', encodeLlama2cTokenizerBin({ texts: noBytes, scores: Float32Array.from(noBytes, (_, i) => -i), kinds: new Uint8Array(noBytes.length), maxTokenLength: 0 }), 3);
  const sp = assetPath('models/babyllama-tok105/tok105.model');
  if (sp !== null) add('tok105-from-model', encodeLlama2cTokenizerBin(vocabFromSentencePiece(readSentencePieceModel(sp), sp)), 2);
  const t512 = assetPath('models/stories260K/tok512.bin');
  if (t512 !== null) add('asset:tok512.bin', new Uint8Array(readFileSync(t512)), 2);
  const l2 = assetPath('tokenizers/llama2-tokenizer.bin');
  if (l2 !== null) add('asset:llama2-tokenizer.bin', new Uint8Array(readFileSync(l2)), 0.3);
  return seeds;
}

/** Builds every target's seeds (deterministic for a given set of assets). */
export async function buildSeeds(): Promise<SeedSet> {
  const dir = mkdtempSync(join(tmpdir(), 'transmla-fuzz-seeds-'));
  try {
    const rng = new Rng(0x5eed);
    return {
      safetensors: safetensorsSeeds(dir, rng),
      index: await indexSeeds(dir),
      config: configSeeds(),
      gguf: ggufSeeds(dir, rng),
      llama2c: llama2cSeeds(rng),
      'llama2c-tok': tokenizerSeeds(),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
