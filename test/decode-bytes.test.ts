// Decode at the roofline: what one decode step actually hands the kernels (weight bytes and cache
// bytes, counted by wrapping the native kernels) equals the bytes-per-step model the bench and
// the roofline use (decodeStepWeightBytes + context × cache bytes per token), for GQA and MLA, at
// f32/f16/bf16 caches and float/quantized weights. Also: half caches agree with f32 ones, and
// MLA's decode layout (W_UK transposed once at load) gives the decompressed form's outputs.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildModel } from '../src/arch/registry.js';
import { parseMlaConfig } from '../src/arch/deepseek.js';
import { decodeStepWeightBytes } from '../src/bench/bench-decode.js';
import { kernels } from '../src/kernels/index.js';
import type { Kernels, WeightDType } from '../src/kernels/types.js';
import { setMlaMode, type Decoder } from '../src/models/decoder.js';
import { MlaAttention } from '../src/models/mla-attention.js';
import { quantizingSource, widen } from '../src/models/weights.js';
import { tensorBytes } from '../src/tensor.js';
import { randomDeepseek } from './helpers/random-deepseek.js';
import { randomLlama } from './helpers/random-llama.js';

const native = kernels().backend === 'native';
const skip = native ? false : 'counts the native kernels (TRANSMLA_KERNELS=ts freezes the reference object)';

interface Counted { weights: number; cache: number }

/** Runs fn with the kernel entry points a decode step uses wrapped to count the bytes they are handed. */
function counting(fn: () => void): Counted {
  const k = kernels() as Kernels & Record<string, unknown>;
  const c: Counted = { weights: 0, cache: 0 };
  const saved = { gemv: k.gemv, gemvMulti: k.gemvMulti, gemvSwiGlu: k.gemvSwiGlu, matmul: k.matmul, attention: k.attention };
  const wBytes = (t: WeightDType, n: number): number => tensorBytes(t, n);
  k.gemv = (W, t, x, y, N, K) => { c.weights += wBytes(t, N * K); saved.gemv(W, t, x, y, N, K); };
  k.gemvMulti = (Ws, t, x, ys, Ns, K) => { for (const N of Ns) c.weights += wBytes(t, N * K); saved.gemvMulti(Ws, t, x, ys, Ns, K); };
  k.gemvSwiGlu = (Wg, Wu, t, x, out, N, K) => { c.weights += 2 * wBytes(t, N * K); saved.gemvSwiGlu(Wg, Wu, t, x, out, N, K); };
  k.matmul = (A, B, t, C, M, N, K, transB, acc) => { c.weights += wBytes(t, N * K); saved.matmul(A, B, t, C, M, N, K, transB, acc); };
  k.attention = (a) => {
    const n = a.pos0 + a.tq, e = (a.kvDType ?? 'f32') === 'f32' ? 4 : 2;
    // MLA's latent rows are both keys and values (v aliases k): read once.
    const aliased = a.v.buffer === a.k.buffer && a.v.byteOffset >= a.k.byteOffset && a.vTokenStride === a.kTokenStride;
    c.cache += n * (aliased ? a.kTokenStride : a.nKvHeads * (a.headDimK + a.headDimV)) * e;
    saved.attention(a);
  };
  try {
    fn();
  } finally {
    Object.assign(k, saved);
  }
  return c;
}

/** The per-step weight bytes the kernels read: the model's figure less the norms and the embedding row (read in TS). */
function kernelWeightBytes(m: Decoder): number {
  let n = decodeStepWeightBytes(m) - m.norm.byteLength;
  for (const l of m.layers) n -= l.inputNorm.byteLength + l.postNorm.byteLength;
  for (const l of m.layers) if (l.attn instanceof MlaAttention) n -= (l.attn.p.kvANorm?.byteLength ?? 0) + (l.attn.p.qANorm?.byteLength ?? 0);
  if (m.embed !== m.head.weight) n -= tensorBytes(m.embed.dtype, m.config.hiddenSize);
  return n;
}

function deepseek(quant: 'q8_0' | null): Decoder {
  // d_n = 32 so W_UK's transposes quantize along d_n; r = 64 so kv_b's rows are whole blocks.
  const m = randomDeepseek({ hidden: 64, heads: 4, nope: 32, rope: 16, v: 32, kvLoraRank: 64, qLoraRank: null, inter: 96, vocab: 256, layers: 2, seed: 7 });
  const cfg = parseMlaConfig(m.json, 'config.json', 'stock');
  return buildModel(cfg, quant ? quantizingSource(m.src, quant) : m.src);
}

