// llama2.c checkpoints: import to Hugging Face folders, HF → .bin → HF round trips,
// the v0/v1/v2 readers and writer, and clear errors for damaged files.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { assetPath } from './helpers/assets.js';
import { openCheckpoint, writeCheckpoint } from '../src/io/checkpoint.js';
import { readConfig } from '../src/arch/registry.js';
import { encodeLlama2c, expectedFileBytes, LLAMA2C_MAGIC, Llama2cFormatError, readLlama2c, writeLlama2c, type Llama2cCheckpoint, type Llama2cHeader } from '../src/io/llama2c.js';
import { exportLlama2c, importLlama2c } from '../src/export/llama2c.js';
import { permuteRopeRows } from '../src/io/rope-rows.js';
import { kernels } from '../src/kernels/index.js';
import type { Tensor } from '../src/tensor.js';
import { Llama2cTokenizer } from '../src/tokenizer/llama2c-tokenizer.js';
import { loadTokenizer } from '../src/tokenizer/tokenizer.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-l2c-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let serial = 0;
const fresh = (name: string) => join(tmp, `${name}-${serial++}`);

function f32(t: Tensor): Float32Array {
  if (t.dtype === 'f32') return t.data as Float32Array;
  const out = new Float32Array(t.data.length);
  kernels().toF32(t.data as Uint16Array, t.dtype, out);
  return out;
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Deterministic pseudo-random floats in [-scale, scale). */
function randomArray(n: number, seed: number, scale = 0.1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

function randomCheckpoint(h: Omit<Llama2cHeader, 'version' | 'groupSize'>, seed = 1): Llama2cCheckpoint {
  const hd = h.dim / h.nHeads;
  const kv = h.nKvHeads * hd;
  let k = seed;
  const r = (n: number) => randomArray(n, k++ * 7919);
  return {
    header: { ...h, version: 0, groupSize: null },
    tokenEmbedding: r(h.vocabSize * h.dim),
    layers: Array.from({ length: h.nLayers }, () => ({
      rmsAtt: r(h.dim),
      wq: r(h.dim * h.dim),
      wk: r(kv * h.dim),
      wv: r(kv * h.dim),
      wo: r(h.dim * h.dim),
      rmsFfn: r(h.dim),
      w1: r(h.hiddenDim * h.dim),
      w2: r(h.dim * h.hiddenDim),
      w3: r(h.hiddenDim * h.dim),
    })),
    rmsFinal: r(h.dim),
    wcls: h.sharedClassifier ? null : r(h.vocabSize * h.dim),
  };
}

function concat(parts: Uint8Array[]): Buffer {
  return Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));
}

/** Every tensor of folder b equals folder a's bit for bit (after widening a's f16/bf16). */
function assertSameTensors(a: string, b: string, tied: boolean): void {
  const ca = openCheckpoint(a);
  const cb = openCheckpoint(b);
  try {
    const names = ca.names().filter((n) => !(tied && n === 'lm_head.weight' && !ca.has('model.embed_tokens.weight')));
    for (const n of names) {
      assert.ok(cb.has(n), `${b} lacks ${n}`);
      const ta = ca.get(n);
      const tb = cb.get(n);
      assert.deepEqual(tb.shape, ta.shape, n);
      assert.equal(tb.dtype, 'f32');
      assert.ok(sameBits(f32(ta), f32(tb)), `${n} differs`);
    }
    if (tied && !ca.has('model.embed_tokens.weight')) {
      // A tied head stored only as lm_head.weight comes back as the embedding.
      assert.ok(sameBits(f32(ca.get('lm_head.weight')), f32(cb.get('model.embed_tokens.weight'))));
    }
    assert.equal(cb.has('lm_head.weight'), !tied);
  } finally {
    ca.close();
    cb.close();
  }
}

const STORIES = 'models/stories260K/stories260K.bin';
const TOK512 = 'models/stories260K/tok512.bin';
const BABY = 'models/babyllama-tok105/model5000.bin';
const TOK105 = 'models/babyllama-tok105/tok105.model';

