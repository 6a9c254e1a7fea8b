// Gradient checks of every trainer layer against central finite differences, in float64 (the
// 'f64' backend runs the same layer code with float64 arrays and plain-loop GEMMs). Each layer
// is checked alone (loss = Σ output ∘ R for a random R), then whole models — Llama GQA/MHA,
// DeepSeek MLA in each variant the loader accepts, MHA2MLA, Mixtral — on a packed row of three documents, with the
// CE + KL distillation loss. Bound: relative error ≤ 1e-6 per tensor (the issue asks ≤ 1e-3).
// Finally the fp32 backend (the kernels used for training) is compared with float64.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RopeTable, ropeInvFreq } from '../src/models/rope.js';
import { createBackend, type TrainBackend, type Vec } from '../src/train/backend.js';
import { GqaAttentionLayer } from '../src/train/layers/attention-gqa.js';
import { Mha2mlaAttentionLayer } from '../src/train/layers/attention-mha2mla.js';
import { MlaAttentionLayer } from '../src/train/layers/attention-mla.js';
import { perHeadRopeTables } from '../src/models/mha2mla-attention.js';
import { CausalAttention } from '../src/train/layers/causal-attention.js';
import { HeadLossLayer } from '../src/train/layers/head-loss.js';
import { LinearLayer } from '../src/train/layers/linear.js';
import { MlpLayer } from '../src/train/layers/mlp.js';
import { MoeLayer } from '../src/train/layers/moe.js';
import { deepseekMoeNames, mixtralMoeNames } from '../src/models/moe.js';
import { SharedExpertMoeLayer } from '../src/train/layers/moe-shared.js';
import { RmsNormLayer } from '../src/train/layers/rmsnorm.js';
import { ropeRotate } from '../src/train/layers/rope.js';
import { emptySums } from '../src/train/loss.js';
import { TrainModel, type TrainRow } from '../src/train/model.js';
import type { ModelArgs } from '../src/arch/args.js';
import { ParamStore, type Param } from '../src/train/params.js';
import type { Tensor } from '../src/tensor.js';
import { MapSource, mulberry32, randomLlama } from './helpers/random-llama.js';
import { gradError, packedRow, randomMha2mla, randomMla, randomVec, type RandomMlaSpec } from './helpers/random-train.js';
import { randomMixtral } from './helpers/random-mixtral.js';

const BOUND = 1e-6;
const be64 = createBackend('f64');

function dot(a: ArrayLike<number>, b: ArrayLike<number>, n = a.length): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[i]! * b[i]!;
  return s;
}

function store(be: TrainBackend, tensors: Record<string, { shape: number[]; scale?: number; offset?: number }>, seed: number): ParamStore {
  const rnd = mulberry32(seed);
  const map = new Map<string, Tensor>();
  for (const [name, t] of Object.entries(tensors)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    map.set(name, { dtype: 'f32', shape: t.shape, data: Float32Array.from({ length: n }, () => (t.offset ?? 0) + (2 * rnd() - 1) * (t.scale ?? 0.5)) });
  }
  return ParamStore.load(be, new MapSource(map), () => false, 'all');
}

/** Checks every parameter's gradient and reports the worst relative error. */
function checkParams(params: readonly Param[], loss: () => number, label: string): number {
  let worst = 0;
  for (const p of params) {
    const e = gradError(p.data, p.grad!, loss);
    assert.ok(e <= BOUND, `${label}: ${p.name} relative error ${e.toExponential(2)}`);
    worst = Math.max(worst, e);
  }
  return worst;
}

const row = packedRow([4, 3, 2], 11, 5);
const worst: Record<string, number> = {};

test('linear layer (weight, bias, input)', () => {
  const T = 5, inp = 6, out = 4;
  const ps = store(be64, { 'l.weight': { shape: [out, inp] }, 'l.bias': { shape: [out] } }, 1);
  const lin = LinearLayer.load(ps, 'l', out, inp);
  const x = randomVec(T * inp, 2), R = randomVec(T * out, 3), y = new Float64Array(T * out), dx = new Float64Array(T * inp);
  const loss = (): number => { lin.forward(be64, x, T, y); return dot(y, R); };
  loss();
  lin.backward(be64, x, R, T, dx);
  worst.linear = Math.max(gradError(x, dx, loss), checkParams(lin.params(), loss, 'linear'));
  assert.ok(worst.linear <= BOUND);
});

