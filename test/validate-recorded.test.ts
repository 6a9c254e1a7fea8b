// validate cross-checks config.json against what the folder records of its weights
// (src/validate/recorded.ts): a strict export whose rope_interleave was flipped to false is
// wrong for transformers (it honours the key) and right for vLLM, SGLang and llama.cpp (they
// always pair adjacent elements, as the rows are stored); edited MLA shapes, rope_scaling and
// torch_dtype are reported too. Unedited folders get no recorded-* finding.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadModel } from '../src/arch/load.js';
import { writeCheckpoint } from '../src/io/checkpoint.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import type { Tensor } from '../src/tensor.js';
import { formatValidateReport, validatePath, type ValidateReport } from '../src/validate/validate.js';
import { randomDeepseek } from './helpers/random-deepseek.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-validate-recorded-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const D = 16, H = 2, DN = 128, DV = 128, I = 32, V = 64, L = 2, R = 512, DR = 64;

/** What the strict export records (parameters as export/deepseek-v3.ts writes them). */
const strictReport = {
  tool: 'transmla', variant: 'deepseek-v3', method: 'strict DeepSeek-V3 export',
  parameters: { kvLoraRank: R, qLoraRank: null, qkRopeHeadDim: DR, qkNopeHeadDim: DN, vHeadDim: DV, dtype: 'bf16', ropePermuted: true, ropeScaling: 'none' },
};
const exactReport = {
  tool: 'transmla', variant: 'exact', method: 'TransMLA',
  parameters: { kvLoraRank: R, qLoraRank: null, qkRopeHeadDim: DR, qkNopeHeadDim: DN, vHeadDim: DV, dtype: 'bf16', ropeLayout: 'q_pe/k_pe rows stored as interleaved pairs (2i, 2i+1), pair i rotating at θ^(−2i/d_R) (rope_interleave: true)' },
};

let n = 0;
/** A 512 + 64 stock folder (zero bf16 weights), with the config edits and the transmla.json given. */
function folder(config: Record<string, unknown>, report: Record<string, unknown> | null): string {
  const dir = join(tmp, `f${n++}`);
  mkdirSync(dir);
  const shapes: Record<string, number[]> = { 'model.embed_tokens.weight': [V, D], 'model.norm.weight': [D], 'lm_head.weight': [V, D] };
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    Object.assign(shapes, {
      [`${p}.input_layernorm.weight`]: [D], [`${p}.post_attention_layernorm.weight`]: [D],
      [`${p}.self_attn.q_proj.weight`]: [H * (DN + DR), D], [`${p}.self_attn.kv_a_proj_with_mqa.weight`]: [R + DR, D],
      [`${p}.self_attn.kv_a_layernorm.weight`]: [R], [`${p}.self_attn.kv_b_proj.weight`]: [H * (DN + DV), R],
      [`${p}.self_attn.o_proj.weight`]: [D, H * DV],
      [`${p}.mlp.gate_proj.weight`]: [I, D], [`${p}.mlp.up_proj.weight`]: [I, D], [`${p}.mlp.down_proj.weight`]: [D, I],
    });
  }
  const tensors = new Map<string, Tensor>(Object.entries(shapes).map(([k, s]) => [k, { dtype: 'bf16', shape: s, data: new Uint16Array(s.reduce((a, b) => a * b, 1)) }]));
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3', hidden_size: D, intermediate_size: I, num_hidden_layers: L,
    num_attention_heads: H, num_key_value_heads: H, vocab_size: V, kv_lora_rank: R, q_lora_rank: null, qk_rope_head_dim: DR,
    qk_nope_head_dim: DN, v_head_dim: DV, rope_theta: 10000, rope_scaling: null, rope_interleave: true, rms_norm_eps: 1e-6,
    max_position_embeddings: 256, first_k_dense_replace: L, n_routed_experts: 1, n_shared_experts: 1, num_experts_per_tok: 1,
    moe_intermediate_size: I, tie_word_embeddings: false, torch_dtype: 'bfloat16', ...config,
  }));
  writeFileSync(join(dir, 'tokenizer.json'), '{}');
  if (report) writeFileSync(join(dir, 'transmla.json'), JSON.stringify(report));
  return dir;
}

