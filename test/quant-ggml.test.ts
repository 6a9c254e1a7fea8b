// Our Q8_0/Q4_0 code against llama.cpp's own (the libraries node-llama-cpp ships, driven by
// test/helpers/ggml-quant.c): block-for-block identity with quantize_row_*_ref and
// dequantize_row_*, a GGUF quantized by llama_model_quantize read back as blocks equal to ours,
// and a Q8_0/Q4_0 GGUF written by our writer that llama.cpp runs exactly as its own file.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportLlamaGguf } from '../src/export/gguf-llama.js';
import { readGguf, writeGguf, type GgufMetadataEntry, type GgufTensorInput } from '../src/io/gguf.js';
import { tsKernels } from '../src/kernels/ts.js';
import type { Kernels, QuantDType } from '../src/kernels/types.js';
import { tensorBytes } from '../src/tensor.js';
import { assetPath } from './helpers/assets.js';
import { useGgmlRef } from './helpers/ggml-ref.js';
import { useLlamaCpp } from './helpers/llamacpp.js';
import { mulberry32, randomLlama } from './helpers/random-llama.js';

const { loadNativeKernels } = await import('../src/kernels/native.js');
const native = loadNativeKernels().kernels ?? null;
const backends: Kernels[] = native ? [tsKernels, native] : [tsKernels];
if (!native && process.env.TRANSMLA_REQUIRE_NATIVE === '1') throw new Error('TRANSMLA_REQUIRE_NATIVE=1 but the native kernels did not load');