test('rmsnorm layer', () => {
  const T = 4, D = 7;
  const ps = store(be64, { 'n.weight': { shape: [D], offset: 1, scale: 0.3 } }, 4);
  const norm = new RmsNormLayer(ps.get('n.weight', [D]), 1e-5);
  const x = randomVec(T * D, 5), R = randomVec(T * D, 6), y = new Float64Array(T * D), r = new Float64Array(T), dx = new Float64Array(T * D);
  const loss = (): number => { norm.forward(x, T, y, r); return dot(y, R); };
  loss();
  norm.backward(x, r, R, T, dx);
  worst.rmsnorm = Math.max(gradError(x, dx, loss), checkParams([norm.w], loss, 'rmsnorm'));
  assert.ok(worst.rmsnorm <= BOUND);
});

test('rope (both layouts, offset slice, per-document positions): backward is the adjoint', () => {
  for (const layout of ['half', 'interleaved'] as const) {
    const T = row.T, heads = 3, stride = 10, offset = 2, table = RopeTable.create(8, 10000);
    const x = randomVec(T * heads * stride, 7), R = randomVec(T * heads * stride, 8);
    const loss = (): number => { const y = x.slice(); ropeRotate(y, T, heads, stride, offset, row.positions, table, layout, false); return dot(y, R); };
    const dx = R.slice();
    ropeRotate(dx, T, heads, stride, offset, row.positions, table, layout, true);
    const e = gradError(x, dx, loss);
    assert.ok(e <= BOUND, `${layout}: ${e}`);
    worst[`rope-${layout}`] = e;
  }
});

test('causal attention core (GQA grouping, three documents)', () => {
  const T = row.T, H = 4, G = 2, dK = 5, dV = 3;
  const core = new CausalAttention(be64, { nHeads: H, nKvHeads: G, dK, dV, scale: 0.7 });
  const q = randomVec(T * H * dK, 9), k = randomVec(T * G * dK, 10), v = randomVec(T * G * dV, 11), R = randomVec(T * H * dV, 12);
  const out = new Float64Array(T * H * dV);
  const loss = (): number => { core.forward(q, k, v, T, row.segments, out); return dot(out, R); };
  loss();
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  core.backward(q, k, v, T, row.segments, R, dq, dk, dv);
  worst.attention = Math.max(gradError(q, dq, loss), gradError(k, dk, loss), gradError(v, dv, loss));
  assert.ok(worst.attention <= BOUND, String(worst.attention));
});

/** dx and every parameter of an attention or MLP layer, for loss = Σ out ∘ R. */
function checkBlockLayer(label: string, D: number, fwd: (x: Vec, out: Vec) => void, bwd: (x: Vec, dOut: Vec, dx: Vec) => void, params: Param[]): number {
  const T = row.T;
  const x = randomVec(T * D, 13), R = randomVec(T * D, 14), out = new Float64Array(T * D), dx = new Float64Array(T * D);
  const loss = (): number => { fwd(x, out); return dot(out, R); };
  loss();
  bwd(x, R, dx);
  const ex = gradError(x, dx, loss);
  assert.ok(ex <= BOUND, `${label}: input relative error ${ex}`);
  return Math.max(ex, checkParams(params, loss, label));
}

test('GQA attention layer (biases, 3 query heads per KV head)', () => {
  const D = 8, H = 6, G = 2, d = 4;
  const ps = store(be64, {
    'a.q_proj.weight': { shape: [H * d, D] }, 'a.q_proj.bias': { shape: [H * d] },
    'a.k_proj.weight': { shape: [G * d, D] }, 'a.k_proj.bias': { shape: [G * d] },
    'a.v_proj.weight': { shape: [G * d, D] }, 'a.v_proj.bias': { shape: [G * d] },
    'a.o_proj.weight': { shape: [D, H * d] }, 'a.o_proj.bias': { shape: [D] },
  }, 15);
  const layer = new GqaAttentionLayer(be64, ps, 'a', { hidden: D, nHeads: H, nKvHeads: G, headDim: d }, RopeTable.create(d, 10000), 'half');
  worst.gqa = checkBlockLayer('gqa', D, (x, o) => layer.forward(x, row, o), (x, dO, dx) => layer.backward(x, row, dO, dx), layer.params());
});

