// Reading deepseek2 GGUFs (arch/deepseek-gguf.ts): a stock DeepSeek-V3 folder exported to GGUF is
// loaded back by our engine and compared with llama.cpp on the very same file — next-token
// log-probabilities within 1e-4 and the same perplexity (f32 files); q_proj and q_lora layouts,
// tied and untied heads, rope_interleave false (rows permuted on export), the legacy form with
// one attn_kv_b; 16-bit files against the folder they came from. inspect/ppl/generate run on
// the file through the CLI. Expert tensors in a file declaring none, MoE layers without their
// tensors, and YaRN are refused with one clear line (MoE files: llamacpp-deepseek2-moe.test.ts).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../src/arch/load.js';
import { inspectModel } from '../src/arch/describe.js';
import { exportDeepseek2Gguf } from '../src/export/gguf-deepseek2.js';
import { writeCheckpoint } from '../src/io/checkpoint.js';
import { readGguf, writeGguf, type GgufMetadataEntry, type GgufTensorInput } from '../src/io/gguf.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';
import { runCli } from '../src/cli/run.js';
import { assetPath } from './helpers/assets.js';
import { useLlamaCpp } from './helpers/llamacpp.js';
import { randomDeepseek, type DeepseekSpec } from './helpers/random-deepseek.js';
import { logSoftmax, mulberry32 } from './helpers/random-llama.js';

const TOL = 1e-4;
const tmp = mkdtempSync(join(tmpdir(), 'transmla-ds2-read-'));
const cpp = useLlamaCpp();
after(() => rmSync(tmp, { recursive: true, force: true }));
const vocabDir = assetPath('models/TinyStories-656K');
const skip = vocabDir ? false : 'asset models/TinyStories-656K missing (its vocabulary is used)';

async function stockFolder(name: string, spec: DeepseekSpec): Promise<string> {
  const m = randomDeepseek(spec);
  const dir = join(tmp, name);
  mkdirSync(dir);
  await writeCheckpoint(dir, [...m.src.map].map(([n, tensor]) => ({ name: n, tensor })));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(m.json));
  writeHfFolderExtras(vocabDir!, dir);
  return dir;
}

function ids(n: number, seed: number): number[] {
  const rnd = mulberry32(seed);
  return [1, ...Array.from({ length: n - 1 }, () => 3 + Math.floor(rnd() * 2000))];
}

/** Our engine's log-probs of every position on `model` (a folder or a GGUF). */
function ourLogProbs(model: string, tokens: number[]): Float64Array[] {
  const m = loadModel(model).model;
  const V = m.config.vocabSize;
  const logits = m.forward(tokens, m.newCache(), { logits: 'all' });
  return tokens.map((_, t) => logSoftmax(logits.subarray(t * V, (t + 1) * V)));
}

/** max |Δ log-prob| over all positions and tokens, and both perplexities of tokens[1..]. */
function compare(a: Float64Array[], b: Float64Array[], tokens: number[]): { worst: number; pplA: number; pplB: number } {
  let worst = 0, nllA = 0, nllB = 0;
  for (let t = 0; t < tokens.length; t++) {
    for (let i = 0; i < a[t]!.length; i++) worst = Math.max(worst, Math.abs(a[t]![i]! - b[t]![i]!));
    if (t + 1 < tokens.length) { nllA -= a[t]![tokens[t + 1]!]!; nllB -= b[t]![tokens[t + 1]!]!; }
  }
  return { worst, pplA: Math.exp(nllA / (tokens.length - 1)), pplB: Math.exp(nllB / (tokens.length - 1)) };
}

