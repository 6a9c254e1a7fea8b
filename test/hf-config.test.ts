import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { HfConfigError } from '../src/arch/args.js';
import type { MixtralArgs } from '../src/arch/mixtral.js';
import { parseConfig, readConfig } from '../src/arch/registry.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';
import { hfModelAssets, mustAsset, skipUnlessAsset } from './helpers/assets.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-cfg-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A minimal valid llama config; tests override keys. */
function base(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    vocab_size: 100,
    ...over,
  };
}

function parseErr(cfg: unknown, re: RegExp): void {
  assert.throws(() => parseConfig(cfg, 'some/config.json'), (e: unknown) => {
    assert.ok(e instanceof HfConfigError, String(e));
    assert.match(e.message, /^some\/config\.json: /);
    assert.match(e.message, re);
    return true;
  });
}

describe('config.json of the shared models', () => {
  const models = hfModelAssets();
  test('asset models are present', { skip: skipUnlessAsset('models') }, () => assert.ok(models.length >= 4));
  // The Llama checkpoints share these; the others say how they differ.
  const differs: Record<string, { modelType: string; tied: boolean; theta: number }> = {
    'kjv-mixtral': { modelType: 'mixtral', tied: false, theta: 1e6 },
    'kjv-qwen3': { modelType: 'qwen3', tied: true, theta: 1e6 },
  };
  for (const m of models) {
    test(`${m} parses`, () => {
      const c = readConfig(mustAsset(`models/${m}`));
      const want = differs[m] ?? { modelType: 'llama', tied: true, theta: 10000 };
      assert.equal(c.modelType, want.modelType);
      assert.equal(c.tieWordEmbeddings, want.tied);
      assert.equal(c.numHeads % c.numKvHeads, 0);
      assert.equal(c.ropeScaling, null);
      assert.equal(c.ropeTheta, want.theta);
      assert.equal(c.attentionBias, false);
      assert.equal(c.bosTokenId, 1);
      assert.equal(c.eosTokenId, 2);
    });
  }
  test('kjv-mixtral values', { skip: skipUnlessAsset('models/kjv-mixtral') }, () => {
    const c = readConfig(mustAsset('models/kjv-mixtral')) as MixtralArgs;
    assert.equal(c.family, 'mixtral');
    assert.deepEqual(
      [c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize, c.rmsNormEps, c.maxPositionEmbeddings, c.torchDtype, c.slidingWindow],
      [384, 512, 6, 6, 2, 64, 32000, 1e-5, 1024, 'bfloat16', null],
    );
    assert.deepEqual(c.moe, { numExperts: 4, topK: 2, routerJitterNoise: 0 });
  });
  test('kjv-gqa values', { skip: skipUnlessAsset('models/kjv-gqa') }, () => {
    const c = readConfig(mustAsset('models/kjv-gqa'));
    assert.deepEqual(
      [c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize, c.rmsNormEps, c.maxPositionEmbeddings, c.torchDtype],
      [384, 1024, 6, 6, 2, 64, 32000, 1e-5, 1024, 'bfloat16'],
    );
    assert.equal(c.raw.transformers_version, '4.46.0');
  });
  test('TinyStories-656K values', { skip: skipUnlessAsset('models/TinyStories-656K') }, () => {
    const c = readConfig(mustAsset('models/TinyStories-656K'));
    assert.deepEqual([c.hiddenSize, c.numHeads, c.numKvHeads, c.headDim, c.rmsNormEps, c.torchDtype], [128, 8, 4, 16, 1e-6, 'float32']);
  });
});

