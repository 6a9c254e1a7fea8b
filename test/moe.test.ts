// The Mixtral family in the engine: the mixture-of-experts MLP against an independent float64
// reference forward, routing (order, renormalisation, ties), sparse expert reads, the bytes a
// decode step reads, GGUF round trips and dispatch, and the conversions' refusal.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { describeModel, formatModelReport } from '../src/arch/describe.js';
import { openGgufModel } from '../src/arch/gguf.js';
import { loadModel } from '../src/arch/load.js';
import { mixtralGgufTensors, type MixtralArgs } from '../src/arch/mixtral.js';
import { buildModel, requireConversion } from '../src/arch/registry.js';
import { decodeStepWeightBytes } from '../src/bench/bench-decode.js';
import { exportLlamaGguf } from '../src/export/gguf-llama.js';
import { exportMixtralGguf } from '../src/export/gguf-mixtral.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { readGguf } from '../src/io/gguf.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { deepseekMoeNames, mixtralMoeNames, MoeMlp, routeTopK } from '../src/models/moe.js';
import { Workspace } from '../src/models/workspace.js';
import { assetPath } from './helpers/assets.js';
import { logSoftmax, maxAbsDiff, mulberry32, randomLlama, referenceLogits } from './helpers/random-llama.js';
import { randomMixtral, referenceMoe } from './helpers/random-mixtral.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-moe-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const spec = { hidden: 48, heads: 4, kvHeads: 2, headDim: 12, inter: 40, vocab: 64, layers: 2, experts: 8, topK: 2, seed: 5 };
const ids = (n: number, seed: number): number[] => { const r = mulberry32(seed); return Array.from({ length: n }, () => Math.floor(r() * 64)); };

describe('routing', () => {
  test('softmax over all experts, the k largest by decreasing probability, renormalised', () => {
    const logits = [0.5, 2.0, -1.0, 1.0, /* token 2 */ 3, 3, 1, 0];
    const idx = new Int32Array(4), w = new Float64Array(4);
    routeTopK(logits, 2, 4, 2, idx, w);
    assert.deepEqual([...idx], [1, 3, 0, 1], 'ties go to the lower expert index');
    const p1 = Math.exp(2) / (Math.exp(2) + Math.exp(1));
    assert.ok(Math.abs(w[0]! - p1) < 1e-15 && Math.abs(w[1]! - (1 - p1)) < 1e-15);
    assert.deepEqual([w[2], w[3]], [0.5, 0.5]);
    assert.throws(() => routeTopK(logits, 2, 4, 5, idx, w), /top-5 routing over 4 experts/);
  });

  test('top-1 gives weight 1; top-E weights are the softmax itself', () => {
    const logits = [0.1, -0.4, 0.9], idx = new Int32Array(3), w = new Float64Array(3);
    routeTopK(logits, 1, 3, 1, idx, w);
    assert.deepEqual([idx[0], w[0]], [2, 1]);
    routeTopK(logits, 1, 3, 3, idx, w);
    const z = logits.reduce((a, v) => a + Math.exp(v), 0);
    for (let j = 0; j < 3; j++) assert.ok(Math.abs(w[j]! - Math.exp(logits[idx[j]!]!) / z) < 1e-15);
  });
});