const ggml = useGgmlRef();
const cpp = useLlamaCpp();
const tmp = mkdtempSync(join(tmpdir(), 'transmla-quant-ggml-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function quantize(k: Kernels, x: Float32Array, t: QuantDType): Uint8Array {
  const out = new Uint8Array(tensorBytes(t, x.length));
  k.fromF32(x, t, out);
  return out;
}

const f32 = new Float32Array(1), i32 = new Int32Array(f32.buffer);
function ulpStep(x: number, k: number): number {
  f32[0] = x;
  i32[0] += x >= 0 ? k : -k;
  return f32[0];
}

/**
 * A block whose elements x put the exact x·id just beside a half-integer t while the f32-rounded
 * x·id is t itself: roundf then rounds t away from zero (ggml's q8_0 rounds the f32 product, not
 * the exact one), and q4_0's (x·id) + 8.5 is an integer only when the two operations are rounded
 * separately (for t < 0 and x·id below t, a fused multiply-add truncates to the integer below).
 */
function nearTieBlock(t: QuantDType, amax: number, r: () => number): Float32Array {
  const b = new Float32Array(32);
  b[0] = amax; // the largest magnitude: it fixes d (and for q4_0 its sign)
  const d = t === 'q8_0' ? Math.fround(amax / 127) : Math.fround(amax / -8);
  const id = Math.fround(1 / d);
  const half = t === 'q8_0' ? 127 : 8;
  for (let j = 1; j < 32; j++) {
    for (let tries = 0; tries < 64; tries++) {
      const tgt = Math.floor(r() * (2 * half - 1)) - (half - 1) + (r() < 0.5 ? 0.5 : -0.5);
      const x0 = Math.fround(tgt / id);
      let found = NaN;
      for (let k = -6; k <= 6 && Number.isNaN(found); k++) {
        const x = ulpStep(x0, k);
        const exact = x * id; // exact in float64 (24 × 24 bits)
        if (Math.abs(x) < amax && exact !== tgt && Math.fround(exact) === tgt && (k === 0 || r() < 0.5)) found = x;
      }
      if (!Number.isNaN(found)) {
        b[j] = found;
        break;
      }
    }
  }
  return b;
}

/** Rows that exercise the rounding rules: uniform values, exact ties of the grid, near-ties, outliers, tiny and huge scales, zeros. */
function hardRows(t: QuantDType, n: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  const x = new Float32Array(n);
  for (let b = 0; b < n / 32; b++) {
    const kind = b % 7;
    const amax = 2 ** (Math.floor(r() * 44) - 26) * (1 + Math.floor(r() * 16) / 16);
    if (kind === 6) {
      x.set(nearTieBlock(t, amax, r), b * 32);
      continue;
    }
    for (let j = 0; j < 32; j++) {
      const i = b * 32 + j;
      if (kind === 0) x[i] = (r() * 2 - 1) * amax;
      else if (kind === 1) x[i] = ((Math.floor(r() * 255) - 127 + 0.5) / 127) * amax; // q8_0 grid ties
      else if (kind === 2) x[i] = ((Math.floor(r() * 16) - 8 + 0.5) / 8) * amax; // q4_0 grid ties
      else if (kind === 3) x[i] = j % 7 === 0 ? (r() < 0.5 ? -1 : 1) * 300 * amax : (r() * 2 - 1) * amax;
      else if (kind === 4) x[i] = j < 3 ? (j === 1 ? -amax : amax) : 0; // ±max ties for q4_0's sign
      else x[i] = 0;
    }
  }
  return x;
}

describe('Q8_0/Q4_0 vs llama.cpp\'s quantize_row_*_ref and dequantize_row_*', () => {
  for (const t of ['q8_0', 'q4_0'] as const) {
    test(`${t}: identical blocks and values on ${backends.map((k) => k.backend).join(' and ')}`, (c) => {
      if (ggml.unavailable()) return c.skip(ggml.unavailable() as string);
      const x = hardRows(t, 32 * 7000, t === 'q8_0' ? 1 : 2);
      const ref = ggml.quantize(t, x);
      for (const k of backends) {
        const ours = quantize(k, x, t);
        let first = -1;
        for (let i = 0; i < ref.length && first < 0; i++) if (ours[i] !== ref[i]) first = i;
        assert.equal(first, -1, `${k.backend}: first differing byte ${first} (block ${Math.floor(first / (t === 'q8_0' ? 34 : 18))})`);
        const deq = new Float32Array(x.length);
        k.toF32(ref, t, deq);
        assert.ok(Buffer.from(deq.buffer).equals(Buffer.from(ggml.dequantize(t, ref).buffer)), `${k.backend}: dequantized values differ`);
      }
    });
  }
});

describe('GGUF files quantized by llama.cpp and by us', () => {
  const vocabDir = assetPath('models/TinyStories-656K');
  // ffn_down rows have 160 elements: 5 blocks, not a multiple of 256.
  const model = randomLlama({ hidden: 64, heads: 4, kvHeads: 2, inter: 160, vocab: 2048, layers: 2, seed: 9 });
  const f32Path = join(tmp, 'model-f32.gguf');

  for (const t of ['q8_0', 'q4_0'] as const) {
    test(`${t}: llama_model_quantize's tensors are our quantization of the F32 ones, read back as blocks`, { skip: vocabDir ? false : 'asset models/TinyStories-656K missing' }, (c) => {
      if (ggml.unavailable()) return c.skip(ggml.unavailable() as string);
      exportLlamaGguf(f32Path, model.config, model.src, vocabDir!, { outType: 'f32' });
      const theirs = join(tmp, `llamacpp-${t}.gguf`);
      ggml.quantizeModel(t, f32Path, theirs);
      const src = readGguf(f32Path), q = readGguf(theirs);
      let quantized = 0;
      for (const info of q.tensors) {
        const w = q.readWeight(info.name);
        const f = src.readTensor(info.name);
        assert.deepEqual(w.shape, f.shape, info.name);
        if (w.dtype === 'f32') {
          assert.ok(Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength).equals(Buffer.from(f.data.buffer, f.data.byteOffset, f.data.byteLength)), info.name);
          continue;
        }
        assert.equal(w.dtype, t, `${info.name} is ${w.dtype}`);
        assert.ok(w.data instanceof Uint8Array);
        for (const k of backends) {
          assert.ok(Buffer.from(quantize(k, f.data as Float32Array, t)).equals(Buffer.from(w.data)), `${k.backend}: ${info.name} differs`);
        }
        quantized++;
      }
      assert.equal(quantized, 2 + 7 * 2, 'token_embd, output and 7 matrices per layer are quantized');
    });

    test(`${t}: llama.cpp runs the GGUF our writer made exactly as its own`, { skip: vocabDir ? false : 'asset models/TinyStories-656K missing' }, async (c) => {
      if (ggml.unavailable()) return c.skip(ggml.unavailable() as string);
      if (cpp.unavailable()) return c.skip(cpp.unavailable() as string);
      exportLlamaGguf(f32Path, model.config, model.src, vocabDir!, { outType: 'f32' });
      const theirs = join(tmp, `llamacpp-run-${t}.gguf`), ours = join(tmp, `ours-${t}.gguf`);
      ggml.quantizeModel(t, f32Path, theirs);
      const src = readGguf(f32Path);
      const metadata: GgufMetadataEntry[] = [...src.metadata].map(([key, v]) => (key === 'general.file_type' ? { key, type: 'u32', value: t === 'q8_0' ? 7 : 2 } : { key, ...v }));
      const tensors: GgufTensorInput[] = src.tensors.map((info) => {
        const f = src.readTensor(info.name);
        if (f.shape.length < 2) return { name: info.name, tensor: f };
        return { name: info.name, tensor: { dtype: t, shape: f.shape, data: quantize(native ?? tsKernels, f.data as Float32Array, t) } };
      });
      writeGguf(ours, { metadata, tensors });
      const ids = Array.from({ length: 24 }, (_, i) => (i * 37 + 5) % 2048);
      const a = await cpp.logProbs(theirs, ids, 2048), b = await cpp.logProbs(ours, ids, 2048);
      let worst = 0;
      for (let i = 0; i < ids.length; i++) for (let v = 0; v < 2048; v++) worst = Math.max(worst, Math.abs(a[i]![v]! - b[i]![v]!));
      c.diagnostic(`max |Δ log-prob| between llama.cpp on its ${t} file and on ours: ${worst}`);
      assert.equal(worst, 0);
    });
  }
});
