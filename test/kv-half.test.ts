// Half-precision KV caches: the HalfCacheBuffer store (rows narrowed with round-to-nearest-even)
// and the attention kernel reading f16/bf16 k/v directly (AttentionArgs.kvDType). Widening is
// exact, so attention over a half cache must equal attention over its widened f32 copy: bit for
// bit in TypeScript and, when the head sizes are multiples of 8 (no scalar tails, which the
// compiler may reassociate differently per dtype), natively; native vs TypeScript within 1e-5.
process.env.TRANSMLA_ADAPTIVE_THREADS = '0'; // the 2-thread runs (split keys) must really use 2 threads

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { tsKernels } from '../src/kernels/ts.js';
import type { AttentionArgs, HalfDType, Kernels } from '../src/kernels/types.js';
import { f32BitsToBf16, f32BitsToF16 } from '../src/kernels/ts/half.js';
import { CacheBuffer, HalfCacheBuffer, KvCache } from '../src/models/kv-cache.js';

const { loadNativeAddon, loadNativeKernels } = await import('../src/kernels/native.js');
const native = loadNativeKernels().kernels ?? null;
const addon = loadNativeAddon().addon ?? null;
const nativeSkip: false | string = native || process.env.TRANSMLA_REQUIRE_NATIVE === '1' ? false : 'native addon unavailable';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function randF32(n: number, r: () => number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}
function narrow(x: Float32Array, t: HalfDType): Uint16Array {
  const u = new Uint16Array(x.length);
  tsKernels.fromF32(x, t, u);
  return u;
}
function widen(u: Uint16Array, t: HalfDType): Float32Array {
  const f = new Float32Array(u.length);
  tsKernels.toF32(u, t, f);
  return f;
}

describe('HalfCacheBuffer', () => {
  for (const t of ['f16', 'bf16'] as const) {
    test(`${t}: rows are narrowed with round-to-nearest-even, kept through growth, counted at 2 bytes`, () => {
      const w = 6;
      const b = new HalfCacheBuffer(w, t);
      assert.equal(b.capacity, 0);
      // Exact halfway points between neighbours: ties go to the even one.
      const tie = t === 'f16' ? [1 + 2 ** -11, 1 + 3 * 2 ** -11, -(2048 + 1), 65520] : [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(256 + 1), (2 - 2 ** -8) * 2 ** 127];
      const want = t === 'f16' ? [0x3c00, 0x3c02, 0xe800, 0x7c00] : [0x3f80, 0x3f82, 0xc380, 0x7f80];
      const x = new Float32Array([...tie, 0.1, -0]);
      b.ensure(1);
      b.write(0, x, 1);
      assert.deepEqual([...b.rows(0, 1)].slice(0, 4), want);
      const bits = new Uint32Array(new Float32Array([0.1]).buffer)[0]!;
      assert.equal(b.rows(0, 1)[4], t === 'f16' ? f32BitsToF16(bits) : f32BitsToBf16(bits));
      assert.equal(b.rows(0, 1)[5], 0x8000);
      // Many rows, then growth past the first allocation: the old rows survive.
      const r = rng(3);
      const rows = randF32(100 * w, r, 4);
      b.ensure(101);
      b.write(1, rows, 100);
      b.ensure(1000);
      assert.ok(b.capacity >= 1000);
      const back = new Float32Array(101 * w);
      b.read(0, 101, back);
      assert.deepEqual([...back.subarray(w)], [...widen(narrow(rows, t), t)]);
      assert.equal(b.bytesPerToken('f32'), 2 * w);
      assert.equal(b.allocatedBytes(), b.capacity * w * 2);
      assert.throws(() => b.write(b.capacity, rows, 1), /holds \d+ rows, writing up to/);
      // In a KvCache next to an f32 store, each counts its own bytes.
      const kv = new KvCache([{ buffers: [b, new CacheBuffer(w)] }]);
      assert.equal(kv.bytesPerToken('f32'), 2 * w + 4 * w);
    });
  }
});