describe('engine forward', () => {
  for (const dtype of ['f32', 'bf16'] as const) {
    test(`random Mixtral (8 experts, top-2, ${dtype}) equals the float64 reference`, () => {
      const m = randomMixtral({ ...spec, dtype });
      const tokens = ids(24, 1);
      const model = buildModel(m.config, m.src);
      const ours = model.forward(tokens, model.newCache(), { logits: 'all' });
      const ref = referenceLogits(m, tokens, undefined, referenceMoe(m, 8, 2));
      let worst = 0;
      for (let t = 0; t < tokens.length; t++) worst = Math.max(worst, maxAbsDiff(ours.subarray(t * 64, (t + 1) * 64), ref[t]!));
      assert.ok(worst < 2e-4, `max |Δ logit| ${worst}`);
    });
  }

  test('prefill and token-by-token decode agree; every expert is used somewhere', () => {
    const m = randomMixtral(spec);
    const model = buildModel(m.config, m.src);
    const tokens = ids(40, 2);
    const all = model.forward(tokens, model.newCache(), { logits: 'all' }).slice();
    const used = new Set(model.layers[0]!.mlp instanceof MoeMlp ? [...(model.layers[0]!.mlp).lastRouting(40).idx] : []);
    assert.equal(used.size, 8, 'the test routes tokens to every expert of layer 0');
    const cache = model.newCache();
    for (let t = 0; t < tokens.length; t++) {
      const last = model.forward([tokens[t]!], cache);
      assert.ok(maxAbsDiff(last, all.subarray(t * 64, (t + 1) * 64)) < 1e-4, `position ${t}`);
    }
  });

  test("an expert's matrices are read only for tokens routed to it", () => {
    const m = randomMixtral(spec);
    const model = buildModel(m.config, m.src);
    const tokens = ids(2, 3);
    const oneBefore = model.forward([tokens[0]!], model.newCache()).slice();
    const before = model.forward(tokens, model.newCache(), { logits: 'all' }).slice();
    const moe = model.layers[0]!.mlp as MoeMlp;
    const used = new Set(moe.lastRouting(2).idx);
    assert.ok(used.size <= 4);
    // Poison every expert no token chose: a read of any of them would make the logits NaN.
    for (let e = 0; e < 8; e++) {
      if (used.has(e)) continue;
      for (const lin of [moe.experts[e]!.gate, moe.experts[e]!.up, moe.experts[e]!.down]) (lin.weight.data as Float32Array).fill(NaN);
    }
    const after = model.forward(tokens, model.newCache(), { logits: 'all' });
    assert.equal(maxAbsDiff(after, before), 0);
    // The decode path (one token, no gather) too.
    const one = model.forward([tokens[0]!], model.newCache());
    assert.equal(maxAbsDiff(one, oneBefore), 0);
  });

  test('decode reads the router and 2 of 8 experts: decodeWeightBytes, flops, bench bytes per step', () => {
    const m = randomMixtral(spec);
    const model = buildModel(m.config, m.src);
    const D = 48, I = 40, E = 8, k = 2;
    const moe = model.layers[0]!.mlp as MoeMlp;
    assert.equal(moe.decodeWeightBytes(), 4 * (E * D + k * 3 * I * D));
    assert.equal(moe.flops(5), 2 * 5 * (E * D + k * 3 * I * D));
    assert.equal(moe.paramCount(), E * D + E * 3 * I * D);
    // The same model with all 8 experts per token reads 4× the expert bytes.
    const dense = randomMixtral({ ...spec, topK: 8 });
    const all = buildModel(dense.config, dense.src);
    const attn = model.layers.reduce((n, l) => n + l.attn.decodeWeightBytes() + l.inputNorm.byteLength + l.postNorm.byteLength, 0);
    const rest = model.head.weightBytes() + model.norm.byteLength + D * 4;
    assert.equal(decodeStepWeightBytes(model), rest + attn + 2 * 4 * (E * D + 2 * 3 * I * D));
    assert.equal(decodeStepWeightBytes(all), rest + attn + 2 * 4 * (E * D + 8 * 3 * I * D));
  });

  test('inspect names the experts', () => {
    const m = randomMixtral(spec);
    const dir = join(tmp, 'inspect');
    mkdirSync(dir);
    writeSafetensors(join(dir, 'model.safetensors'), m.src.names().map((name) => ({ name, tensor: m.src.get(name) })));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(m.json));
    const d = describeModel(loadModel(dir));
    assert.equal(d.mlp, 'MoE: 8 experts × 40, top-2');
    assert.match(formatModelReport(d), /architecture mixtral: 2 layers, hidden 48, MLP MoE: 8 experts × 40, top-2, vocab 64/);
    assert.equal(d.params, m.src.names().reduce((n, x) => n + m.src.get(x).data.length, 0));
  });

  test('the same experts load under DeepSeek-V2 names (mlp.gate, mlp.experts.N.{gate,up,down}_proj) and compute the same', () => {
    const m = randomMixtral({ ...spec, layers: 1 });
    const rename = (n: string): string => n.replace('block_sparse_moe.gate', 'mlp.gate').replace(/block_sparse_moe\.experts\.(\d+)\.w([123])/, (_, e, w) => `mlp.experts.${e}.${({ 1: 'gate', 2: 'down', 3: 'up' } as Record<string, string>)[w]}_proj`);
    const map = new Map([...m.src.map].map(([n, t]) => [rename(n), t]));
    assert.ok(map.has('model.layers.0.mlp.experts.3.up_proj.weight') && map.has('model.layers.0.mlp.gate.weight'));
    const shape = { hidden: 48, expertInter: 40, numExperts: 8, topK: 2 };
    const a = MoeMlp.load(m.src, mixtralMoeNames('model.layers.0'), shape);
    const b = MoeMlp.load({ names: () => [...map.keys()], has: (n) => map.has(n), get: (n) => map.get(n)! }, deepseekMoeNames('model.layers.0'), shape);
    const x = Float32Array.from({ length: 5 * 48 }, (_, i) => Math.sin(i)), ya = new Float32Array(5 * 48), yb = new Float32Array(5 * 48);
    a.forward(x, 5, ya, new Workspace());
    b.forward(x, 5, yb, new Workspace());
    assert.equal(maxAbsDiff(ya, yb), 0);
    assert.ok(ya.some((v) => v !== 0));
  });

  test('a checkpoint missing an expert or with an expert bias is refused by name', () => {
    const m = randomMixtral({ ...spec, layers: 1 });
    const gone = new Map(m.src.map);
    gone.delete('model.layers.0.block_sparse_moe.experts.7.w2.weight');
    assert.throws(() => buildModel(m.config, { names: () => [...gone.keys()], has: (n) => gone.has(n), get: (n) => gone.get(n)! }), /no tensor "model\.layers\.0\.block_sparse_moe\.experts\.7\.w2\.weight"/);
    const biased = new Map(m.src.map);
    biased.set('model.layers.0.block_sparse_moe.experts.0.w1.bias', { dtype: 'f32', shape: [40], data: new Float32Array(40) });
    assert.throws(() => buildModel(m.config, { names: () => [...biased.keys()], has: (n) => biased.has(n), get: (n) => biased.get(n)! }), /experts\.0\.w1\.bias"; mixture-of-experts layers have no biases/);
  });
});