describe('importLlama2c', () => {
  test('stories260K → HF folder with the right config, tensors and tokenizer', { skip: (!assetPath(STORIES) || !assetPath(TOK512)) && 'stories260K missing' }, async () => {
    const out = fresh('stories260K');
    const res = await importLlama2c(assetPath(STORIES)!, assetPath(TOK512)!, out);
    assert.equal(res.header.version, 0);
    const raw = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(raw.model_type, 'llama');
    assert.deepEqual(raw.architectures, ['LlamaForCausalLM']);
    assert.equal(raw.torch_dtype, 'float32');
    const c = readConfig(out);
    assert.deepEqual(
      [c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize, c.maxPositionEmbeddings],
      [64, 172, 5, 8, 4, 8, 512, 512],
    );
    assert.equal(c.tieWordEmbeddings, true);
    assert.equal(c.rmsNormEps, 1e-5);
    assert.equal(c.ropeTheta, 10000);
    assert.equal(c.bosTokenId, 1);
    assert.equal(c.eosTokenId, 2);

    const ck = openCheckpoint(out);
    const bin = readLlama2c(assetPath(STORIES)!);
    try {
      assert.equal(ck.has('lm_head.weight'), false, 'tied head is not stored twice');
      assert.equal(ck.names().length, 2 + 9 * 5);
      assert.deepEqual(ck.info('model.layers.0.self_attn.q_proj.weight').shape, [64, 64]);
      assert.deepEqual(ck.info('model.layers.0.self_attn.k_proj.weight').shape, [32, 64]);
      assert.deepEqual(ck.info('model.layers.4.mlp.down_proj.weight').shape, [64, 172]);
      assert.deepEqual(ck.info('model.embed_tokens.weight').shape, [512, 64]);
      // q/k rows within each head are reordered [0,2,4,6,1,3,5,7]; everything else is verbatim.
      const q = ck.get('model.layers.3.self_attn.q_proj.weight').data as Float32Array;
      const wq = bin.layers[3]!.wq;
      const hd = 8;
      for (const [head, hfRow, binRow] of [[0, 0, 0], [0, 1, 2], [0, 3, 6], [0, 4, 1], [0, 7, 7], [5, 5, 3]] as const) {
        const a = q.subarray((head * hd + hfRow) * 64, (head * hd + hfRow + 1) * 64);
        const b = wq.subarray((head * hd + binRow) * 64, (head * hd + binRow + 1) * 64);
        assert.ok(sameBits(a, b), `head ${head} HF row ${hfRow} should be llama2.c row ${binRow}`);
      }
      const k = ck.get('model.layers.1.self_attn.k_proj.weight').data as Float32Array;
      assert.ok(sameBits(k, permuteRopeRows(bin.layers[1]!.wk, { blocks: 4, dim: 8 }, 'half')));
      assert.ok(sameBits(ck.get('model.layers.2.self_attn.v_proj.weight').data as Float32Array, bin.layers[2]!.wv));
      assert.ok(sameBits(ck.get('model.layers.2.mlp.gate_proj.weight').data as Float32Array, bin.layers[2]!.w1));
      assert.ok(sameBits(ck.get('model.norm.weight').data as Float32Array, bin.rmsFinal));
    } finally {
      ck.close();
    }

    for (const f of ['model.safetensors', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.bin']) {
      assert.ok(existsSync(join(out, f)), `${f} missing`);
    }
    assert.ok(readFileSync(join(out, 'tokenizer.bin')).equals(readFileSync(assetPath(TOK512)!)));
    const hf = loadTokenizer(out);
    assert.equal(hf.kind, 'hf');
    const own = Llama2cTokenizer.fromBinFile(join(out, 'tokenizer.bin'));
    const text = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.';
    assert.deepEqual(hf.encode(text, { addBos: true }), own.encode(text, { addBos: true }));
  });

  test('babyllama (SentencePiece .model tokenizer) → HF folder', { skip: (!assetPath(BABY) || !assetPath(TOK105)) && 'babyllama missing' }, async () => {
    const out = fresh('baby');
    await importLlama2c(assetPath(BABY)!, assetPath(TOK105)!, out);
    const c = readLlama2c(assetPath(BABY)!).header;
    const cfg = readConfig(out);
    assert.deepEqual([cfg.hiddenSize, cfg.intermediateSize, cfg.numLayers, cfg.numHeads, cfg.numKvHeads, cfg.headDim, cfg.vocabSize, cfg.maxPositionEmbeddings], [128, 352, 5, 8, 4, 16, 105, 256]);
    assert.equal(cfg.tieWordEmbeddings, c.sharedClassifier);
    assert.ok(existsSync(join(out, 'tokenizer.model')));
    const own = loadTokenizer(join(out, 'tokenizer.bin'));
    assert.equal(own.vocabSize, 105);
    const hf = loadTokenizer(out);
    const text = 'Lily and Ben went to the park. They saw a big dog!';
    assert.deepEqual(hf.encode(text, { addBos: true }), own.encode(text, { addBos: true }));
    assert.equal(hf.decode(hf.encode(text, { addBos: true })), text);
  });

  test('refuses a tokenizer of another size and a non-empty output folder', { skip: (!assetPath(STORIES) || !assetPath(TOK105)) && 'assets missing' }, async () => {
    await assert.rejects(importLlama2c(assetPath(STORIES)!, assetPath(TOK105)!, fresh('bad')), /105 tokens but .* vocab_size 512/);
    await assert.rejects(importLlama2c(assetPath(STORIES)!, assetPath(TOK105)!.replace(/\.model$/, '.vocab'), fresh('bad')), /pass the \.model file/);
    const out = fresh('exists');
    mkdirSync(out);
    writeFileSync(join(out, 'keep.txt'), 'x');
    await assert.rejects(importLlama2c(assetPath(STORIES)!, assetPath(TOK512)!, out), /not empty/);
    assert.ok(existsSync(join(out, 'keep.txt')));
    await importLlama2c(assetPath(STORIES)!, assetPath(TOK512)!, out, { overwrite: true });
    assert.ok(existsSync(join(out, 'config.json')) && !existsSync(join(out, 'keep.txt')));
  });
});

describe('HF → llama2.c → HF round trips', () => {
  for (const name of ['TinyStories-656K', 'TinyStories-656K-bf16', 'kjv-mha']) {
    test(`${name}: tensors bit-identical after export and import`, { skip: !assetPath(`models/${name}/config.json`) && `${name} missing` }, async () => {
      const src = assetPath(`models/${name}`)!;
      const bin = fresh(`${name}.bin`);
      const { header, warnings } = exportLlama2c(src, bin);
      const cfg = readConfig(src);
      assert.equal(header.sharedClassifier, cfg.tieWordEmbeddings);
      assert.equal(warnings.length > 0, cfg.rmsNormEps !== 1e-5, `warnings: ${warnings.join('; ')}`);
      if (cfg.rmsNormEps !== 1e-5) assert.match(warnings[0]!, /rms_norm_eps/);
      const out = fresh(`${name}-back`);
      await importWithOwnVocab(bin, src, out);
      assertSameTensors(src, out, cfg.tieWordEmbeddings);
      const back = readConfig(out);
      for (const k of ['hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'vocabSize', 'maxPositionEmbeddings', 'tieWordEmbeddings', 'ropeTheta'] as const) {
        assert.equal(back[k], cfg[k], k);
      }
    });
  }

  test('untied classifier (random model): negative vocab_size in v0, lm_head survives; v1 round trip', async () => {
    const ck = randomCheckpoint({ dim: 32, hiddenDim: 48, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 300, seqLen: 64, sharedClassifier: false });
    const bin = fresh('untied.bin');
    writeLlama2c(bin, ck);
    const raw = readFileSync(bin);
    assert.equal(raw.readInt32LE(20), -300);
    assert.equal(raw.length, expectedFileBytes(ck.header));
    // HF folder → .bin → HF folder, with a synthetic 300-token tokenizer.
    const tokBin = fresh('tok300.bin');
    writeFileSync(tokBin, syntheticTokenizerBin(300));
    const hf1 = fresh('untied-hf');
    await importLlama2c(bin, tokBin, hf1);
    assert.equal(readConfig(hf1).tieWordEmbeddings, false);
    const bin2 = fresh('untied2.bin');
    exportLlama2c(hf1, bin2);
    const again = readLlama2c(bin2);
    assert.ok(sameBits(again.wcls!, ck.wcls!));
    assert.ok(sameBits(again.layers[1]!.wq, ck.layers[1]!.wq), 'q rows are restored to llama2.c order');
    assert.ok(sameBits(again.layers[0]!.wk, ck.layers[0]!.wk));
    const hf2 = fresh('untied-hf2');
    await importLlama2c(bin2, tokBin, hf2);
    assertSameTensors(hf1, hf2, false);
    // v1 holds the same arrays in another order.
    const v1 = fresh('untied-v1.bin');
    writeLlama2c(v1, ck, { version: 1 });
    const r1 = readLlama2c(v1);
    assert.equal(r1.header.version, 1);
    assert.equal(readFileSync(v1).readUInt32LE(0), LLAMA2C_MAGIC);
    assert.ok(sameBits(r1.tokenEmbedding, ck.tokenEmbedding) && sameBits(r1.wcls!, ck.wcls!) && sameBits(r1.layers[1]!.w2, ck.layers[1]!.w2));
  });

  test('a v0 file is rewritten byte for byte', { skip: !assetPath(STORIES) && 'stories260K missing' }, () => {
    const src = readFileSync(assetPath(STORIES)!);
    assert.ok(concat(encodeLlama2c(readLlama2c(assetPath(STORIES)!))).equals(src));
  });

  test('v2 (Q8_0) files are read and dequantized', () => {
    const ck = randomCheckpoint({ dim: 16, hiddenDim: 32, nLayers: 1, nHeads: 2, nKvHeads: 1, vocabSize: 8, seqLen: 4, sharedClassifier: true });
    const path = fresh('q8.bin');
    const group = 8;
    writeFileSync(path, q80File(ck, group));
    const r = readLlama2c(path);
    assert.equal(r.header.version, 2);
    assert.equal(r.header.groupSize, group);
    assert.ok(sameBits(r.rmsFinal, ck.rmsFinal), 'norms stay f32');
    const maxErr = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);
    // Q8_0 error is at most half a step: max|w|/127/2 per group.
    assert.ok(maxErr(r.layers[0]!.w1, ck.layers[0]!.w1) <= 0.1 / 127 / 2 + 1e-7);
    assert.ok(maxErr(r.tokenEmbedding, ck.tokenEmbedding) <= 0.1 / 127 / 2 + 1e-7);
  });
});

describe('damaged llama2.c files give clear errors', { skip: !assetPath(STORIES) && 'stories260K missing' }, () => {
  const orig = () => readFileSync(assetPath(STORIES)!);
  const write = (name: string, buf: Uint8Array) => {
    const p = fresh(name);
    writeFileSync(p, buf);
    return p;
  };
  test('truncated', () => {
    const p = write('trunc.bin', orig().subarray(0, orig().length - 4));
    assert.throws(() => readLlama2c(p), (e: unknown) => e instanceof Llama2cFormatError && e.message.startsWith(p) && /truncated: the v0 header implies 1056540 bytes but the file has 1056536/.test(e.message));
    assert.throws(() => readLlama2c(write('tiny.bin', orig().subarray(0, 10))), /too short/);
  });
  test('oversized / wrong classifier flag', () => {
    assert.throws(() => readLlama2c(write('big.bin', Buffer.concat([orig(), Buffer.alloc(8)]))), /8 bytes beyond the 1056540/);
    const flipped = Buffer.from(orig());
    flipped.writeInt32LE(-512, 20); // claims an unshared classifier that is not there
    assert.throws(() => readLlama2c(write('flip.bin', flipped)), /truncated/);
  });
  test('garbage headers', () => {
    assert.throws(() => readLlama2c(write('text.bin', Buffer.from('this is certainly not a checkpoint, just some text'))), /implausible llama2.c header/);
    const zeros = Buffer.alloc(64);
    assert.throws(() => readLlama2c(write('zeros.bin', zeros)), /dim = 0/);
    const heads = Buffer.from(orig());
    heads.writeInt32LE(3, 16); // n_kv_heads 3 does not divide 8 heads
    assert.throws(() => readLlama2c(write('heads.bin', heads)), /n_heads is not a multiple of n_kv_heads/);
    const v9 = Buffer.alloc(300);
    v9.writeUInt32LE(LLAMA2C_MAGIC, 0);
    v9.writeInt32LE(9, 4);
    assert.throws(() => readLlama2c(write('v9.bin', v9)), /version 9 is not supported/);
    assert.throws(() => readLlama2c(fresh('missing.bin')), /cannot open/);
  });
  test('export refuses what llama2.c cannot express', { skip: !assetPath('models/kjv-mha/config.json') && 'kjv-mha missing' }, async () => {
    const dir = fresh('scaled');
    mkdirSync(dir);
    const cfg = JSON.parse(readFileSync(assetPath('models/TinyStories-656K/config.json')!, 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, rope_theta: 500000 }));
    await writeCheckpoint(dir, [{ name: 'model.norm.weight', tensor: { dtype: 'f32', shape: [128], data: new Float32Array(128) } }]);
    assert.throws(() => exportLlama2c(dir, fresh('x.bin')), /rope_theta 500000/);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    assert.throws(() => exportLlama2c(dir, fresh('x.bin')), /no tensor "model.layers.0.input_layernorm.weight"/);
  });
});

