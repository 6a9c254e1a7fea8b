// transmla validate: tiny DeepSeek-V3 folders (zero weights, only names/shapes/dtypes matter),
// one per verdict and rule, checked through the CLI (exit code and --json) and the library.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { writeGguf, type GgufMetadataEntry } from '../src/io/gguf.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import type { FloatDType } from '../src/kernels/types.js';
import type { Tensor } from '../src/tensor.js';
import { validatePath, type ValidateReport } from '../src/validate/validate.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-validate-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const D = 16, H = 2, DN = 64, DV = 8, I = 32, V = 64, L = 2;

interface Spec {
  r?: number;
  dR?: number;
  dtype?: FloatDType;
  /** Tensor names to leave out (a substring match). */
  drop?: string[];
  extra?: Record<string, number[]>;
  config?: Record<string, unknown>;
  transmlaJson?: boolean;
}

const zeros = (shape: number[], dtype: FloatDType): Tensor => {
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype, shape, data: dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n) };
};

let count = 0;
/** A strict DeepSeek-V3 folder (stock engines' layout) with the spec's changes. */
function folder(spec: Spec = {}): string {
  const r = spec.r ?? 512, dR = spec.dR ?? 64, dtype = spec.dtype ?? 'bf16';
  const dir = join(tmp, `m${count++}`);
  mkdirSync(dir);
  const shapes: Record<string, number[]> = { 'model.embed_tokens.weight': [V, D], 'model.norm.weight': [D], 'lm_head.weight': [V, D] };
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    Object.assign(shapes, {
      [`${p}.input_layernorm.weight`]: [D], [`${p}.post_attention_layernorm.weight`]: [D],
      [`${p}.self_attn.q_proj.weight`]: [H * (DN + dR), D],
      [`${p}.self_attn.kv_a_proj_with_mqa.weight`]: [r + dR, D],
      [`${p}.self_attn.kv_a_layernorm.weight`]: [r],
      [`${p}.self_attn.kv_b_proj.weight`]: [H * (DN + DV), r],
      [`${p}.self_attn.o_proj.weight`]: [D, H * DV],
      [`${p}.mlp.gate_proj.weight`]: [I, D], [`${p}.mlp.up_proj.weight`]: [I, D], [`${p}.mlp.down_proj.weight`]: [D, I],
    });
  }
  Object.assign(shapes, spec.extra ?? {});
  const tensors = new Map<string, Tensor>();
  for (const [n, s] of Object.entries(shapes)) if (!(spec.drop ?? []).some((d) => n.includes(d))) tensors.set(n, zeros(s, dtype));
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  const config = {
    architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3',
    hidden_size: D, intermediate_size: I, num_hidden_layers: L, num_attention_heads: H, num_key_value_heads: H,
    vocab_size: V, kv_lora_rank: r, q_lora_rank: null, qk_rope_head_dim: dR, qk_nope_head_dim: DN, v_head_dim: DV,
    rope_theta: 10000, rope_scaling: null, rope_interleave: true, rms_norm_eps: 1e-6, max_position_embeddings: 256,
    first_k_dense_replace: L, n_routed_experts: 1, n_shared_experts: 1, num_experts_per_tok: 1, moe_intermediate_size: I,
    tie_word_embeddings: false, torch_dtype: dtype === 'f32' ? 'float32' : dtype === 'f16' ? 'float16' : 'bfloat16',
    ...spec.config,
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  writeFileSync(join(dir, 'tokenizer.json'), '{}');
  if (spec.transmlaJson) writeFileSync(join(dir, 'transmla.json'), JSON.stringify({ method: 'TransMLA, exact variant without kv_a_layernorm' }));
  return dir;
}

/** Runs the CLI; returns the exit code and the parsed --json report (or the text). */
function cli(args: string[]): { code: number; out: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'validate', ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout + r.stderr };
}
function cliJson(path: string, ...flags: string[]): { code: number; report: ValidateReport } {
  const { code, out } = cli([path, '--json', ...flags]);
  return { code, report: JSON.parse(out) as ValidateReport };
}