const verdicts = (r: ValidateReport): Record<string, [boolean, boolean | 'unknown']> => Object.fromEntries(r.engines.map((e) => [e.engine, [e.loads, e.correct]]));
const recorded = (r: ValidateReport): string[] => r.findings.map((f) => f.rule).filter((x) => x.startsWith('recorded-'));

describe('validate: config.json against the folder\'s records', () => {
  it('an unedited strict export and an unedited exact folder have no contradiction', () => {
    const r = validatePath(folder({}, strictReport));
    assert.deepEqual(recorded(r), []);
    assert.equal(r.ok, true);
    assert.deepEqual(recorded(validatePath(folder({}, exactReport))), []);
  });

  it('rope_interleave flipped to false in a strict export: transformers computes something else, the engines that always pair adjacent elements do not', () => {
    const dir = folder({ rope_interleave: false }, strictReport);
    const r = validatePath(dir);
    assert.deepEqual(verdicts(r), { transformers: [true, false], vllm: [true, true], sglang: [true, true], 'llama.cpp': [true, true] });
    assert.deepEqual(recorded(r), ['recorded-rope-layout']);
    assert.ok(!r.findings.some((f) => f.rule === 'rope-layout'), 'the config-only rule (which trusts the config) gives way');
    assert.equal(r.ok, false);
    assert.deepEqual(r.fixes, ['set "rope_interleave": true in config.json (the rows are interleaved, as transmla.json records)']);
    const text = formatValidateReport(r);
    assert.match(text, /verdict: will not load correctly on transformers \(computes something else\)$/);
    assert.match(text, /transmla\.json \(variant "deepseek-v3": the strict export writes q_pe\/k_pe rows as interleaved pairs\)/);
    // Without the record, the config is all there is: the old rule's verdicts stand.
    const bare = validatePath(folder({ rope_interleave: false }, null));
    assert.deepEqual(verdicts(bare), { transformers: [true, true], vllm: [true, false], sglang: [true, false], 'llama.cpp': [true, false] });
    // The exact variant records its layout in parameters.ropeLayout.
    assert.deepEqual(verdicts(validatePath(folder({ rope_interleave: false }, exactReport))).transformers, [true, false]);
  });

  it('an edited MLA shape, rope_scaling or torch_dtype is a contradiction too', () => {
    const shape = validatePath(folder({ v_head_dim: 64, qk_nope_head_dim: 192 }, strictReport));
    assert.ok(recorded(shape).includes('recorded-shape'));
    assert.match(shape.findings.find((f) => f.rule === 'recorded-shape')!.message, /v_head_dim 64 in config\.json, 128 in transmla\.json/);
    const scaling = validatePath(folder({ rope_scaling: { type: 'linear', factor: 2 } }, strictReport));
    assert.ok(recorded(scaling).includes('recorded-rope-scaling'));
    assert.equal(scaling.engines.find((e) => e.engine === 'transformers')!.correct, false);
    const dtype = validatePath(folder({ torch_dtype: 'float16' }, strictReport));
    assert.deepEqual(recorded(dtype), ['recorded-dtype']);
  });

  it('flipping rope_interleave changes what a config-honouring engine computes (our engine honours it as transformers does)', async () => {
    const m = randomDeepseek({ hidden: 32, heads: 2, nope: 8, rope: 8, v: 8, kvLoraRank: 16, qLoraRank: null, inter: 48, vocab: 50, layers: 1, seed: 3 });
    const dirs = await Promise.all([true, false].map(async (ri) => {
      const dir = join(tmp, `ri-${ri}`);
      mkdirSync(dir);
      await writeCheckpoint(dir, [...m.src.map].map(([name, tensor]) => ({ name, tensor })));
      writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...m.json, rope_interleave: ri }));
      return dir;
    }));
    const ids = [1, 5, 9, 13, 17, 21, 25, 29];
    const [a, b] = dirs.map((d) => loadModel(d).model).map((model) => model.forward(ids, model.newCache(), { logits: 'all' }).slice());
    let worst = 0;
    for (let i = 0; i < a!.length; i++) worst = Math.max(worst, Math.abs(a![i]! - b![i]!));
    assert.ok(worst > 1e-3, `the pairing should matter: max |Δ logit| ${worst}`);
  });
});