// ---------------------------------------------------------------------------------
// helpers that build files

/** A llama2.c tokenizer with n tokens: specials, the 256 byte tokens when they fit, then single CJK characters. */
function syntheticTokenizerBin(n: number): Buffer {
  const texts = ['<unk>', '\n<s>\n', '\n</s>\n'];
  for (let b = 0; b < 256 && texts.length < n; b++) texts.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  for (let i = 0; texts.length < n; i++) texts.push(String.fromCharCode(0x4e00 + i));
  const parts: Buffer[] = [Buffer.alloc(4)];
  parts[0]!.writeInt32LE(8, 0);
  texts.forEach((t, i) => {
    const b = Buffer.from(t, 'utf8');
    const h = Buffer.alloc(8);
    h.writeFloatLE(i < 259 ? 0 : -i, 0);
    h.writeInt32LE(b.length, 4);
    parts.push(h, b);
  });
  return Buffer.concat(parts);
}

/** Imports with a synthetic llama2.c tokenizer of the model's vocabulary size (the round trip concerns the tensors). */
async function importWithOwnVocab(bin: string, hfFolder: string, out: string): Promise<void> {
  const vocab = readConfig(hfFolder).vocabSize;
  const tok = fresh('tok.bin');
  writeFileSync(tok, syntheticTokenizerBin(vocab));
  await importLlama2c(bin, tok, out);
}