describe('GGUF', () => {
  const vocabDir = assetPath('models/TinyStories-656K');
  const skip = vocabDir ? false : 'asset models/TinyStories-656K missing (its vocabulary is used)';

  test('stacked experts: names, shapes, metadata; read back as the same model; llama GGUFs stay llama', { skip }, () => {
    const m = randomMixtral({ ...spec, vocab: 2048, dtype: 'bf16' });
    const gguf = join(tmp, 'mixtral.gguf');
    exportMixtralGguf(gguf, m.config, m.src, vocabDir!, { outType: 'bf16' });
    const f = readGguf(gguf);
    assert.equal(f.getString('general.architecture'), 'llama');
    assert.deepEqual([f.getNumber('llama.expert_count'), f.getNumber('llama.expert_used_count'), f.getNumber('llama.feed_forward_length')], [8, 2, 40]);
    assert.deepEqual(f.tensorInfo('blk.1.ffn_gate_inp.weight').ne, [48, 8]);
    assert.deepEqual(f.tensorInfo('blk.1.ffn_gate_exps.weight').ne, [48, 40, 8]);
    assert.deepEqual(f.tensorInfo('blk.1.ffn_up_exps.weight').ne, [48, 40, 8]);
    assert.deepEqual(f.tensorInfo('blk.1.ffn_down_exps.weight').ne, [40, 48, 8]);
    assert.ok(!f.has('blk.0.ffn_gate.weight'));
    // Expert 5's slab of the stacked tensor is its w3 (up) matrix, bit for bit.
    const slab = f.readTensorSlab('blk.1.ffn_up_exps.weight', 5);
    assert.deepEqual(slab.shape, [40, 48]);
    assert.deepEqual(slab.data, m.src.get('model.layers.1.block_sparse_moe.experts.5.w3.weight').data);
    const g = openGgufModel(gguf);
    assert.equal(g.config.family, 'mixtral');
    assert.deepEqual((g.config as MixtralArgs).moe, { numExperts: 8, topK: 2, routerJitterNoise: 0 });
    const tokens = ids(16, 4);
    const a = buildModel(m.config, m.src), b = buildModel(g.config, g.weights);
    assert.equal(maxAbsDiff(a.forward(tokens, a.newCache(), { logits: 'all' }).slice(), b.forward(tokens, b.newCache(), { logits: 'all' })), 0);
    assert.equal(g.config.raw.model_type, 'mixtral');
    // A dense llama GGUF still opens as the Llama family.
    const l = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, inter: 48, vocab: 2048, layers: 1 });
    const lg = join(tmp, 'llama.gguf');
    exportLlamaGguf(lg, l.config, l.src, vocabDir!, { outType: 'f32' });
    assert.equal(openGgufModel(lg).config.family, 'llama');
  });

  test('the tensor list puts each layer\'s router and experts after its ffn_norm, in expert order', () => {
    const m = randomMixtral({ ...spec, experts: 3, layers: 1 });
    const specs = mixtralGgufTensors(m.config, 'llama', 'model.embed_tokens.weight');
    const names = specs.map((s) => s.gguf);
    const i = names.indexOf('blk.0.ffn_norm.weight');
    assert.deepEqual(names.slice(i, i + 11), ['blk.0.ffn_norm.weight', 'blk.0.ffn_gate_inp.weight', ...['gate', 'up', 'down'].flatMap((k) => Array(3).fill(`blk.0.ffn_${k}_exps.weight`))]);
    assert.deepEqual(specs.slice(i + 8, i + 11).map((s) => [s.hf, s.stack!.index]), [0, 1, 2].map((e) => [`model.layers.0.block_sparse_moe.experts.${e}.w2.weight`, e]));
  });

  test('a GGUF whose tensors disagree with its expert_count is refused by name', { skip }, () => {
    const seven = randomMixtral({ ...spec, vocab: 2048, layers: 1, experts: 7 });
    const gguf = join(tmp, 'bad-count.gguf');
    exportLlamaGguf(gguf, seven.config, seven.src, vocabDir!, {
      outType: 'f32',
      variant: {
        tensors: (_c, arch, emb) => mixtralGgufTensors(seven.config, arch, emb),
        metadata: (arch) => [{ key: `${arch}.expert_count`, type: 'u32', value: 8 }, { key: `${arch}.expert_used_count`, type: 'u32', value: 2 }],
      },
    });
    assert.throws(() => openGgufModel(gguf), /bad-count\.gguf: tensor blk\.0\.ffn_gate_inp\.weight has shape \[7, 48\], expected \[8, 48\]/);
    assert.throws(() => exportMixtralGguf(join(tmp, 'x.gguf'), { ...seven.config, moe: { ...seven.config.moe, numExperts: 8 } }, seven.src, vocabDir!, { outType: 'f32' }), /the checkpoint has no tensor "model\.layers\.0\.block_sparse_moe\.experts\.7\.w1\.weight"/);
  });
});