describe('parseConfig', () => {
  test('defaults follow transformers', () => {
    const c = parseConfig(base(), 'c.json');
    assert.equal(c.numKvHeads, 4);
    assert.equal(c.headDim, 16);
    assert.equal(c.ropeTheta, 10000);
    assert.equal(c.ropeScaling, null);
    assert.equal(c.tieWordEmbeddings, false);
    assert.equal(c.maxPositionEmbeddings, 2048);
    assert.equal(c.rmsNormEps, 1e-6);
    assert.deepEqual([c.attentionBias, c.oBias, c.mlpBias], [false, false, false]);
    assert.deepEqual([c.bosTokenId, c.eosTokenId, c.torchDtype], [null, null, null]);
  });

  test('model type from architectures alone; SmolLM is llama', () => {
    const { model_type: _m, ...noType } = base();
    assert.equal(parseConfig(noType, 'c.json').modelType, 'llama');
    const smol = parseConfig(base({ num_key_value_heads: 1, head_dim: 32, tie_word_embeddings: true, rope_theta: 100000 }), 'c.json');
    assert.deepEqual([smol.numKvHeads, smol.headDim, smol.tieWordEmbeddings, smol.ropeTheta], [1, 32, true, 100000]);
  });

  test('qwen2 has q/k/v biases and no o_proj bias; mistral none', () => {
    const q = parseConfig(base({ architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', num_key_value_heads: 2, attention_bias: false }), 'c.json');
    assert.deepEqual([q.modelType, q.attentionBias, q.oBias, q.mlpBias, q.maxPositionEmbeddings], ['qwen2', true, false, false, 32768]);
    const m = parseConfig(base({ architectures: ['MistralForCausalLM'], model_type: 'mistral', num_key_value_heads: 1, sliding_window: null }), 'c.json');
    assert.deepEqual([m.modelType, m.attentionBias, m.oBias], ['mistral', false, false]);
  });

  test('llama attention_bias / mlp_bias', () => {
    const c = parseConfig(base({ attention_bias: true, mlp_bias: true }), 'c.json');
    assert.deepEqual([c.attentionBias, c.oBias, c.mlpBias], [true, true, true]);
  });

  test('rope scaling: linear, llama3 (type or rope_type), rope_parameters', () => {
    assert.deepEqual(parseConfig(base({ rope_scaling: { type: 'linear', factor: 4 } }), 'c.json').ropeScaling, { type: 'linear', factor: 4 });
    const l3 = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
    assert.deepEqual(parseConfig(base({ rope_scaling: l3, rope_theta: 500000 }), 'c.json').ropeScaling, {
      type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192,
    });
    assert.equal(parseConfig(base({ rope_scaling: { rope_type: 'default' } }), 'c.json').ropeScaling, null);
    const v5 = parseConfig(base({ rope_parameters: { rope_type: 'default', rope_theta: 1e6 } }), 'c.json');
    assert.deepEqual([v5.ropeTheta, v5.ropeScaling], [1e6, null]);
  });

  test('unsupported rope scaling is named', () => {
    parseErr(base({ rope_scaling: { type: 'yarn', factor: 4 } }), /rope_scaling\.rope_type "yarn" is not supported \(supported: none\/default, linear, llama3\)/);
    parseErr(base({ rope_scaling: { rope_type: 'dynamic', factor: 2 } }), /"dynamic" is not supported/);
    parseErr(base({ rope_scaling: { type: 'linear' } }), /rope_scaling\.factor must be a positive number/);
    parseErr(base({ rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 8192 } }), /high_freq_factor \(1\) must exceed low_freq_factor \(4\)/);
    parseErr(base({ rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4 } }), /original_max_position_embeddings must be a positive integer/);
    parseErr(base({ rope_scaling: 'linear' }), /rope_scaling must be an object or null/);
  });

  test('unknown model types and architectures are named with what is supported', () => {
    parseErr(base({ model_type: 'gpt2', architectures: ['LlamaForCausalLM'] }), /model_type "gpt2" is not supported \(supported: model_type llama, mistral, qwen2/);
    parseErr(base({ model_type: 'gemma2', architectures: ['Gemma2ForCausalLM'] }), /architectures \["Gemma2ForCausalLM"\] is not supported \(.*LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, MixtralForCausalLM, Qwen3ForCausalLM/);
    parseErr(base({ architectures: ['MistralForCausalLM'] }), /architectures name mistral models but model_type is llama/);
    const { model_type: _m, architectures: _a, ...neither } = base();
    parseErr(neither, /neither model_type nor architectures/);
  });

  test('bad numbers name the key', () => {
    const { hidden_size: _h, ...noHidden } = base();
    parseErr(noHidden, /hidden_size is required/);
    parseErr(base({ num_hidden_layers: 0 }), /num_hidden_layers must be a positive integer, got 0/);
    parseErr(base({ vocab_size: 10.5 }), /vocab_size must be a positive integer, got 10.5/);
    parseErr(base({ intermediate_size: '128' }), /intermediate_size must be a positive integer, got "128"/);
    parseErr(base({ num_key_value_heads: 3 }), /num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)/);
    parseErr(base({ hidden_size: 66 }), /hidden_size \(66\) is not divisible by num_attention_heads \(4\) and no head_dim is given/);
    parseErr(base({ rms_norm_eps: -1 }), /rms_norm_eps must be a positive number/);
    parseErr(base({ rope_theta: 0 }), /rope_theta must be a positive number/);
    parseErr(base({ tie_word_embeddings: 'yes' }), /tie_word_embeddings must be true or false/);
    parseErr(base({ bos_token_id: -1 }), /bos_token_id must be a non-negative integer/);
    parseErr(base({ eos_token_id: [1, 'x'] }), /eos_token_id must be an integer or a list of integers/);
    parseErr([1], /expected a JSON object/);
  });

  test('head_dim may differ from hidden/heads; eos may be a list; dtype or torch_dtype', () => {
    const c = parseConfig(base({ hidden_size: 66, head_dim: 32, eos_token_id: [128001, 128009], dtype: 'bfloat16', torch_dtype: 'float32' }), 'c.json');
    assert.deepEqual([c.headDim, c.eosTokenId, c.torchDtype], [32, [128001, 128009], 'bfloat16']);
  });

  test('unsupported dtype, quantisation and activation are refused', () => {
    parseErr(base({ torch_dtype: 'float64' }), /torch_dtype "float64" is not supported \(float32, float16, bfloat16\)/);
    parseErr(base({ quantization_config: { quant_method: 'gptq' } }), /quantization_config declares a quantized checkpoint \(gptq\)/);
    parseErr(base({ hidden_act: 'gelu' }), /hidden_act "gelu" is not supported \(only silu\)/);
  });
});

describe('readConfig / writeHfFolderExtras', () => {
  test('missing folder or config, and bad JSON, are named', () => {
    const dir = join(tmp, 'c1');
    mkdirSync(dir);
    assert.throws(() => readConfig(dir), new RegExp(`${dir} has no config\\.json`));
    writeFileSync(join(dir, 'config.json'), '{ "hidden_size": ');
    assert.throws(() => readConfig(dir), /config\.json: not valid JSON/);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(base({ num_hidden_layers: -2 })));
    assert.throws(() => readConfig(dir), new RegExp(`${join(dir, 'config.json')}: num_hidden_layers must be a positive integer`));
  });

  test('copies tokenizer, generation and chat-template files, refusing to overwrite', () => {
    const src = join(tmp, 'src');
    const out = join(tmp, 'out');
    mkdirSync(src);
    mkdirSync(out);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer.model', 'merges.txt', 'vocab.json', 'chat_template.jinja', 'generation_config.json', 'README.md']) {
      writeFileSync(join(src, f), `content of ${f}`);
    }
    assert.deepEqual(writeHfFolderExtras(src, out), ['chat_template.jinja', 'generation_config.json', 'merges.txt', 'tokenizer.json', 'tokenizer.model', 'vocab.json']);
    assert.throws(() => writeHfFolderExtras(src, out), /already exists; refusing to overwrite/);
  });
});