/** Builds a v2 (Q8_0) file the way llama2.c's export.py version2_export lays it out. */
function q80File(ck: Llama2cCheckpoint, group: number): Buffer {
  const h = ck.header;
  const header = Buffer.alloc(256);
  header.writeUInt32LE(LLAMA2C_MAGIC, 0);
  header.writeInt32LE(2, 4);
  [h.dim, h.hiddenDim, h.nLayers, h.nHeads, h.nKvHeads, h.vocabSize, h.seqLen].forEach((v, i) => header.writeInt32LE(v, 8 + 4 * i));
  header.writeUInt8(h.sharedClassifier ? 1 : 0, 36);
  header.writeInt32LE(group, 37);
  const parts: Buffer[] = [header];
  const f = (a: Float32Array) => parts.push(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  ck.layers.forEach((l) => f(l.rmsAtt));
  ck.layers.forEach((l) => f(l.rmsFfn));
  f(ck.rmsFinal);
  const mats = [ck.tokenEmbedding, ...(['wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'] as const).flatMap((k) => ck.layers.map((l) => l[k]))];
  if (ck.wcls) mats.push(ck.wcls);
  for (const w of mats) {
    const q = new Int8Array(w.length);
    const s = new Float32Array(w.length / group);
    for (let g = 0; g < s.length; g++) {
      let m = 0;
      for (let i = g * group; i < (g + 1) * group; i++) m = Math.max(m, Math.abs(w[i]!));
      s[g] = m / 127;
      for (let i = g * group; i < (g + 1) * group; i++) q[i] = s[g] === 0 ? 0 : Math.round(w[i]! / s[g]!);
    }
    parts.push(Buffer.from(q.buffer));
    f(s);
  }
  return Buffer.concat(parts);
}
