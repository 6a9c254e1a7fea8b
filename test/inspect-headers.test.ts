// `inspect` reads config and tensor headers only (arch/describe.ts inspectModel):
// - its description equals the one computed from the loaded engine model (describeModel) on every
//   shared HF model, a GGUF, a llama2.c checkpoint and random MLA (exact, stock), MHA2MLA and
//   quantized-latent models: the family's attention layout gives the cache without layers;
// - on a generated ~1 GB bf16 Llama-shaped folder (sparse file: the header is real, the data
//   zeros) the peak RSS (VmHWM) of an `inspect` child process stays far below the weights' size.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeModel, inspectModel, type ModelDescription } from '../src/arch/describe.js';
import { loadModel } from '../src/arch/load.js';
import { writeCheckpoint } from '../src/io/checkpoint.js';
import { encodeHeader } from '../src/io/safetensors.js';
import { exportFolderGguf } from '../src/export/gguf.js';
import { assetPath, hfModelAssets, REPO_ROOT } from './helpers/assets.js';
import { randomDeepseek } from './helpers/random-deepseek.js';
import { randomMha2mla, randomMla } from './helpers/random-train.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-inspect-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/**
 * What both descriptions report. inspectModel adds dtypes and weightsRead, and counts the bytes
 * each tensor is stored in (describeModel: parameters × the embedding's dtype), checked here.
 */
function shared(d: ModelDescription): Omit<ModelDescription, 'dtypes' | 'weightsRead' | 'weightBytes'> {
  const { dtypes, weightsRead: _w, weightBytes, ...rest } = d;
  if (dtypes) {
    const size: Record<string, number> = { f32: 4, f16: 2, bf16: 2 };
    assert.equal(weightBytes, Object.entries(dtypes).reduce((n, [t, k]) => n + k * size[t]!, 0));
    assert.equal(Object.values(dtypes).reduce((a, b) => a + b, 0), d.params);
  }
  return rest;
}

async function folder(name: string, json: Record<string, unknown>, tensors: Map<string, import('../src/tensor.js').Tensor>): Promise<string> {
  const dir = join(tmp, name);
  mkdirSync(dir);
  await writeCheckpoint(dir, [...tensors].map(([n, tensor]) => ({ name: n, tensor })));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(json));
  return dir;
}

describe('inspect from headers equals the loaded model\'s description', () => {
  for (const name of hfModelAssets()) {
    it(`${name} (a model the engine refuses is refused alike)`, () => {
      const dir = join(assetPath('models')!, name);
      let loaded: ReturnType<typeof loadModel>;
      try {
        loaded = loadModel(dir);
      } catch (e) {
        assert.throws(() => inspectModel(dir), { message: (e as Error).message });
        return;
      }
      assert.deepEqual(shared(inspectModel(dir)), shared(describeModel(loaded)));
    });
  }

  it('a llama2.c checkpoint (stories260K)', { skip: assetPath('models/stories260K/stories260K.bin') ? false : 'asset models/stories260K missing' }, () => {
    const bin = assetPath('models/stories260K/stories260K.bin')!;
    const d = inspectModel(bin);
    assert.deepEqual(shared(d), shared(describeModel(loadModel(bin))));
    assert.equal(d.format, 'llama2c');
  });

  it('a GGUF (TinyStories-656K-bf16 written as llama)', { skip: assetPath('models/TinyStories-656K-bf16') ? false : 'asset missing' }, () => {
    const out = join(tmp, 'ts.gguf');
    exportFolderGguf(assetPath('models/TinyStories-656K-bf16')!, out, 'bf16');
    assert.deepEqual(shared(inspectModel(out)), shared(describeModel(loadModel(out))));
  });

  it('random MLA (exact, q_lora, biases), stock DeepSeek-V3 and MHA2MLA folders, with and without a quantized latent cache', async () => {
    const mla = randomMla({ hidden: 48, heads: 4, inter: 64, vocab: 83, layers: 2, nope: 8, rope: 8, v: 12, rank: 16, qLoraRank: 12, biases: true, seed: 5 });
    const ds = randomDeepseek({ hidden: 48, heads: 4, nope: 8, rope: 8, v: 8, kvLoraRank: 16, qLoraRank: 20, inter: 64, vocab: 79, layers: 2, seed: 6, tied: true });
    const m2 = randomMha2mla({ hidden: 48, heads: 6, kvHeads: 2, headDim: 16, inter: 64, vocab: 71, layers: 2, pairs: 3, rank: 12, seed: 7 });
    const dirs = [await folder('mla', mla.json, mla.src.map), await folder('ds3', ds.json, ds.src.map), await folder('m2', m2.json, m2.src.map)];
    for (const dir of dirs) {
      for (const kvQuant of [null, { bits: 4 as const, group: 4 }, { bits: 8 as const, group: 0 }]) {
        assert.deepEqual(shared(inspectModel(dir, { kvQuant })), shared(describeModel(loadModel(dir, { kvQuant }))), `${dir} ${JSON.stringify(kvQuant)}`);
      }
    }
    assert.equal(inspectModel(dirs[1]!).mla!.semantics, 'stock');
  });

  it('refuses --kv-quant on a GQA model, as loading does', { skip: assetPath('models/TinyStories-656K') ? false : 'asset missing' }, () => {
    assert.throws(() => inspectModel(assetPath('models/TinyStories-656K')!, { kvQuant: { bits: 8, group: 32 } }), /--kv-quant quantizes an MLA latent cache/);
  });
});

