// Mixtral sources through both conversions: the attention converts as for Llama, the router and
// experts are carried unchanged (calibration runs through them), the default stock output is the
// DeepSeek-V2 MoE layout with Mixtral's routing spelled as vLLM/SGLang read it plus an all-zero
// shared expert, and every output reloads with the perplexity the conversion measured.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseMlaMoe } from '../src/arch/deepseek-moe.js';
import { loadModel } from '../src/arch/load.js';
import { requireConversion } from '../src/arch/registry.js';
import { convertModel } from '../src/convert/transmla.js';
import { convertMha2mla } from '../src/convert/mha2mla.js';
import { perplexity, tokenizeForPerplexity } from '../src/eval/perplexity.js';
import { exportModel } from '../src/export/targets.js';
import { finetune } from '../src/train/finetune.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { widen } from '../src/models/weights.js';
import { MoeMlp } from '../src/models/moe.js';
import { SharedExpertMoe } from '../src/models/moe-shared.js';
import { mustAsset, skipUnlessAsset } from './helpers/assets.js';
import { checkMoe } from '../src/validate/moe-rules.js';
import { validateFolder } from '../src/validate/validate.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-mixtral-conv-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const skip = skipUnlessAsset('models/kjv-mixtral') || skipUnlessAsset('text/kjv-old-testament-calib.txt') || skipUnlessAsset('text/kjv-new-testament-eval.txt');

function evalFile(): string {
  const p = join(tmp, 'eval.txt');
  if (!existsSync(p)) writeFileSync(p, readFileSync(mustAsset('text/kjv-new-testament-eval.txt'), 'utf8').split('\n\n').slice(0, 6).join('\n\n'));
  return p;
}
const small = { kvFraction: 0.25, ropeDim: 16, freqFold: 4, calibSamples: 6, calibSeqLen: 64, seed: 3, evalCtx: 64, evalChunks: 2 } as const;

async function reloadedPpl(folder: string, ctx: number, chunks: number): Promise<number> {
  const m = loadModel(folder);
  const { ids, bos } = tokenizeForPerplexity(m.tokenizer!, readFileSync(evalFile(), 'utf8'));
  return (await perplexity(m.model, ids, bos, { ctx, maxChunks: chunks })).ppl;
}