describe('Mixtral configs', () => {
  const mixtral = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
    architectures: ['MixtralForCausalLM'], model_type: 'mixtral', hidden_size: 64, intermediate_size: 96,
    num_hidden_layers: 2, num_attention_heads: 8, vocab_size: 100, ...over,
  });

  test("MixtralConfig's defaults, not Llama's", () => {
    const c = parseConfig(mixtral(), 'c.json') as MixtralArgs;
    assert.deepEqual([c.family, c.modelType, c.numKvHeads, c.rmsNormEps, c.ropeTheta, c.maxPositionEmbeddings, c.bosTokenId, c.eosTokenId, c.tieWordEmbeddings], ['mixtral', 'mixtral', 8, 1e-5, 1e6, 131072, 1, 2, false]);
    assert.deepEqual(c.moe, { numExperts: 8, topK: 2, routerJitterNoise: 0 });
    assert.deepEqual([c.attentionBias, c.oBias, c.mlpBias, c.slidingWindow], [false, false, false, null]);
    // The raw JSON is the file's, not the defaults'.
    assert.equal(c.raw.num_key_value_heads, undefined);
    const { model_type: _m, ...byArch } = mixtral();
    assert.equal(parseConfig(byArch, 'c.json').modelType, 'mixtral');
  });

  test('expert counts, the num_experts alias, the sliding window', () => {
    const c = parseConfig(mixtral({ num_experts: 4, num_experts_per_tok: 1, sliding_window: 4096, num_key_value_heads: 2 }), 'c.json') as MixtralArgs;
    assert.deepEqual([c.moe.numExperts, c.moe.topK, c.slidingWindow, c.numKvHeads], [4, 1, 4096, 2]);
  });

  test('bad expert settings name the key', () => {
    parseErr(mixtral({ num_local_experts: 2, num_experts_per_tok: 3 }), /num_experts_per_tok \(3\) exceeds num_local_experts \(2\)/);
    parseErr(mixtral({ num_local_experts: 0 }), /num_local_experts must be a positive integer, got 0/);
    parseErr(mixtral({ num_local_experts: 4, num_experts: 8 }), /num_experts \(8\) and num_local_experts \(4\) disagree/);
    parseErr(mixtral({ router_jitter_noise: -0.1 }), /router_jitter_noise must be a number in \[0, 1\)/);
    parseErr(mixtral({ hidden_act: 'gelu' }), /hidden_act "gelu" is not supported/);
    parseErr(mixtral({ model_type: 'llama' }), /architectures name mixtral models but model_type is llama/);
  });
});
