// Per-layer latent ranks (docs/methods.md#aware-budget): the greedy allocation, the exact
// variant's kv_lora_ranks (config, engine, caches, inspect, finetune, export), and the padding to
// one kv_lora_rank that stock folders need.
import assert from 'node:assert/strict';
import { copyFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { convertModel } from '../src/convert/transmla.js';
import { allocateRanks, leftOver } from '../src/convert/rank-alloc.js';
import { allocateBudgets, errorAt, rankGrid, ropeFamily, type BudgetCurve } from '../src/convert/budget-alloc.js';
import { padLayerRank, type LayerTensor } from '../src/convert/rank-pad.js';
import { tensorOf } from '../src/convert/mla-build.js';
import { readMlaConfig } from '../src/arch/deepseek.js';
import { loadModel } from '../src/arch/load.js';
import { describeModel } from '../src/arch/describe.js';
import { exportDeepseekV3 } from '../src/export/deepseek-v3.js';
import { finetune } from '../src/train/finetune.js';
import { openCheckpoint, writeCheckpoint } from '../src/io/checkpoint.js';
import { setMlaMode, setKvQuant } from '../src/models/decoder.js';
import { parseKvQuant } from '../src/models/latent-quant.js';
import { Linear } from '../src/models/linear.js';
import { MlaAttention, type MlaParams } from '../src/models/mla-attention.js';
import { RopeTable } from '../src/models/rope.js';
import { Workspace } from '../src/models/workspace.js';
import { widen } from '../src/models/weights.js';
import { mustAsset, skipUnlessAsset } from './helpers/assets.js';
import { decodeLogits, logits, randomTokens } from './helpers/logits.js';
import { maxAbsDiff, mulberry32 } from './helpers/random-llama.js';

test('allocateRanks: Σ r_l is the budget, ranks within [floor, full], the concave optimum (brute force)', () => {
  const rnd = mulberry32(5);
  for (let trial = 0; trial < 20; trial++) {
    const L = 3, n = 6, min = 1 + (trial % 2);
    // Decreasing gains: concave cumulative curves, where the greedy is optimal.
    const gains = Array.from({ length: L }, () => Float64Array.from({ length: n }, () => rnd() * 10).sort().reverse());
    const total = L * min + Math.floor(rnd() * (L * (n - min) + 1));
    const ranks = allocateRanks(gains, total, min);
    assert.equal(ranks.reduce((a, b) => a + b, 0), total);
    for (const r of ranks) assert.ok(r >= min && r <= n);
    let best = Infinity;
    for (let a = min; a <= n; a++) for (let b = min; b <= n; b++) {
      const c = total - a - b;
      if (c >= min && c <= n) best = Math.min(best, leftOver(gains, [a, b, c]));
    }
    assert.ok(Math.abs(leftOver(gains, ranks) - best) <= 1e-9 * (1 + best), `trial ${trial}: greedy ${leftOver(gains, ranks)} vs optimum ${best}`);
  }
  // Not concave (a late large gain): the envelope sees past the small component before it.
  assert.deepEqual(allocateRanks([Float64Array.of(1, 0.1, 5), Float64Array.of(2, 1.5, 1)], 4, 1), [3, 1]);
  assert.throws(() => allocateRanks([new Float64Array(4), new Float64Array(4)], 9, 1), /cannot be shared by 2 layers/);
  assert.throws(() => allocateRanks([new Float64Array(4), new Float64Array(4)], 3, 2), /cannot be shared/);
});

test('allocateBudgets: exact total, the brute-force optimum over (d_R, r) per layer; the d_R family and rank grid', () => {
  const rnd = mulberry32(9);
  for (let trial = 0; trial < 10; trial++) {
    const curves: BudgetCurve[][] = Array.from({ length: 3 }, () => [4, 8, 16].map((x) => ({
      ropeDim: x, freqFold: 1,
      grid: rankGrid(8, 2, 20).map((rank) => ({ rank, error: (1 + rnd()) * 40 / (rank * Math.sqrt(x)) })),
    })));
    const total = 3 * 16 + Math.floor(rnd() * 9) - 4;
    const { shapes, error } = allocateBudgets(curves, total);
    assert.equal(shapes.reduce((n, x) => n + x.rank + x.ropeDim, 0), total);
    let best = Infinity;
    const opts = curves.map((cs) => cs.flatMap((c) => Array.from({ length: 19 }, (_, i) => ({ c, rank: 2 + i }))));
    for (const a of opts[0]!) for (const b of opts[1]!) for (const c of opts[2]!) {
      if (a.rank + a.c.ropeDim + b.rank + b.c.ropeDim + c.rank + c.c.ropeDim !== total) continue;
      best = Math.min(best, errorAt(a.c, a.rank) + errorAt(b.c, b.rank) + errorAt(c.c, c.rank));
    }
    assert.ok(Math.abs(error - best) <= 1e-9 * best, `trial ${trial}: ${error} vs ${best}`);
  }
  assert.throws(() => allocateBudgets([[{ ropeDim: 4, freqFold: 1, grid: [{ rank: 2, error: 1 }, { rank: 4, error: 0 }] }]], 3), /no per-layer shapes spend exactly 3/);
  // head_dim 64, uniform d_R 16 with M 4 (c = 4): d_R 8 (c 8, M 8), 16 (M 4), 32 (c 2, M 2); 128 is no divisor.
  assert.deepEqual(ropeFamily(64, 16, 4, () => 100), [{ ropeDim: 8, freqFold: 8 }, { ropeDim: 16, freqFold: 4 }, { ropeDim: 32, freqFold: 2 }]);
  assert.deepEqual(ropeFamily(64, 64, 2, () => 100).map((x) => x.ropeDim), [32, 64]);
  assert.deepEqual(rankGrid(16, 4, 32), [4, 8, 12, 16, 20, 24, 32]);
});

/** A random MLA layer of rank r with kv_a_layernorm, in f32. */
function randomMla(seed: number, r: number, norm: boolean): MlaParams {
  const rnd = mulberry32(seed), H = 2, dn = 4, dR = 4, dv = 4, D = 12;
  const lin = (o: number, i: number, s = 0.4): Linear => new Linear({ dtype: 'f32', shape: [o, i], data: Float32Array.from({ length: o * i }, () => s * (2 * rnd() - 1)) }, null);
  return {
    nHeads: H, qkNopeHeadDim: dn, qkRopeHeadDim: dR, vHeadDim: dv, kvLoraRank: r, qLoraRank: null,
    q: lin(H * (dn + dR), D), qA: null, qANorm: null, qB: null,
    kvA: lin(r + dR, D), kvANorm: norm ? Float32Array.from({ length: r }, () => 0.5 + rnd()) : null, kvB: lin(H * (dn + dv), r), o: lin(D, H * dv),
    rope: RopeTable.create(dR, 10000, null), scale: 1 / Math.sqrt(dn + dR), normEps: 1e-6,
  };
}

/** The layer's tensors as padLayerRank takes them. */
function tensorsOf(p: MlaParams): LayerTensor[] {
  const f = (x: Float32Array): Float64Array => Float64Array.from(x);
  return [
    { name: 'a.kv_a_proj_with_mqa.weight', data: f(widen(p.kvA.weight)), shape: [...p.kvA.weight.shape] },
    ...(p.kvANorm ? [{ name: 'a.kv_a_layernorm.weight', data: f(p.kvANorm), shape: [p.kvANorm.length] }] : []),
    { name: 'a.kv_b_proj.weight', data: f(widen(p.kvB.weight)), shape: [...p.kvB.weight.shape] },
  ];
}

function padded(p: MlaParams, rMax: number): MlaParams {
  const t = new Map(padLayerRank(tensorsOf(p), { r: p.kvLoraRank, rMax, dR: p.qkRopeHeadDim }).map((x) => [x.name.slice(2), x]));
  const lin = (n: string): Linear => new Linear(tensorOf(t.get(n)!.data, t.get(n)!.shape, 'f32'), null);
  return { ...p, kvLoraRank: rMax, kvA: lin('kv_a_proj_with_mqa.weight'), kvB: lin('kv_b_proj.weight'), kvANorm: p.kvANorm ? Float32Array.from(t.get('kv_a_layernorm.weight')!.data) : null };
}

function run(a: MlaAttention, x: Float32Array, T: number, decode: boolean): Float32Array {
  const D = a.p.kvA.inFeatures, out = new Float32Array(T * D), ws = new Workspace(), cache = a.createCache();
  if (!decode) a.forward(x, T, 0, cache, out, ws);
  else for (let t = 0; t < T; t++) a.forward(x.subarray(t * D, (t + 1) * D), 1, t, cache, out.subarray(t * D, (t + 1) * D), ws);
  return out;
}

test('padLayerRank: a layer padded to r_max computes the same attention, with kv_a_layernorm (RMS kept) and without', () => {
  for (const norm of [true, false]) {
    const p = randomMla(norm ? 1 : 2, 5, norm), T = 7, D = 12;
    const x = Float32Array.from({ length: T * D }, (_, i) => Math.sin(0.7 * i + 1));
    const a = new MlaAttention(p), b = new MlaAttention(padded(p, 13));
    assert.equal(b.cacheElementsPerToken, 13 + 4);
    for (const decode of [false, true]) {
      const d = maxAbsDiff(run(a, x, T, decode), run(b, x, T, decode));
      assert.ok(d < 1e-5, `norm ${norm}, ${decode ? 'absorbed decode' : 'prefill'}: ${d}`);
    }
  }
  // RoPE width too: d_R 4 → 8 (pair i at slot 2i, queries rescaled for the softmax scale).
  for (const norm of [true, false]) {
    const p = randomMla(norm ? 4 : 5, 5, norm), T = 7, D = 12;
    const x = Float32Array.from({ length: T * D }, (_, i) => Math.cos(0.3 * i));
    const t = [...tensorsOf(p), { name: 'a.q_proj.weight', data: Float64Array.from(widen(p.q!.weight)), shape: [...p.q!.weight.shape] }];
    const m = new Map(padLayerRank(t, { r: 5, rMax: 9, dR: 4, dRMax: 8, heads: 2, dn: 4 }).map((y) => [y.name.slice(2), y]));
    const lin = (n: string): Linear => new Linear(tensorOf(m.get(n)!.data, m.get(n)!.shape, 'f32'), null);
    const q: MlaParams = {
      ...p, kvLoraRank: 9, qkRopeHeadDim: 8, rope: RopeTable.create(8, 10000, null), scale: 1 / Math.sqrt(4 + 8),
      q: lin('q_proj.weight'), kvA: lin('kv_a_proj_with_mqa.weight'), kvB: lin('kv_b_proj.weight'), kvANorm: norm ? Float32Array.from(m.get('kv_a_layernorm.weight')!.data) : null,
    };
    for (const decode of [false, true]) {
      const d = maxAbsDiff(run(new MlaAttention(p), x, T, decode), run(new MlaAttention(q), x, T, decode));
      assert.ok(d < 1e-5, `RoPE padding, norm ${norm}, ${decode ? 'decode' : 'prefill'}: ${d}`);
    }
  }
  assert.throws(() => padLayerRank(tensorsOf(randomMla(1, 5, true)), { r: 5, rMax: 5, dR: 4, dRMax: 6 }), /cannot be padded to 6/);
  assert.throws(() => padLayerRank(tensorsOf(randomMla(3, 5, true)), { r: 6, rMax: 8, dR: 4 }), /kv_a_proj_with_mqa.weight is \[9, 12\], expected \[10, 12\]/);
});

const skip = skipUnlessAsset('models/kjv-gqa') || skipUnlessAsset('text/kjv-old-testament-calib.txt');

for (const alloc of ['greedy', 'joint'] as const) {
  describe(`per-layer widths (--rank-alloc ${alloc}) through convert, the engine, export and finetune (kjv-gqa)`, { skip }, () => {
    const tmp = mkdtempSync(join(tmpdir(), `transmla-rank-alloc-${alloc}-`));
    const exact = join(tmp, 'exact');
    const calib = () => mustAsset('text/kjv-old-testament-calib.txt');
    const r = 16, dR = 16, L = 6;
    let ranks: number[], ropes: number[];
    before(async () => {
      const rep = await convertModel({
        model: mustAsset('models/kjv-gqa'), out: exact, variant: 'exact', evaluate: false, kvLoraRank: r, ropeDim: dR, freqFold: 4,
        calib: calib(), calibSamples: 6, calibSeqLen: 64, seed: 3, rankAlloc: alloc, nopeRefit: true, latent: 'output-aware',
      });
      ranks = rep.parameters.kvLoraRanks!;
      ropes = rep.parameters.qkRopeHeadDims ?? ranks.map(() => dR);
    });
    after(() => rmSync(tmp, { recursive: true, force: true }));

    it('keeps the total cache width, writes the per-layer widths with the uniform keys their maxima', () => {
      assert.equal(ranks.length, L);
      const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
      assert.equal(sum(ranks) + sum(ropes), L * (r + dR));
      if (alloc === 'greedy') assert.equal(sum(ranks), L * r);
      assert.ok(ranks.some((x) => x !== r), `an allocation that moved something: ${ranks.join(' ')}`);
      for (const x of ranks) assert.ok(x >= Math.ceil(r / 4));
      for (const x of ropes) assert.ok([8, 16, 32].includes(x));
      const cfg = JSON.parse(readFileSync(join(exact, 'config.json'), 'utf8'));
      assert.deepEqual(cfg.kv_lora_ranks, ranks);
      assert.equal(cfg.kv_lora_rank, Math.max(...ranks));
      assert.equal(cfg.qk_rope_head_dim, Math.max(...ropes));
      if (alloc === 'joint') assert.deepEqual(cfg.qk_rope_head_dims, ropes);
      assert.deepEqual(readMlaConfig(exact).mla.kvLoraRanks, ranks);
      const tj = JSON.parse(readFileSync(join(exact, 'transmla.json'), 'utf8'));
      assert.equal(tj.parameters.rankAlloc.total, alloc === 'greedy' ? L * r : L * (r + dR));
      assert.ok(tj.parameters.rankAlloc.errorAllocated <= tj.parameters.rankAlloc.errorUniform);
      // The allocation ran inside pass 1 here (the shape is given): its seconds are still its own.
      assert.ok(tj.parameters.rankAlloc.seconds > 0, `rankAlloc.seconds ${tj.parameters.rankAlloc.seconds}`);
    });

    it('runs in the engine: prefill = absorbed decode, batch, int8 cache, inspect sums the layers, equals its padded uniform form', async () => {
      const m = loadModel(exact);
      const tokens = randomTokens(12, m.config.vocabSize, 4);
      m.model.layers.forEach((l, i) => {
        assert.equal((l.attn as MlaAttention).p.kvLoraRank, ranks[i]);
        assert.equal((l.attn as MlaAttention).p.qkRopeHeadDim, ropes[i]);
      });
      const ref = logits(m.model, tokens);
      setMlaMode(m.model, 'absorbed');
      assert.ok(maxAbsDiff(decodeLogits(m.model, tokens), ref) < 1e-3, 'absorbed decode');
      setMlaMode(m.model, 'auto');
      const V = m.config.vocabSize, c1 = m.model.newCache(), c2 = m.model.newCache();
      const both = m.model.forwardBatch([{ tokens, cache: c1 }, { tokens: tokens.slice(0, 5), cache: c2 }], { logits: 'all' });
      assert.ok(maxAbsDiff(both.subarray(0, tokens.length * V), ref) < 1e-4, 'batch');
      const d = describeModel(m);
      assert.equal(d.kvCache.elementsPerToken, L * (r + dR));
      assert.deepEqual(d.mla?.kvLoraRanks, ranks);
      setKvQuant(m.model, parseKvQuant('int8'));
      assert.ok(maxAbsDiff(decodeLogits(m.model, tokens), ref) < 0.5, 'int8 latent cache');
      assert.deepEqual(m.model.newCache().layers.map((c) => c.buffers[0]!.width), ranks.map((x, l) => x + ropes[l]!));

      // The same model with every layer zero-padded to (r_max, d_R,max) and one of each key (f32, so the query scale is not re-rounded).
      const uni = join(tmp, 'uniform');
      cpSync(exact, uni, { recursive: true });
      const ck = openCheckpoint(exact);
      const rMax = Math.max(...ranks), dRMax = Math.max(...ropes);
      const all = ck.names().map((name) => ({ name, tensor: ck.get(name) }));
      const padded = /self_attn\.(kv_a_proj_with_mqa|kv_b_proj|q_proj)\./;
      const final = all.filter((t) => !padded.test(t.name));
      for (let l = 0; l < L; l++) {
        const f = all.filter((t) => t.name.startsWith(`model.layers.${l}.self_attn.`) && padded.test(t.name))
          .map((t) => ({ name: t.name, data: Float64Array.from(widen(t.tensor as never)), shape: [...t.tensor.shape] }));
        for (const p of padLayerRank(f, { r: ranks[l]!, rMax, dR: ropes[l]!, dRMax, heads: m.config.numHeads, dn: 64 })) final.push({ name: p.name, tensor: tensorOf(p.data, p.shape, 'f32') });
      }
      rmSync(join(uni, 'model.safetensors'));
      await writeCheckpoint(uni, final);
      ck.close();
      const cfg = JSON.parse(readFileSync(join(uni, 'config.json'), 'utf8'));
      delete cfg.kv_lora_ranks;
      delete cfg.qk_rope_head_dims;
      writeFileSync(join(uni, 'config.json'), JSON.stringify(cfg));
      const u = loadModel(uni);
      assert.equal(describeModel(u).kvCache.elementsPerToken, L * (rMax + dRMax));
      const diff = maxAbsDiff(logits(u.model, tokens), ref);
      assert.ok(diff < 1e-4, `padded uniform = per-layer: ${diff}`);
    });

    it('export --target deepseek-v3 pads every layer to the largest widths and says what the cache costs', async () => {
      const stock = join(tmp, 'stock');
      const rep = await exportDeepseekV3({ model: exact, out: stock, calib: calib(), calibSamples: 4, calibSeqLen: 64, evalChunks: 1, evalCtx: 64 });
      const cfg = JSON.parse(readFileSync(join(stock, 'config.json'), 'utf8'));
      assert.equal(cfg.kv_lora_rank, Math.max(...ranks));
      assert.equal(cfg.qk_rope_head_dim, Math.max(...ropes));
      assert.equal(cfg.kv_lora_ranks, undefined);
      assert.equal(cfg.qk_rope_head_dims, undefined);
      assert.ok(rep.notes.some((n) => /padded to kv_lora_rank/.test(n)));
      const s = loadModel(stock);
      assert.equal(describeModel(s).kvCache.elementsPerToken, L * (Math.max(...ranks) + Math.max(...ropes)));
      const e = rep.evaluations[0]!;
      assert.ok(Math.abs(e.stock.ppl - e.exact.ppl) / e.exact.ppl < 0.05, `stock ${e.stock.ppl} vs exact ${e.exact.ppl}`);
    });

    it('finetune reads and keeps the per-layer widths', async () => {
      const text = join(tmp, 'train.txt');
      writeFileSync(text, readFileSync(calib(), 'utf8').split('\n\n').slice(0, 30).join('\n\n'));
      const ft = join(tmp, 'ft');
      await finetune({ model: exact, out: ft, text, steps: 1, batch: 1, seqLen: 32, evalCtx: 32, evalChunks: 1, progress: false, evalAtStart: false });
      assert.deepEqual(readMlaConfig(ft).mla.kvLoraRanks, ranks);
      loadModel(ft);
    });

    if (alloc === 'joint') {
      it('a bad kv_lora_ranks or qk_rope_head_dims is one clear error naming the file', () => {
        const bad = join(tmp, 'bad');
        cpSync(exact, bad, { recursive: true });
        const cfg = JSON.parse(readFileSync(join(exact, 'config.json'), 'utf8'));
        const file = join(bad, 'config.json');
        const cases: [Record<string, unknown>, RegExp][] = [
          [{ kv_lora_ranks: [1, 2, 3] }, /kv_lora_ranks must be an array of num_hidden_layers = 6 integers/],
          [{ kv_lora_ranks: [...ranks.slice(0, 5), 2.5] }, /kv_lora_ranks \[5\] must be an integer in \[1, kv_lora_rank = \d+\], got 2.5/],
          [{ kv_lora_ranks: ranks.map((x) => x + 100) }, /kv_lora_ranks \[0\] must be an integer/],
          [{ kv_lora_ranks: ranks.map(() => 1) }, /kv_lora_ranks has largest value 1; kv_lora_rank must equal it/],
          [{ qk_rope_head_dims: ropes.map((x, i) => (i === 2 ? 3 : x)) }, /qk_rope_head_dims \[2\] must be even/],
          [{ qk_rope_head_dims: 'all' }, /qk_rope_head_dims must be an array/],
        ];
        for (const [v, re] of cases) {
          writeFileSync(file, JSON.stringify({ ...cfg, ...v }));
          assert.throws(() => readMlaConfig(bad), (e: Error) => re.test(e.message) && e.message.startsWith(file), JSON.stringify(v));
        }
        // Stock semantics: no stock engine reads the keys.
        writeFileSync(file, JSON.stringify({ ...cfg, model_type: 'deepseek_v3', architectures: ['DeepseekV3ForCausalLM'], qk_latent_layernorm: undefined }));
        rmSync(join(bad, 'transmla.json'));
        assert.throws(() => readMlaConfig(bad), (e: Error) => /kv_lora_ranks is not a DeepSeek-V3 key/.test(e.message) && e.message.startsWith(file));
        copyFileSync(join(exact, 'config.json'), file);
      });
    }
  });
}