describe('Mixtral sources', { skip }, () => {
  test('TransMLA default: a DeepSeek-V2 MoE folder with Mixtral routing, experts carried bit for bit, reloading with the measured stock perplexity', async () => {
    const src = mustAsset('models/kjv-mixtral');
    assert.doesNotThrow(() => requireConversion(loadModel(src).config, 'transmla', src));
    const out = join(tmp, 'stock');
    const r = await convertModel({ model: src, out, calib: mustAsset('text/kjv-old-testament-calib.txt'), evalTexts: [{ path: evalFile(), mode: 'file' }], ...small });
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.model_type, 'deepseek_v2');
    assert.deepEqual(cfg.architectures, ['DeepseekV2ForCausalLM']);
    for (const [k, v] of Object.entries({ n_routed_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 512, scoring_func: 'softmax', topk_method: 'greedy', norm_topk_prob: true, n_group: 1, topk_group: 1, routed_scaling_factor: 1, first_k_dense_replace: 0, moe_layer_freq: 1, n_shared_experts: 1 })) {
      assert.equal(cfg[k], v, k);
    }
    const a = openCheckpoint(src), b = openCheckpoint(out);
    try {
      for (let l = 0; l < 6; l++) {
        const s = `model.layers.${l}.block_sparse_moe`, d = `model.layers.${l}.mlp`;
        assert.deepEqual(widen(b.get(`${d}.gate.weight`)), widen(a.get(`${s}.gate.weight`)));
        for (const [w, n] of [['w1', 'gate_proj'], ['w3', 'up_proj'], ['w2', 'down_proj']] as const) {
          assert.deepEqual(b.get(`${d}.experts.3.${n}.weight`).data, a.get(`${s}.experts.3.${w}.weight`).data, `layer ${l} ${w}`);
          assert.ok(widen(b.get(`${d}.shared_experts.${n}.weight`)).every((x) => x === 0), 'the shared expert is zero');
        }
        assert.equal(b.has(`${s}.gate.weight`), false);
      }
    } finally {
      a.close();
      b.close();
    }
    // validate: which engines compute Mixtral's routing from these keys.
    const v = validateFolder(out);
    assert.equal(v.engines.find((e) => e.engine === 'transformers')!.correct, false);
    assert.match(v.findings.find((f) => f.rule === 'moe-routing')!.message, /softmax over 4 experts, top-2 renormalised \(Mixtral's routing\); transformers computes other expert weights/);
    assert.match(v.findings.find((f) => f.rule === 'moe-routing-engines')!.message, /computed as stated by vllm, sglang, llama\.cpp/);
    assert.equal(v.engines.find((e) => e.engine === 'llama.cpp')!.correct, true);
    assert.equal(v.findings.some((f) => f.rule === 'expert-tensors' || f.rule === 'moe-shared-experts'), false);
    const loaded = loadModel(out);
    assert.equal(loaded.mla?.semantics, 'stock');
    assert.ok(loaded.model.layers[0]!.mlp instanceof SharedExpertMoe);
    const ev = r.stockExport!.evaluations[0]!;
    const p = await reloadedPpl(out, ev.ctx, ev.chunks);
    assert.ok(Math.abs(p - ev.stock.ppl) <= 1e-6 * ev.stock.ppl, `reloaded ${p} vs measured ${ev.stock.ppl}`);
    // finetune --train attention on it: the MLA projections move; router, experts (routed and the
    // zero shared one), norms and embeddings do not.
    const ft = join(tmp, 'ft');
    await finetune({ log: () => {}, model: out, out: ft, text: evalFile(), train: 'attention', steps: 2, batch: 1, seqLen: 32, lr: 1e-2 });
    const c0 = openCheckpoint(out), c1 = openCheckpoint(ft);
    try {
      const moved = c0.names().filter((n) => {
        const a = widen(c0.get(n)), b = widen(c1.get(n));
        return a.some((x, i) => x !== b[i]);
      });
      assert.ok(moved.length > 0 && moved.every((n) => /\.self_attn\.(q_proj|kv_a_proj_with_mqa|kv_a_layernorm|kv_b_proj)\.weight$/.test(n)), moved.join(', '));
    } finally {
      c0.close();
      c1.close();
    }
  });

  test('--variant exact keeps the Mixtral keys and expert names; export --target deepseek-v3 writes the DeepSeek-V2 MoE folder from it', async () => {
    const out = join(tmp, 'exact');
    const r = await convertModel({ model: mustAsset('models/kjv-mixtral'), out, variant: 'exact', calib: mustAsset('text/kjv-old-testament-calib.txt'), evalTexts: [{ path: evalFile(), mode: 'file' }], ...small });
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.model_type, 'transmla_mla');
    assert.equal(cfg.num_local_experts, 4);
    assert.equal(cfg.n_routed_experts, undefined, 'no dense filler contradicting the experts');
    const m = loadModel(out);
    assert.ok(m.model.layers[5]!.mlp instanceof MoeMlp);
    const ev = r.evaluations[0]!;
    const p = await reloadedPpl(out, ev.ctx, ev.chunks);
    assert.ok(Math.abs(p - ev.mla.ppl) <= 1e-6 * ev.mla.ppl, `reloaded ${p} vs measured ${ev.mla.ppl}`);
    const stock = join(tmp, 'exact-exported');
    await exportModel({ target: 'deepseek-v3', model: out, out: stock, calibSamples: 6, calibSeqLen: 64, seed: 3, evalCtx: 64, evalChunks: 1 });
    const sc = JSON.parse(readFileSync(join(stock, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(sc.model_type, 'deepseek_v2');
    assert.equal(loadModel(stock).model.layers[0]!.mlp instanceof SharedExpertMoe, true);
  });

  test('MHA2MLA: the variant carries the experts and reloads with the measured perplexity', async () => {
    const out = join(tmp, 'mha2mla');
    const r = await convertMha2mla({ model: mustAsset('models/kjv-mixtral'), out, calib: mustAsset('text/kjv-old-testament-calib.txt'), evalTexts: [{ path: evalFile(), mode: 'file' }], kvFraction: 0.25, calibSamples: 6, calibSeqLen: 64, seed: 3, evalCtx: 64, evalChunks: 2 });
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.model_type, 'llama_mha2mla');
    assert.equal(cfg.num_local_experts, 4);
    assert.equal(cfg.rope_theta, 1e6);
    const m = loadModel(out);
    assert.ok(m.model.layers[0]!.mlp instanceof MoeMlp);
    const ev = r.evaluations[0]!;
    const p = await reloadedPpl(out, ev.ctx, ev.chunks);
    assert.ok(Math.abs(p - ev.mla.ppl) <= 1e-6 * ev.mla.ppl, `reloaded ${p} vs measured ${ev.mla.ppl}`);
  });
});

test('stock MoE configs whose routing is not Mixtral\'s are refused by field', () => {
  const base = { n_routed_experts: 8, num_experts_per_tok: 2, moe_intermediate_size: 64, first_k_dense_replace: 0, norm_topk_prob: true, scoring_func: 'softmax', topk_method: 'greedy', n_group: 1, topk_group: 1, routed_scaling_factor: 1, n_shared_experts: null };
  assert.deepEqual(parseMlaMoe(base, 'c.json', 4, false), { naming: 'deepseek', numExperts: 8, topK: 2, expertInter: 64, sharedExperts: 0, firstDense: 0 });
  assert.equal(parseMlaMoe({ ...base, first_k_dense_replace: 4 }, 'c.json', 4, false), null, 'all layers dense');
  for (const [k, v, re] of [
    ['scoring_func', 'sigmoid', /c\.json: scoring_func is "sigmoid": this engine runs mixture-of-experts layers with Mixtral's routing only \(softmax scores/],
    ['norm_topk_prob', false, /norm_topk_prob is false: .*renormalised/],
    ['routed_scaling_factor', 2.5, /routed_scaling_factor is 2\.5/],
    ['topk_method', 'noaux_tc', /topk_method is "noaux_tc"/],
    ['n_group', 8, /n_group is 8/],
    ['moe_layer_freq', 2, /moe_layer_freq is 2/],
  ] as const) {
    assert.throws(() => parseMlaMoe({ ...base, [k]: v }, 'c.json', 4, false), re, k);
  }
});

test('--target deepseek-v2 asks for the MoE layout: a dense source is refused with the target it has', { skip: skipUnlessAsset('models/kjv-gqa') }, async () => {
  await assert.rejects(exportModel({ target: 'deepseek-v2', model: mustAsset('models/kjv-gqa'), out: join(tmp, 'never') }), /--target deepseek-v2 is the mixture-of-experts layout; .*kjv-gqa has dense MLPs, whose stock folder is --target deepseek-v3/);
});

test('validate: n_shared_experts null fails SGLang, transformers and llama.cpp\'s converter; sigmoid scoring is computed as stated by vLLM only with transformers\' V3', () => {
  const d = { layers: 1, hidden: 8, heads: 1, vocab: 10, intermediate: 4, kvLoraRank: 4, qLoraRank: null, qkRopeHeadDim: 2, qkNopeHeadDim: 2, vHeadDim: 2, denseLayers: 0 };
  const tensors = new Map([['model.layers.0.mlp.gate.weight', { dtype: 'F32', shape: [2, 8] }]]);
  for (let e = 0; e < 2; e++) for (const [n, sh] of [['gate_proj', [4, 8]], ['up_proj', [4, 8]], ['down_proj', [8, 4]]] as const) tensors.set(`model.layers.0.mlp.experts.${e}.${n}.weight`, { dtype: 'F32', shape: [...sh] });
  const c = { model_type: 'deepseek_v2', n_routed_experts: 2, num_experts_per_tok: 1, moe_intermediate_size: 4, norm_topk_prob: true, n_shared_experts: null };
  const f = checkMoe(c, d, tensors, 0);
  assert.deepEqual(f.find((x) => x.rule === 'moe-shared-experts')!.impact, { transformers: 'will-not-load', sglang: 'will-not-load', 'llama.cpp': 'will-not-load' });
  assert.equal(f.some((x) => x.rule === 'expert-tensors'), false);
  const g = checkMoe({ ...c, model_type: 'deepseek_v3', scoring_func: 'sigmoid', n_shared_experts: 0 }, d, tensors, 0);
  assert.deepEqual(g.find((x) => x.rule === 'moe-routing')!.impact, { 'llama.cpp': 'incorrect' });
  tensors.delete('model.layers.0.mlp.experts.1.up_proj.weight');
  assert.match(checkMoe(c, d, tensors, 0).find((x) => x.rule === 'expert-tensors')!.message, /1 expert tensor\(s\) missing \(model\.layers\.0\.mlp\.experts\.1\.up_proj\.weight\)/);
});