test('GQA attention layer with Qwen3 per-head q/k RMSNorm (norm weights, biases, 2 query heads per KV head)', () => {
  const D = 8, H = 4, G = 2, d = 6;
  const ps = store(be64, {
    'a.q_proj.weight': { shape: [H * d, D] }, 'a.q_proj.bias': { shape: [H * d] },
    'a.k_proj.weight': { shape: [G * d, D] }, 'a.k_proj.bias': { shape: [G * d] },
    'a.v_proj.weight': { shape: [G * d, D] },
    'a.o_proj.weight': { shape: [D, H * d] },
    'a.q_norm.weight': { shape: [d], offset: 1, scale: 0.4 }, 'a.k_norm.weight': { shape: [d], offset: 1, scale: 0.4 },
  }, 18);
  const layer = new GqaAttentionLayer(be64, ps, 'a', { hidden: D, nHeads: H, nKvHeads: G, headDim: d, qkNormEps: 1e-6 }, RopeTable.create(d, 10000), 'half');
  assert.equal(layer.params().filter((p) => /_norm\.weight$/.test(p.name)).length, 2);
  worst['gqa qk-norm'] = checkBlockLayer('gqa qk-norm', D, (x, o) => layer.forward(x, row, o), (x, dO, dx) => layer.backward(x, row, dO, dx), layer.params());
});

const mlaVariants: [string, Partial<RandomMlaSpec>][] = [
  ['q_proj, no norms (TransMLA export)', {}],
  ['q_proj with biases, rotate-half rope', { biases: true, ropeInterleave: false }],
  ['q_lora + q_a/kv_a layernorms + biases', { qLoraRank: 5, norms: true, biases: true }],
];

for (const [name, extra] of mlaVariants) {
  test(`MLA attention layer: ${name}`, () => {
    const spec: RandomMlaSpec = { hidden: 8, heads: 3, inter: 10, vocab: 11, layers: 1, nope: 4, rope: 2, v: 3, rank: 5, ...extra };
    const { cfg, src } = randomMla(spec);
    const ps = ParamStore.load(be64, src, () => false, 'all');
    const m = cfg.mla;
    const layer = new MlaAttentionLayer(be64, ps, 'model.layers.0.self_attn', { ...m, hidden: 8, nHeads: 3, normEps: 1e-5 }, RopeTable.create(m.qkRopeHeadDim, 10000), m.ropeInterleave ? 'interleaved' : 'half');
    worst[`mla: ${name}`] = checkBlockLayer('mla', 8, (x, o) => layer.forward(x, row, o), (x, dO, dx) => layer.backward(x, row, dO, dx), layer.params());
  });
}

test('MHA2MLA attention layer (per-KV-head RoPE pairs, shared latent, up_k/up_v biases)', () => {
  const { cfg, src } = randomMha2mla({ hidden: 8, heads: 4, kvHeads: 2, headDim: 6, inter: 10, vocab: 11, layers: 1, pairs: 1, rank: 5, biases: true });
  const ps = ParamStore.load(be64, src, () => false, 'all');
  const m = cfg.mha2mla, c = cfg;
  const ropes = perHeadRopeTables(ropeInvFreq(c.headDim, c.ropeTheta, c.ropeScaling), m.ropePairs[0]!);
  const layer = new Mha2mlaAttentionLayer(be64, ps, 'model.layers.0.self_attn', { hidden: 8, nHeads: 4, nKvHeads: 2, headDim: 6, ropePairs: m.ropePairsPerHead, kvLoraRank: m.kvLoraRank }, ropes);
  worst.mha2mla = checkBlockLayer('mha2mla', 8, (x, o) => layer.forward(x, row, o), (x, dO, dx) => layer.backward(x, row, dO, dx), layer.params());
});

test('SwiGLU MLP layer', () => {
  const D = 6, I = 9;
  const ps = store(be64, { 'm.gate_proj.weight': { shape: [I, D] }, 'm.up_proj.weight': { shape: [I, D] }, 'm.down_proj.weight': { shape: [D, I] } }, 16);
  const mlp = new MlpLayer(be64, ps, 'm', D, I);
  worst.mlp = checkBlockLayer('mlp', D, (x, o) => mlp.forward(x, row.T, o), (x, dO, dx) => mlp.backward(x, row.T, dO, dx), mlp.params());
});

test('mixture-of-experts MLP layer (4 experts, top-2: router and routed experts)', () => {
  const D = 6, I = 5, E = 4;
  const names = mixtralMoeNames('m');
  const tensors: Record<string, { shape: number[]; scale?: number }> = { [`${names.router}.weight`]: { shape: [E, D], scale: 1.5 } };
  for (let e = 0; e < E; e++) {
    const n = names.expert(e);
    tensors[`${n.gate}.weight`] = { shape: [I, D] }; tensors[`${n.up}.weight`] = { shape: [I, D] }; tensors[`${n.down}.weight`] = { shape: [D, I] };
  }
  const ps = store(be64, tensors, 41);
  const moe = new MoeLayer(be64, ps, names, { hidden: D, expertInter: I, numExperts: E, topK: 2 });
  worst.moe = checkBlockLayer('moe', D, (x, o) => moe.forward(x, row.T, o), (x, dO, dx) => moe.backward(x, row.T, dO, dx), moe.params());
  // Every expert got tokens, so every expert's gradient was checked against a nonzero difference.
  for (const p of moe.params()) assert.ok(p.grad!.some((g) => g !== 0), `${p.name} has no gradient`);
});