test('both conversions take Mixtral sources (test/mixtral-convert.test.ts converts one)', () => {
  const m = randomMixtral(spec);
  assert.doesNotThrow(() => requireConversion(m.config, 'transmla', 'dir'));
  assert.doesNotThrow(() => requireConversion(m.config, 'mha2mla', 'dir'));
});

test('kjv-mixtral: the bf16 GGUF computes the folder\'s logits exactly', { skip: assetPath('models/kjv-mixtral') ? false : 'asset models/kjv-mixtral missing' }, () => {
  const dir = assetPath('models/kjv-mixtral')!;
  const folder = loadModel(dir);
  const gguf = join(tmp, 'kjv-mixtral.gguf');
  const ck = openCheckpoint(dir);
  try { exportMixtralGguf(gguf, folder.config as MixtralArgs, ck, dir, { outType: 'bf16' }); } finally { ck.close(); }
  const back = loadModel(gguf);
  assert.equal(back.config.family, 'mixtral');
  const tokens = folder.tokenizer!.encode('In the beginning God created the heaven and the earth.', { addBos: true });
  const a = folder.model.forward(tokens, folder.model.newCache(), { logits: 'all' }).slice();
  const b = back.model.forward(tokens, back.model.newCache(), { logits: 'all' });
  assert.equal(maxAbsDiff(a, b), 0);
  assert.ok(logSoftmax(a.subarray(0, 32000)).every(Number.isFinite));
});