/** The same model in llama.cpp's legacy deepseek2 form: no *_mla lengths, head_count_kv = H, one attn_kv_b. */
function toLegacy(src: string, out: string, dims: { H: number; dn: number; dR: number; dv: number; r: number }): void {
  const f = readGguf(src);
  const { H, dn, dR, dv, r } = dims;
  const drop = new Set(['deepseek2.attention.key_length_mla', 'deepseek2.attention.value_length_mla']);
  const set: Record<string, number> = { 'deepseek2.attention.head_count_kv': H, 'deepseek2.attention.key_length': dn + dR, 'deepseek2.attention.value_length': dv };
  const metadata: GgufMetadataEntry[] = [...f.metadata].filter(([k]) => !drop.has(k)).map(([key, v]) => (key in set ? { key, type: 'u32', value: set[key]! } : { key, ...v }) as GgufMetadataEntry);
  const tensors: GgufTensorInput[] = [];
  for (const t of f.tensors) {
    if (t.name.endsWith('.attn_v_b.weight')) continue;
    if (t.name.endsWith('.attn_k_b.weight')) {
      const b = t.name.slice(0, -'attn_k_b.weight'.length);
      const kb = f.readTensor(t.name).data as Float32Array, vb = f.readTensor(`${b}attn_v_b.weight`).data as Float32Array;
      const kv = new Float32Array(H * (dn + dv) * r);
      for (let h = 0; h < H; h++) {
        for (let i = 0; i < dn; i++) for (let j = 0; j < r; j++) kv[(h * (dn + dv) + i) * r + j] = kb[(h * r + j) * dn + i]!;
        kv.set(vb.subarray(h * dv * r, (h + 1) * dv * r), (h * (dn + dv) + dn) * r);
      }
      tensors.push({ name: `${b}attn_kv_b.weight`, tensor: { dtype: 'f32', shape: [H * (dn + dv), r], data: kv } });
      continue;
    }
    tensors.push({ name: t.name, tensor: f.readTensor(t.name) });
  }
  writeGguf(out, { metadata, tensors });
}

const base: DeepseekSpec = { hidden: 64, heads: 4, nope: 16, rope: 8, v: 16, kvLoraRank: 24, qLoraRank: null, inter: 96, vocab: 2048, layers: 2 };

describe('deepseek2 GGUF read back by the engine, against llama.cpp on the same file', () => {
  const cases: [string, DeepseekSpec][] = [
    ['q_proj, untied', { ...base, seed: 41 }],
    ['q_lora, tied', { ...base, qLoraRank: 20, tied: true, seed: 42 }],
    ['rope_interleave false in the folder (rows permuted on export)', { ...base, ropeHalf: true, v: 12, seed: 43 }],
  ];
  for (const [name, spec] of cases) {
    it(name, { skip }, async (t) => {
      if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
      const dir = await stockFolder(name.replace(/\W+/g, '-'), spec);
      const gguf = join(tmp, `${name.replace(/\W+/g, '-')}.gguf`);
      exportDeepseek2Gguf(gguf, dir, { outType: 'f32' });
      const loaded = loadModel(gguf);
      assert.equal(loaded.format, 'gguf');
      assert.equal(loaded.mla?.semantics, 'stock');
      const tokens = ids(64, 7);
      const ours = ourLogProbs(gguf, tokens);
      const ref = await cpp.logProbs(gguf, tokens, spec.vocab);
      const c = compare(ours, ref, tokens);
      t.diagnostic(`${tokens.length} tokens: max |Δ log-prob| vs llama.cpp ${c.worst.toExponential(2)}; ppl ours ${c.pplA.toFixed(6)}, llama.cpp ${c.pplB.toFixed(6)}`);
      assert.ok(c.worst <= TOL, `max |Δ log-prob| ${c.worst} > ${TOL}`);
      assert.ok(Math.abs(c.pplA / c.pplB - 1) <= TOL, `ppl ${c.pplA} vs llama.cpp ${c.pplB}`);
      // And the file computes what the folder it came from computes.
      assert.ok(compare(ours, ourLogProbs(dir, tokens), tokens).worst <= 1e-5);
    });
  }

  it('the legacy form (one attn_kv_b, no key_length_mla)', { skip }, async (t) => {
    if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
    const spec = { ...base, qLoraRank: 20, seed: 44 };
    const dir = await stockFolder('legacy', spec);
    const mla = join(tmp, 'legacy-mla.gguf'), legacy = join(tmp, 'legacy.gguf');
    exportDeepseek2Gguf(mla, dir, { outType: 'f32' });
    toLegacy(mla, legacy, { H: spec.heads, dn: spec.nope, dR: spec.rope, dv: spec.v, r: spec.kvLoraRank });
    const tokens = ids(48, 8);
    const ours = ourLogProbs(legacy, tokens);
    const c = compare(ours, await cpp.logProbs(legacy, tokens, spec.vocab), tokens);
    t.diagnostic(`legacy form: max |Δ log-prob| vs llama.cpp ${c.worst.toExponential(2)}`);
    assert.ok(c.worst <= TOL, `max |Δ log-prob| ${c.worst}`);
    assert.ok(compare(ours, ourLogProbs(mla, tokens), tokens).worst <= 1e-5);
  });

  for (const outType of ['f16', 'bf16'] as const) {
    it(`${outType} file: the engine reads the 16-bit weights as the folder rounded to ${outType}`, { skip }, async () => {
      const dir = await stockFolder(`half-${outType}`, { ...base, qLoraRank: 20, seed: 45 });
      const gguf = join(tmp, `half-${outType}.gguf`);
      exportDeepseek2Gguf(gguf, dir, { outType });
      const d = inspectModel(gguf);
      assert.equal(d.weightDtype, outType);
      assert.equal(d.kvCache.elementsPerToken, 2 * (24 + 8));
      const tokens = ids(32, 9);
      // 16-bit rounding of every weight: a loose bound, but far below a layout error (≫ 1).
      assert.ok(compare(ourLogProbs(gguf, tokens), ourLogProbs(dir, tokens), tokens).worst <= 0.05);
    });
  }
});