function gqa(quant: 'q8_0' | 'q4_0' | null): Decoder {
  const m = randomLlama({ hidden: 64, inter: 96, vocab: 256, layers: 2, heads: 4, kvHeads: 2, seed: 11 });
  return buildModel(m.config, quant ? quantizingSource(m.src, quant) : m.src);
}

function prompt(n: number, V: number): number[] {
  return Array.from({ length: n }, (_, i) => 1 + ((i * 37 + 11) % (V - 1)));
}

describe('bytes per decode step', () => {
  const cases: [string, () => Decoder, 'f32' | 'f16' | 'bf16'][] = [
    ['GQA, f32 weights, f32 cache', () => gqa(null), 'f32'],
    ['GQA, q8_0 weights, f16 cache', () => gqa('q8_0'), 'f16'],
    ['GQA, q4_0 weights, bf16 cache', () => gqa('q4_0'), 'bf16'],
    ['MLA, f32 weights, f32 latent cache', () => deepseek(null), 'f32'],
    ['MLA, q8_0 weights, f16 latent cache', () => deepseek('q8_0'), 'f16'],
  ];
  for (const [name, make, kv] of cases) {
    it(`${name}: the kernels read exactly the roofline model's bytes`, { skip }, () => {
      const m = make();
      m.kvDtype = kv;
      const cache = m.newCache();
      const ctx = 40;
      m.forward(prompt(ctx, m.config.vocabSize), cache);
      const got = counting(() => { m.forward([5], cache); });
      assert.equal(got.weights, kernelWeightBytes(m), 'weight bytes handed to the kernels');
      // The step attends over ctx + 1 rows (the new one included).
      assert.equal(got.cache, (ctx + 1) * cache.bytesPerToken('f32'), 'cache bytes handed to the attention kernel');
      assert.equal(cache.bytesPerToken('f32'), cache.elementsPerToken * (kv === 'f32' ? 4 : 2));
    });
  }

  it('MLA decode reads W_UK transposed (prepared at load) and kv_b\'s W_UV rows only: as many bytes as kv_b', () => {
    const m = deepseek(null);
    const a = m.layers[0]!.attn as MlaAttention;
    const p = a.p, H = p.nHeads, dn = p.qkNopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank, hw = dn + dv;
    const B = widen(p.kvB.weight), U = widen(a.ukT);
    for (let h = 0; h < H; h++) for (let i = 0; i < dn; i++) for (let j = 0; j < r; j++) {
      assert.equal(U[(h * r + j) * dn + i], B[(h * hw + i) * r + j]);
    }
    assert.equal(a.ukT.data.byteLength + H * dv * r * 4, p.kvB.weightBytes());
  });
});

describe('half-precision caches', () => {
  for (const kv of ['f16', 'bf16'] as const) {
    it(`GQA and MLA at ${kv}: decode logits follow the f32 cache's, and prefill agrees with step-by-step decode`, () => {
      for (const make of [() => gqa(null), () => deepseek(null)]) {
        const m = make();
        const ids = prompt(24, m.config.vocabSize);
        m.kvDtype = 'f32';
        const ref = m.forward(ids, m.newCache(), { logits: 'all' }).slice();
        m.kvDtype = kv;
        const all = m.forward(ids, m.newCache(), { logits: 'all' }).slice();
        const cache = m.newCache();
        const V = m.config.vocabSize;
        let worstStep = 0, worstRef = 0;
        for (let t = 0; t < ids.length; t++) {
          const row = m.forward([ids[t]!], cache);
          for (let i = 0; i < V; i++) {
            worstStep = Math.max(worstStep, Math.abs(row[i]! - all[t * V + i]!));
            worstRef = Math.max(worstRef, Math.abs(all[t * V + i]! - ref[t * V + i]!));
          }
        }
        assert.ok(worstStep < 1e-4, `${kv}: step-by-step decode differs from prefill by ${worstStep}`);
        assert.ok(worstRef > 0 && worstRef < (kv === 'f16' ? 1e-2 : 5e-2), `${kv}: half cache moves logits by ${worstRef}`);
        assert.equal(cache.allocatedBytes() % 2, 0);
      }
    });
  }

  it('MLA absorbed decode over a half latent cache equals the decompressed form over the same rows', () => {
    const m = deepseek(null);
    m.kvDtype = 'f16';
    const ids = prompt(16, m.config.vocabSize);
    const run = (mode: 'absorbed' | 'decompressed'): Float32Array => {
      setMlaMode(m, mode);
      const cache = m.newCache();
      let last = new Float32Array(0);
      for (const t of ids) last = m.forward([t], cache).slice();
      return last;
    };
    const a = run('absorbed'), d = run('decompressed');
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - d[i]!));
    assert.ok(worst < 1e-4, `absorbed vs decompressed: ${worst}`);
  });
});