const engine = (r: ValidateReport, e: string) => r.engines.find((x) => x.engine === e)!;
const rules = (r: ValidateReport): string[] => r.findings.map((f) => f.rule);
/** [loads, correct, fastPath] per engine. */
const table = (r: ValidateReport): Record<string, [boolean, boolean | 'unknown', boolean]> =>
  Object.fromEntries(r.engines.map((e) => [e.engine, [e.loads, e.correct, e.fastPath]]));

describe('validate: HF folders', () => {
  it('a strict 512 + 64 folder passes every engine, fast kernels usable (exit 0)', () => {
    const { code, report } = cliJson(folder());
    assert.equal(code, 0);
    assert.equal(report.ok, true);
    assert.deepEqual(table(report), {
      transformers: [true, true, false], vllm: [true, true, true], sglang: [true, true, true], 'llama.cpp': [true, true, true],
    });
    assert.deepEqual(engine(report, 'vllm').reasons, []);
    assert.deepEqual(engine(report, 'vllm').kernels!.filter((k) => !k.usable), []);
    assert.deepEqual(rules(report), ['transformers-cache']);
  });

  it('the exact variant (no kv_a_layernorm, qk_latent_layernorm: false) is incorrect or unloadable, and names the export fix', () => {
    const dir = folder({ drop: ['kv_a_layernorm'], config: { qk_latent_layernorm: false }, transmlaJson: true });
    const { code, report } = cliJson(dir);
    assert.equal(code, 1);
    assert.deepEqual(table(report), {
      transformers: [true, false, false], vllm: [false, 'unknown', false], sglang: [true, false, true], 'llama.cpp': [false, 'unknown', false],
    });
    assert.deepEqual(rules(report), ['kv-a-layernorm', 'custom-keys', 'transformers-cache', 'transmla-report']);
    assert.equal(engine(report, 'vllm').reasons[0],
      'will-not-load: no self_attn.kv_a_layernorm.weight in any of the 2 layers (transmla\'s exact variant, which uses the latent without a norm); ' +
      'stock DeepSeek code always RMS-normalises the latent before kv_b_proj; vLLM: loading stops with "Following weights were not initialized from checkpoint"');
    assert.deepEqual(report.fixes, [`transmla export ${dir} --target deepseek-v3 (writes a calibrated kv_a_layernorm)`]);
    // The text form: the table, the reasons, the fix and the verdict.
    const text = cli([dir]);
    assert.equal(text.code, 1);
    assert.match(text.out, /vLLM \(DeepseekV3ForCausalLM, MLA backends\) +NO +- +-/);
    assert.match(text.out, /suggested fixes:\n {2}- transmla export .* --target deepseek-v3/);
    assert.match(text.out, /verdict: will not load correctly on transformers \(computes something else\), vllm \(will not load\), sglang \(computes something else\), llama\.cpp \(will not load\)/);
  });

  it('a small latent (16 + 8) has no vLLM backend and only SGLang\'s triton; --engines narrows the exit code', () => {
    const dir = folder({ r: 16, dR: 8 });
    const { code, report } = cliJson(dir);
    assert.equal(code, 1);
    assert.deepEqual(table(report), {
      transformers: [true, true, false], vllm: [false, 'unknown', false], sglang: [true, true, false], 'llama.cpp': [true, true, true],
    });
    assert.match(engine(report, 'vllm').reasons[0]!, /^will-not-load: kv_lora_rank 16 \+ qk_rope_head_dim 8 = 24: every vLLM MLA backend accepts only head size 576/);
    assert.match(engine(report, 'sglang').reasons[0]!, /^not-fast: .*start it with --attention-backend triton$/);
    assert.deepEqual(engine(report, 'sglang').kernels!.filter((k) => k.usable).map((k) => k.name), ['triton']);
    assert.equal(cliJson(dir, '--engines', 'transformers,sglang,llama.cpp').code, 0);
    assert.equal(cli([dir, '--engines', 'tgi']).code, 2);
  });

  it('256 + 64 reaches only vLLM\'s Triton MLA', () => {
    const r = validatePath(folder({ r: 256 }));
    assert.deepEqual(table(r).vllm, [true, true, false]);
    assert.deepEqual(engine(r, 'vllm').kernels!.filter((k) => k.usable).map((k) => k.name), ['TRITON_MLA']);
  });

  it('rotate-half RoPE and non-YaRN rope_scaling are right only in transformers', () => {
    for (const config of [{ rope_interleave: false }, { rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 128 } }]) {
      const r = validatePath(folder({ config }));
      assert.deepEqual(Object.values(table(r)).map((t) => t[1]), [true, false, false, false], JSON.stringify(config));
      assert.equal(r.ok, false);
    }
    const yarn = validatePath(folder({ config: { rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 64 } } }));
    assert.equal(yarn.ok, true);
    assert.deepEqual(rules(yarn), ['rope-scaling-yarn', 'transformers-cache']);
  });

  it('attention biases: per engine, which bias tensors it keeps, drops or refuses', () => {
    const r = validatePath(folder({ extra: { 'model.layers.0.self_attn.q_proj.bias': [H * (DN + 64)] } }));
    assert.deepEqual(table(r), {
      transformers: [true, false, false], vllm: [true, false, true], sglang: [true, false, true], 'llama.cpp': [false, 'unknown', false],
    });
    const f = r.findings.find((x) => x.rule === 'biases')!;
    const none = { keeps: [], drops: [], refuses: [] };
    assert.deepEqual(f.biases, {
      transformers: { ...none, drops: ['self_attn.q_proj.bias'] }, vllm: { ...none, drops: ['self_attn.q_proj.bias'] },
      sglang: { ...none, drops: ['self_attn.q_proj.bias'] }, 'llama.cpp': { ...none, refuses: ['self_attn.q_proj.bias'] },
    });
    assert.match(engine(r, 'transformers').reasons[0]!, /transformers: drops self_attn\.q_proj\.bias \(1 layer\) \(it builds q_a_proj, kv_a_proj_with_mqa and o_proj with bias=attention_bias \(here false\)/);
    assert.match(engine(r, 'vllm').reasons[0]!, /vLLM: drops self_attn\.q_proj\.bias \(1 layer\) \(every projection is built with bias=False/);
    assert.match(engine(r, 'llama.cpp').reasons[0]!, /llama\.cpp: keeps none: .*"wrong number of tensors"/);
    // transformers keeps kv_a_proj_with_mqa/o_proj biases when attention_bias is set, and drops the others.
    const hf = validatePath(folder({ config: { attention_bias: true }, extra: { 'model.layers.1.self_attn.o_proj.bias': [D], 'model.layers.0.self_attn.o_proj.bias': [D] } }));
    assert.deepEqual(table(hf).transformers, [true, true, false]);
    assert.deepEqual(table(hf).vllm, [true, false, true]);
    assert.deepEqual(hf.findings.find((x) => x.rule === 'biases')!.biases!.transformers, { ...none, keeps: ['self_attn.o_proj.bias'] });
    assert.ok(engine(hf, 'transformers').reasons.some((x) => /^note: .*transformers: keeps self_attn\.o_proj\.bias \(2 layers\)/.test(x)));
    const mixed = validatePath(folder({ config: { attention_bias: true }, extra: { 'model.layers.0.self_attn.o_proj.bias': [D], 'model.layers.0.self_attn.q_proj.bias': [H * (DN + 64)] } }));
    assert.deepEqual(mixed.findings.find((x) => x.rule === 'biases')!.biases!.transformers, { ...none, keeps: ['self_attn.o_proj.bias'], drops: ['self_attn.q_proj.bias'] });
    assert.deepEqual(table(mixed).transformers, [true, false, false]);
  });

  it('tied embeddings without lm_head.weight: fine for transformers, fatal for vLLM, wrong in SGLang', () => {
    const { code, report } = cliJson(folder({ drop: ['lm_head'], config: { tie_word_embeddings: true } }));
    assert.equal(code, 1);
    assert.deepEqual(table(report), {
      transformers: [true, true, false], vllm: [false, 'unknown', false], sglang: [true, false, true], 'llama.cpp': [true, true, true],
    });
    assert.deepEqual(report.fixes, ['write lm_head.weight (a copy of model.embed_tokens.weight)']);
  });

  it('will not load: wrong shapes, missing weights, unsupported model_type, MoE layers without experts', () => {
    const shape = validatePath(folder({ extra: { 'model.layers.1.self_attn.kv_b_proj.weight': [H * (DN + DV), 256] } }));
    assert.deepEqual(Object.values(table(shape)).map((t) => t[0]), [false, false, false, false]);
    assert.equal(shape.findings[0]!.message,
      '1 tensor(s) do not match config.json: model.layers.1.self_attn.kv_b_proj.weight is [144, 256], the config implies [144, 512]');

    const missing = validatePath(folder({ drop: ['layers.1.self_attn.o_proj'] }));
    assert.deepEqual(table(missing).transformers, [true, false, false]);
    assert.deepEqual(table(missing).vllm, [false, 'unknown', false]);

    const mha2mla = validatePath(folder({ config: { model_type: 'llama_mha2mla', architectures: ['LlamaMHA2MLAForCausalLM'] } }));
    assert.deepEqual(rules(mha2mla), ['model-type']);
    assert.deepEqual(Object.values(table(mha2mla)).map((t) => t[0]), [false, false, false, false]);

    const moe = validatePath(folder({ config: { first_k_dense_replace: 1 } }));
    assert.ok(rules(moe).includes('dense-layers'));
    assert.deepEqual(table(moe).vllm[0], false);

    // q_lora_rank: q_a_proj → q_a_layernorm → q_b_proj instead of q_proj.
    const qa = { 'model.layers.0.self_attn.q_a_proj.weight': [8, D], 'model.layers.0.self_attn.q_b_proj.weight': [H * (DN + 64), 8] };
    const qLora = validatePath(folder({ config: { q_lora_rank: 8 }, drop: ['q_proj'], extra: qa }));
    assert.equal(qLora.findings.find((f) => f.rule === 'missing-tensors')!.message,
      '2 weight(s) the config implies are missing: model.layers.1.self_attn.q_a_proj.weight, model.layers.1.self_attn.q_b_proj.weight');
    assert.equal(qLora.findings.find((f) => f.rule === 'missing-norms')!.message,
      '2 RMSNorm weight(s) are missing: model.layers.0.self_attn.q_a_layernorm.weight, model.layers.1.self_attn.q_a_layernorm.weight');

    const extra = validatePath(folder({ extra: { 'model.layers.0.self_attn.q_norm.weight': [DN] } }));
    assert.deepEqual(rules(extra).slice(0, 1), ['unexpected-tensors']);
    assert.deepEqual(table(extra).transformers, [true, 'unknown', false]);
    assert.deepEqual(table(extra).sglang[0], false);

    const kv = validatePath(folder({ config: { num_key_value_heads: 1, head_dim: 128 } }));
    assert.deepEqual(rules(kv).slice(0, 2), ['num-key-value-heads', 'head-dim']);
    assert.deepEqual(table(kv).transformers[0], false);
  });

  it('float32 weights are a note (vLLM/SGLang serve them in half precision), not a failure', () => {
    const r = validatePath(folder({ dtype: 'f32' }));
    assert.equal(r.ok, true);
    assert.ok(rules(r).includes('dtype-f32'));
  });
});