describe('deepseek2 GGUF through the CLI', () => {
  it('inspect, ppl and generate run on an exported file (tokenizer from --tokenizer)', { skip }, async () => {
    const dir = await stockFolder('cli', { ...base, qLoraRank: 20, seed: 46 });
    const gguf = join(tmp, 'cli.gguf');
    exportDeepseek2Gguf(gguf, dir, { outType: 'f32' });
    const text = join(tmp, 'text.txt');
    writeFileSync(text, 'Once upon a time there was a little girl. She liked to play in the park with her dog.\n\nThe end.');
    const run = async (argv: string[]): Promise<{ code: number; out: string; err: string }> => {
      const out: string[] = [], err: string[] = [];
      const code = await runCli(argv, { out: (s) => out.push(s), err: (s) => err.push(s) });
      return { code, out: out.join('\n'), err: err.join('\n') };
    };
    const ins = await run(['inspect', gguf]);
    assert.equal(ins.code, 0, ins.err);
    const ppl = await run(['ppl', gguf, '--text', text, '--tokenizer', dir, '--ctx', '16', '--json']);
    assert.equal(ppl.code, 0, ppl.err);
    const gen = await run(['generate', gguf, '--tokenizer', dir, '--prompt', 'Once', '--max-tokens', '4', '--temperature', '0']);
    assert.equal(gen.code, 0, gen.err);
  });
});

describe('deepseek2 GGUFs the engine refuses', () => {
  it('expert tensors in a dense file, MoE layers without their tensors, and YaRN RoPE, each with one line naming the file', { skip }, async () => {
    const dir = await stockFolder('refuse', { ...base, seed: 47 });
    const gguf = join(tmp, 'refuse.gguf');
    exportDeepseek2Gguf(gguf, dir, { outType: 'f32' });
    const f = readGguf(gguf);
    const rewrite = (out: string, md: (e: GgufMetadataEntry[]) => GgufMetadataEntry[], extra: GgufTensorInput[] = []): string => {
      writeGguf(out, { metadata: md([...f.metadata].map(([key, v]) => ({ key, ...v }) as GgufMetadataEntry)), tensors: [...f.tensors.map((t) => ({ name: t.name, tensor: f.readTensor(t.name) })), ...extra] });
      return out;
    };
    const moe = rewrite(join(tmp, 'moe.gguf'), (e) => e, [{ name: 'blk.1.ffn_gate_inp.weight', tensor: { dtype: 'f32', shape: [4, 64], data: new Float32Array(256) } }]);
    assert.throws(() => loadModel(moe), (e: Error) => e.message.startsWith(`${moe}: tensor blk.1.ffn_gate_inp.weight belongs to a mixture-of-experts layer, but the metadata declares none`));
    // Layer 1 declared MoE (softmax, renormalised top-2 of 8): its router is looked for, and missing.
    const moeKeys: GgufMetadataEntry[] = [
      { key: 'deepseek2.expert_count', type: 'u32', value: 8 }, { key: 'deepseek2.expert_used_count', type: 'u32', value: 2 },
      { key: 'deepseek2.expert_gating_func', type: 'u32', value: 1 }, { key: 'deepseek2.expert_weights_norm', type: 'bool', value: true },
    ];
    const moe2 = rewrite(join(tmp, 'moe2.gguf'), (e) => [...e.map((x) => (x.key === 'deepseek2.leading_dense_block_count' ? { ...x, value: 1 } as GgufMetadataEntry : x)), ...moeKeys]);
    assert.throws(() => inspectModel(moe2), (e: Error) => e.message === `${moe2}: missing tensor blk.1.ffn_gate_inp.weight`);
    const yarn = rewrite(join(tmp, 'yarn.gguf'), (e) => [...e, { key: 'deepseek2.rope.scaling.type', type: 'string', value: 'yarn' }]);
    assert.throws(() => loadModel(yarn), /RoPE scaling "yarn" is not supported for deepseek2 GGUFs/);
  });
});