/** A Llama-shaped bf16 folder whose safetensors data section is a hole (zeros): `bytes` of weights on disk, none written. */
function sparseLlama(dir: string): number {
  const D = 2048, I = 5632, L = 8, V = 32000, H = 16, G = 4, d = D / H;
  const items: { name: string; dtype: 'BF16'; shape: number[]; byteLength: number }[] = [];
  const add = (name: string, shape: number[]): void => { items.push({ name, dtype: 'BF16', shape, byteLength: 2 * shape.reduce((a, b) => a * b, 1) }); };
  add('model.embed_tokens.weight', [V, D]);
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [D]);
    add(`${p}.self_attn.q_proj.weight`, [H * d, D]);
    add(`${p}.self_attn.k_proj.weight`, [G * d, D]);
    add(`${p}.self_attn.v_proj.weight`, [G * d, D]);
    add(`${p}.self_attn.o_proj.weight`, [D, H * d]);
    add(`${p}.post_attention_layernorm.weight`, [D]);
    add(`${p}.mlp.gate_proj.weight`, [I, D]);
    add(`${p}.mlp.up_proj.weight`, [I, D]);
    add(`${p}.mlp.down_proj.weight`, [D, I]);
  }
  add('model.norm.weight', [D]);
  add('lm_head.weight', [V, D]);
  mkdirSync(dir);
  const header = encodeHeader(items, {});
  const bytes = items.reduce((n, t) => n + t.byteLength, 0);
  const fd = openSync(join(dir, 'model.safetensors'), 'w');
  try {
    writeSync(fd, header);
    ftruncateSync(fd, header.length + bytes);
  } finally {
    closeSync(fd);
  }
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: D, intermediate_size: I, num_hidden_layers: L,
    num_attention_heads: H, num_key_value_heads: G, vocab_size: V, rms_norm_eps: 1e-5, rope_theta: 500000,
    max_position_embeddings: 8192, tie_word_embeddings: false, torch_dtype: 'bfloat16',
  }));
  return bytes;
}

describe('inspect memory', () => {
  it('peak RSS of `transmla inspect` on a ~1 GB bf16 folder stays small (VmHWM of a child process)', (t) => {
    const dir = join(tmp, 'big');
    const bytes = sparseLlama(dir);
    // The child runs the CLI in-process and reports its own high-water mark just before exiting.
    const harness = join(tmp, 'peak-rss.mts');
    writeFileSync(harness, `import { runCli } from ${JSON.stringify(join(REPO_ROOT, 'src/cli/run.ts'))};
import { readFileSync } from 'node:fs';
const code = await runCli(process.argv.slice(2));
const hwm = /VmHWM:\\s+(\\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
process.stderr.write('VMHWM ' + (hwm ? hwm[1] : 'none') + '\\n');
process.exit(code);
`);
    const r = spawnSync(process.execPath, ['--import', 'tsx', harness, 'inspect', dir, '--json'], { cwd: REPO_ROOT, encoding: 'utf8', maxBuffer: 1 << 24, timeout: 300_000 });
    assert.equal(r.status, 0, r.stderr);
    const d = JSON.parse(r.stdout) as ModelDescription;
    assert.equal(d.weightBytes, bytes);
    assert.equal(d.params, bytes / 2);
    const m = /VMHWM (\d+)/.exec(r.stderr);
    assert.ok(m, `no VmHWM in the child's stderr: ${r.stderr}`);
    const peak = Number(m[1]) * 1024;
    t.diagnostic(`weights ${(bytes / 2 ** 30).toFixed(2)} GiB, inspect peak RSS ${(peak / 2 ** 20).toFixed(0)} MiB`);
    // Node with tsx alone takes ~100 MiB; loading the weights would take more than their size.
    assert.ok(peak < 400 * 2 ** 20, `peak RSS ${(peak / 2 ** 20).toFixed(0)} MiB for ${(bytes / 2 ** 20).toFixed(0)} MiB of weights`);
  });
});