test('DeepSeek MoE layer: routed experts plus a shared expert (gradients of both add)', () => {
  const D = 6, I = 5, E = 4;
  const names = deepseekMoeNames('m');
  const tensors: Record<string, { shape: number[]; scale?: number }> = { [`${names.router}.weight`]: { shape: [E, D], scale: 1.5 } };
  for (let e = 0; e < E; e++) {
    const n = names.expert(e);
    tensors[`${n.gate}.weight`] = { shape: [I, D] }; tensors[`${n.up}.weight`] = { shape: [I, D] }; tensors[`${n.down}.weight`] = { shape: [D, I] };
  }
  for (const [k, sh] of [['gate_proj', [2 * I, D]], ['up_proj', [2 * I, D]], ['down_proj', [D, 2 * I]]] as const) tensors[`m.mlp.shared_experts.${k}.weight`] = { shape: [...sh] };
  const ps = store(be64, tensors, 43);
  const moe = new SharedExpertMoeLayer(be64, new MoeLayer(be64, ps, names, { hidden: D, expertInter: I, numExperts: E, topK: 2 }), new MlpLayer(be64, ps, 'm.mlp.shared_experts', D, 2 * I), D);
  worst.sharedMoe = checkBlockLayer('shared moe', D, (x, o) => moe.forward(x, row.T, o), (x, dO, dx) => moe.backward(x, row.T, dO, dx), moe.params());
  for (const p of moe.params()) assert.ok(p.grad!.some((g) => g !== 0), `${p.name} has no gradient`);
});

/** The loss of logits [T×V] computed independently (float64, plain formulas). */
function referenceLoss(logits: ArrayLike<number>, r: TrainRow, V: number, teacher: Float32Array | null, alpha: number, scale: number): number {
  let L = 0;
  for (let t = 0; t < r.T; t++) {
    const y = r.targets[t]!;
    if (y < 0) continue;
    const ls = logSoftmax(logits, t * V, V);
    let kl = 0;
    if (teacher) {
      const lt = logSoftmax(teacher, t * V, V);
      for (let v = 0; v < V; v++) kl += Math.exp(lt[v]!) * (lt[v]! - ls[v]!);
    }
    L += (1 - alpha) * -ls[y]! + alpha * kl;
  }
  return L * scale;
}

function logSoftmax(x: ArrayLike<number>, o: number, V: number): Float64Array {
  let mx = -Infinity;
  for (let v = 0; v < V; v++) mx = Math.max(mx, x[o + v]!);
  let z = 0;
  for (let v = 0; v < V; v++) z += Math.exp(x[o + v]! - mx);
  const lse = mx + Math.log(z);
  return Float64Array.from({ length: V }, (_, v) => x[o + v]! - lse);
}

test('head + loss (final norm, LM head, CE mixed with KL to a teacher)', () => {
  const D = 6, V = 11, T = row.T;
  const ps = store(be64, { 'norm.weight': { shape: [D], offset: 1, scale: 0.2 }, 'head.weight': { shape: [V, D] } }, 17);
  const head = new HeadLossLayer(be64, ps.get('norm.weight', [D]), ps.get('head.weight', [V, D]), 1e-5);
  const teacher = Float32Array.from(randomVec(T * V, 18, 2));
  for (const alpha of [0, 0.3, 1]) {
    ps.zeroGrads();
    const x = randomVec(T * D, 19), dx = new Float64Array(T * D);
    const spec = { targets: row.targets, teacher: alpha > 0 ? teacher : null, alpha, scale: 0.25 };
    const loss = (): number => referenceLoss(head.logitsOf(x, T), row, V, spec.teacher, alpha, spec.scale);
    const sums = emptySums();
    head.forwardBackward(x, T, spec, dx, sums);
    assert.equal(sums.count, 6);
    const e = Math.max(gradError(x, dx, loss), checkParams(ps.list, loss, `head α=${alpha}`));
    worst[`head-loss α=${alpha}`] = e;
  }
});

// ---------------------------------------------------------------------------------------------
// Whole models

interface ModelCase {
  name: string;
  arch: ModelArgs;
  src: MapSource;
}