describe('validate: GGUF (deepseek2)', () => {
  const u32 = (key: string, value: number): GgufMetadataEntry => ({ key, type: 'u32', value });
  const r = 32, dR = 16, kHead = DN + dR;
  function gguf(o: { mla?: boolean; dropNorm?: boolean } = {}): string {
    const mla = o.mla ?? true;
    const md: GgufMetadataEntry[] = [
      { key: 'general.architecture', type: 'string', value: 'deepseek2' },
      u32('deepseek2.block_count', L), u32('deepseek2.context_length', 256), u32('deepseek2.embedding_length', D),
      u32('deepseek2.feed_forward_length', I), u32('deepseek2.attention.head_count', H),
      u32('deepseek2.attention.head_count_kv', mla ? 1 : H),
      { key: 'deepseek2.attention.layer_norm_rms_epsilon', type: 'f32', value: 1e-6 },
      u32('deepseek2.attention.kv_lora_rank', r), u32('deepseek2.rope.dimension_count', dR),
      u32('deepseek2.leading_dense_block_count', L), u32('deepseek2.expert_feed_forward_length', I),
      u32('deepseek2.expert_shared_count', 1), { key: 'deepseek2.expert_weights_scale', type: 'f32', value: 1 },
      u32('deepseek2.attention.key_length', mla ? r + dR : kHead), u32('deepseek2.attention.value_length', mla ? r : DV),
      ...(mla ? [u32('deepseek2.attention.key_length_mla', kHead), u32('deepseek2.attention.value_length_mla', DV)] : []),
      { key: 'tokenizer.ggml.model', type: 'string', value: 'gpt2' },
      { key: 'tokenizer.ggml.tokens', type: 'array', itemType: 'string', value: Array.from({ length: V }, (_, i) => `t${i}`) },
    ];
    const shapes: [string, number[]][] = [['token_embd.weight', [V, D]], ['output_norm.weight', [D]], ['output.weight', [V, D]]];
    for (let l = 0; l < L; l++) {
      const b = `blk.${l}.`;
      shapes.push([`${b}attn_norm.weight`, [D]], [`${b}ffn_norm.weight`, [D]], [`${b}attn_q.weight`, [H * kHead, D]],
        [`${b}attn_kv_a_mqa.weight`, [r + dR, D]], [`${b}attn_output.weight`, [D, H * DV]],
        [`${b}ffn_gate.weight`, [I, D]], [`${b}ffn_up.weight`, [I, D]], [`${b}ffn_down.weight`, [D, I]]);
      if (!o.dropNorm) shapes.push([`${b}attn_kv_a_norm.weight`, [r]]);
      if (mla) shapes.push([`${b}attn_k_b.weight`, [H, r, DN]], [`${b}attn_v_b.weight`, [H, DV, r]]);
      else shapes.push([`${b}attn_kv_b.weight`, [H * (DN + DV), r]]);
    }
    const path = join(tmp, `g${count++}.gguf`);
    writeGguf(path, { metadata: md, tensors: shapes.map(([name, shape]) => ({ name, tensor: zeros(shape, 'f32') })) });
    return path;
  }

  it('an MLA-form file passes llama.cpp on the latent-cache path (exit 0)', () => {
    const { code, report } = cliJson(gguf());
    assert.equal(code, 0);
    assert.deepEqual(table(report), { 'llama.cpp': [true, true, true] });
  });

  it('legacy form loads without the latent cache; a missing attn_kv_a_norm does not load (exit 1)', () => {
    const legacy = validatePath(gguf({ mla: false }));
    assert.deepEqual(table(legacy), { 'llama.cpp': [true, true, false] });
    assert.deepEqual(rules(legacy), ['gguf-legacy']);
    const { code, report } = cliJson(gguf({ dropNorm: true }));
    assert.equal(code, 1);
    assert.deepEqual(rules(report), ['gguf-kv-a-norm']);
    assert.match(report.findings[0]!.message, /^missing tensor\(s\) blk\.0\.attn_kv_a_norm\.weight, blk\.1\.attn_kv_a_norm\.weight: /);
  });
});