interface Case {
  name: string;
  tq: number;
  pos0: number;
  nHeads: number;
  nKvHeads: number;
  dk: number;
  dv: number;
  alias: boolean;
}
const cases: Case[] = [
  { name: 'GQA decode at 700', tq: 1, pos0: 699, nHeads: 8, nKvHeads: 2, dk: 64, dv: 64, alias: false },
  { name: 'GQA prefill 37 after 20', tq: 37, pos0: 20, nHeads: 6, nKvHeads: 3, dk: 40, dv: 24, alias: false },
  { name: 'MLA latent decode at 1500 (v aliases k, odd sizes)', tq: 1, pos0: 1499, nHeads: 4, nKvHeads: 1, dk: 76, dv: 68, alias: true },
  { name: 'MHA prefill 5', tq: 5, pos0: 0, nHeads: 3, nKvHeads: 3, dk: 13, dv: 7, alias: false },
];

function makeArgs(c: Case, t: HalfDType, r: () => number): { half: AttentionArgs; wide: AttentionArgs } {
  const T = c.pos0 + c.tq;
  const ks = c.nKvHeads * c.dk, vs = c.alias ? ks : c.nKvHeads * c.dv;
  const q = randF32(c.tq * c.nHeads * c.dk, r);
  const kh = narrow(randF32(T * ks, r, 2), t);
  const vh = c.alias ? kh : narrow(randF32(T * vs, r), t);
  const kw = widen(kh, t), vw = c.alias ? kw : widen(vh, t);
  const base = { q, tq: c.tq, nHeads: c.nHeads, nKvHeads: c.nKvHeads, headDimK: c.dk, headDimV: c.dv, kTokenStride: ks, vTokenStride: vs, pos0: c.pos0, scale: 1 / Math.sqrt(c.dk) };
  return {
    half: { ...base, k: kh, v: vh, kvDType: t, out: new Float32Array(c.tq * c.nHeads * c.dv) },
    wide: { ...base, k: kw, v: vw, kvDType: 'f32', out: new Float32Array(c.tq * c.nHeads * c.dv) },
  };
}

function maxRel(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 1e-30;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= num)) num = d;
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

describe('attention over f16/bf16 caches', () => {
  for (const t of ['f16', 'bf16'] as const) {
    test(`${t}, TypeScript: equal to attention over the widened f32 cache`, () => {
      const r = rng(t === 'f16' ? 1 : 2);
      for (const c of cases) {
        const { half, wide } = makeArgs(c, t, r);
        tsKernels.attention(half);
        tsKernels.attention(wide);
        assert.ok(Buffer.from(half.out.buffer).equals(Buffer.from(wide.out.buffer)), `${c.name}: differs`);
      }
    });
    for (const threads of [1, 2]) {
      test(`${t}, native, ${threads} thread${threads > 1 ? 's' : ''}: equal to its f32 run on the widened cache, within 1e-5 of TypeScript`, { skip: nativeSkip }, () => {
        addon!.setThreads(threads);
        const r = rng(threads * 10 + (t === 'f16' ? 1 : 2));
        for (const c of cases) {
          const { half, wide } = makeArgs(c, t, r);
          native!.attention(half);
          native!.attention(wide);
          if (c.dk % 8 === 0 && c.dv % 8 === 0) {
            assert.ok(Buffer.from(half.out.buffer).equals(Buffer.from(wide.out.buffer)), `${c.name}: native half and widened runs differ (${maxRel(half.out, wide.out)})`);
          } else {
            assert.ok(maxRel(half.out, wide.out) <= 1e-6, `${c.name}: native half vs widened ${maxRel(half.out, wide.out)}`);
          }
          const ref = { ...half, out: new Float32Array(half.out.length) };
          tsKernels.attention(ref);
          const e = maxRel(half.out, ref.out);
          assert.ok(e <= 1e-5, `${c.name}: native vs TypeScript ${e}`);
        }
        addon!.setThreads(2);
      });
    }
  }

  test('a half cache must come as Uint16Array and kvDType must be a float type', { skip: nativeSkip }, () => {
    const c = cases[3]!;
    const { half, wide } = makeArgs(c, 'f16', rng(9));
    const ks: Kernels[] = [tsKernels, native!];
    for (const k of ks) {
      assert.throws(() => k.attention({ ...wide, kvDType: 'f16' }), /Uint16Array/, k.backend);
      assert.throws(() => k.attention({ ...half, kvDType: 'f32' }), /Float32Array/, k.backend);
      assert.throws(() => k.attention({ ...half, kvDType: 'q8_0' as 'f16' }), /kvDType/, k.backend);
    }
  });
});