function modelCases(): ModelCase[] {
  const cases: ModelCase[] = [];
  const gqa = randomLlama({ hidden: 8, heads: 4, kvHeads: 2, headDim: 4, inter: 10, vocab: 11, layers: 2, tied: true, seed: 21 });
  cases.push({ name: 'Llama GQA, tied head', arch: gqa.config, src: gqa.src });
  const mha = randomLlama({ hidden: 8, heads: 2, kvHeads: 2, headDim: 4, inter: 10, vocab: 11, layers: 2, tied: false, attentionBias: true, seed: 22 });
  cases.push({ name: 'Llama MHA, biases, untied head', arch: mha.config, src: mha.src });
  const mla = randomMla({ hidden: 8, heads: 2, inter: 10, vocab: 11, layers: 2, nope: 4, rope: 2, v: 4, rank: 5, tied: true, seed: 23 });
  cases.push({ name: 'MLA (TransMLA export form), tied head', arch: mla.cfg, src: mla.src });
  const mlaQ = randomMla({ hidden: 8, heads: 2, inter: 10, vocab: 11, layers: 2, nope: 3, rope: 4, v: 2, rank: 3, qLoraRank: 4, norms: true, biases: true, seed: 24 });
  cases.push({ name: 'MLA with q_lora, layernorms, biases', arch: mlaQ.cfg, src: mlaQ.src });
  const m2 = randomMha2mla({ hidden: 8, heads: 4, kvHeads: 2, headDim: 4, inter: 10, vocab: 11, layers: 2, pairs: 1, rank: 3, biases: true, tied: true, seed: 25 });
  cases.push({ name: 'MHA2MLA (GQA source, up_k/up_v biases), tied head', arch: m2.cfg, src: m2.src });
  const mx = randomMixtral({ hidden: 8, heads: 4, kvHeads: 2, headDim: 4, inter: 6, vocab: 11, layers: 2, experts: 4, topK: 2, seed: 26 });
  cases.push({ name: 'Mixtral (GQA, 4 experts top-2), untied head', arch: mx.config, src: mx.src });
  const q3 = randomLlama({ hidden: 8, heads: 4, kvHeads: 2, headDim: 6, inter: 10, vocab: 11, layers: 2, modelType: 'qwen3', attentionBias: true, seed: 26 });
  cases.push({ name: 'Qwen3 (per-head q/k RMSNorm, q/k/v/o biases, head_dim ≠ hidden/heads)', arch: q3.config, src: q3.src });
  return cases;
}

for (const c of modelCases()) {
  test(`whole model gradients: ${c.name}`, () => {
    const model = TrainModel.create(be64, c.arch, c.src, 'all');
    const V = c.arch.vocabSize;
    const teacher = Float32Array.from(randomVec(row.T * V, 31, 2));
    const alpha = 0.4, scale = 1 / 6;
    model.params.zeroGrads();
    const sums = model.forwardBackward(row, { teacher, alpha, scale });
    const loss = (): number => referenceLoss(model.logits(row), row, V, teacher, alpha, scale);
    assert.ok(Math.abs(((1 - alpha) * sums.ce + alpha * sums.kl) * scale - loss()) < 1e-12, 'loss sums agree with the reference loss');
    worst[`model: ${c.name}`] = checkParams(model.params.list, loss, c.name);
  });
}

test('fp32 backend (training kernels) agrees with float64 gradients', () => {
  const c = modelCases()[3]!;
  const be32 = createBackend('f32');
  const m64 = TrainModel.create(be64, c.arch, c.src, 'all');
  const m32 = TrainModel.create(be32, c.arch, c.src, 'all');
  const teacher = Float32Array.from(randomVec(row.T * c.arch.vocabSize, 32, 2));
  for (const m of [m64, m32]) { m.params.zeroGrads(); m.forwardBackward(row, { teacher, alpha: 0.5, scale: 1 / 6 }); }
  // Float32 rounding of activations and sums bounds the agreement, not the method.
  let e = 0;
  m64.params.list.forEach((p, i) => {
    const g64 = p.grad!, g32 = m32.params.list[i]!.grad!;
    let diff = 0, ref = 0;
    for (let j = 0; j < g64.length; j++) { diff = Math.max(diff, Math.abs(g64[j]! - g32[j]!)); ref = Math.max(ref, Math.abs(g64[j]!)); }
    e = Math.max(e, ref === 0 ? diff : diff / ref);
  });
  assert.ok(e <= 1e-4, `fp32 vs float64 relative gradient error ${e}`);
  worst['fp32 vs float64'] = e;
});

test('report', (t) => {
  for (const [k, v] of Object.entries(worst)) t.diagnostic(`gradcheck ${k}: max relative error ${v.toExponential(2)}`);
});
