// Converted Mixtral models as llama.cpp deepseek2 GGUFs with experts (through node-llama-cpp's
// CPU binary): the default convert writes the stock DeepSeek-V2 MoE folder, exportDeepseek2Gguf
// writes it as deepseek2 (expert_count, expert_used_count, softmax gating, renormalised weights,
// scale 1, the zero shared expert), and llama.cpp's next-token log-probs on the same tokens must
// agree with our engine's on the folder to 1e-4, as must the perplexity (relative). The same file
// read back by our engine (arch/deepseek-gguf.ts) agrees with both to 1e-4; inspect names its
// experts from the headers; ppl, generate and serve run on it; routing the engine does not compute
// (sigmoid gating, unrenormalised or scaled weights, expert groups, a selection bias) is refused
// with one line naming the file and the GGUF key.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertModel } from '../src/convert/transmla.js';
import { writeCheckpoint } from '../src/io/checkpoint.js';
import { exportDeepseek2Gguf } from '../src/export/gguf-deepseek2.js';
import { readGguf, writeGguf, type GgufMetadataEntry, type GgufTensorInput } from '../src/io/gguf.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';
import { loadModel } from '../src/arch/load.js';
import { describeModel, inspectModel } from '../src/arch/describe.js';
import { runCli } from '../src/cli/run.js';
import { loadServedModel } from '../src/serve/model.js';
import { startServer } from '../src/serve/server.js';
import { assetPath } from './helpers/assets.js';
import { capture } from './helpers/capture.js';
import { useLlamaCpp } from './helpers/llamacpp.js';
import { randomMixtral } from './helpers/random-mixtral.js';
import { logSoftmax, mulberry32 } from './helpers/random-llama.js';

const TOL = 1e-4;
const tmp = mkdtempSync(join(tmpdir(), 'transmla-llamacpp-ds2moe-'));
const cpp = useLlamaCpp();
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Our engine's next-token log-probs at every position of `ids` on `model` (a folder or a GGUF). */
function ourLogProbs(model: string, ids: number[]): Float64Array[] {
  const m = loadModel(model).model;
  const V = m.config.vocabSize;
  const logits = m.forward(ids, m.newCache(), { logits: 'all' }).slice();
  return ids.map((_, t) => logSoftmax(logits.subarray(t * V, (t + 1) * V)));
}

/** max |Δ log-prob| over every position and token, and both perplexities of ids[1..]. */
function diff(a: Float64Array[], b: Float64Array[], ids: number[]): { worst: number; pplA: number; pplB: number } {
  let worst = 0, nllA = 0, nllB = 0;
  for (let t = 0; t < ids.length; t++) {
    for (let i = 0; i < a[t]!.length; i++) worst = Math.max(worst, Math.abs(a[t]![i]! - b[t]![i]!));
    if (t + 1 < ids.length) { nllA -= a[t]![ids[t + 1]!]!; nllB -= b[t]![ids[t + 1]!]!; }
  }
  return { worst, pplA: Math.exp(nllA / (ids.length - 1)), pplB: Math.exp(nllB / (ids.length - 1)) };
}

async function compare(folder: string, gguf: string, ids: number[]): Promise<{ worst: number; pplOurs: number; pplCpp: number }> {
  const ours = ourLogProbs(folder, ids);
  const { worst, pplA, pplB } = diff(ours, await cpp.logProbs(gguf, ids, ours[0]!.length), ids);
  return { worst, pplOurs: pplA, pplCpp: pplB };
}

const calib = assetPath('text/kjv-old-testament-calib.txt');
const vocabDir = assetPath('models/kjv-gqa');
const kjvMixtral = assetPath('models/kjv-mixtral');
const small = { calibSamples: 6, calibSeqLen: 64, seed: 3, evaluate: false } as const;

const randomSkip = calib && vocabDir ? false : 'assets kjv-gqa / kjv calibration text missing';
let randomBuilt: Promise<{ out: string; gguf: string; tensorNames: string[] }> | null = null;

/** A random Mixtral (8 experts / top-2) converted to the stock DeepSeek-V2 MoE folder and written as a deepseek2 GGUF; built once. */
function randomMoeGguf(): Promise<{ out: string; gguf: string; tensorNames: string[] }> {
  randomBuilt ??= (async () => {
    const m = randomMixtral({ hidden: 64, heads: 4, kvHeads: 2, inter: 96, vocab: 32000, layers: 2, experts: 8, topK: 2, seed: 41 });
    const src = join(tmp, 'random-mixtral');
    mkdirSync(src);
    await writeCheckpoint(src, [...m.src.map].map(([n, tensor]) => ({ name: n, tensor })));
    writeFileSync(join(src, 'config.json'), JSON.stringify(m.json));
    writeHfFolderExtras(vocabDir!, src);
    const out = join(tmp, 'random-stock');
    await convertModel({ model: src, out, calib: calib!, kvLoraRank: 24, ropeDim: 8, freqFold: 2, ...small });
    const gguf = join(tmp, 'random.gguf');
    const res = exportDeepseek2Gguf(gguf, out, { outType: 'f32' });
    return { out, gguf, tensorNames: res.tensorNames };
  })();
  return randomBuilt;
}

function randomIds(): number[] {
  const rnd = mulberry32(7);
  return [1, ...Array.from({ length: 63 }, () => 3 + Math.floor(rnd() * 31000))];
}

describe('deepseek2 GGUF with experts vs llama.cpp (f32)', () => {
  it('a random Mixtral with 8 experts / top-2, converted: expert metadata, and log-probs within 1e-4 (the folder and the file read back, each against llama.cpp)', { skip: randomSkip }, async (t) => {
    if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
    const { out, gguf, tensorNames } = await randomMoeGguf();
    for (const n of ['blk.1.ffn_gate_inp.weight', 'blk.1.ffn_gate_exps.weight', 'blk.1.ffn_down_exps.weight', 'blk.1.ffn_up_shexp.weight']) assert.ok(tensorNames.includes(n), n);
    const f = readGguf(gguf);
    {
      assert.equal(f.getNumber('deepseek2.expert_count'), 8);
      assert.equal(f.getNumber('deepseek2.expert_used_count'), 2);
      assert.equal(f.getNumber('deepseek2.expert_gating_func'), 1);
      assert.equal(f.getNumber('deepseek2.leading_dense_block_count'), 0);
      assert.equal(f.getNumber('deepseek2.expert_shared_count'), 1);
      assert.equal(f.getNumber('deepseek2.expert_weights_scale'), 1);
    }
    const ids = randomIds();
    const ref = await cpp.logProbs(gguf, ids, 32000);
    const folder = diff(ourLogProbs(out, ids), ref, ids);
    const file = diff(ourLogProbs(gguf, ids), ref, ids);
    t.diagnostic(`max |Δ log-prob| vs llama.cpp: our engine on the folder ${folder.worst.toExponential(2)}, on the GGUF ${file.worst.toExponential(2)}`);
    assert.ok(folder.worst <= TOL, `folder: max |Δ log-prob| ${folder.worst} > ${TOL}`);
    assert.ok(file.worst <= TOL, `GGUF read back: max |Δ log-prob| ${file.worst} > ${TOL}`);
  });

  it('kjv-mixtral converted at 31.25 % KV: log-probs within 1e-4 and equal perplexity on real text', { skip: kjvMixtral && calib ? false : 'asset kjv-mixtral missing' }, async (t) => {
    if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
    const out = join(tmp, 'kjv-stock');
    await convertModel({ model: kjvMixtral!, out, calib: calib!, kvFraction: 0.3125, ropeDim: 32, freqFold: 2, ...small });
    const gguf = join(tmp, 'kjv.gguf');
    exportDeepseek2Gguf(gguf, out, { outType: 'f32' });
    const tok = loadModel(out).tokenizer!;
    const text = readFileSync(assetPath('text/kjv-new-testament-eval.txt')!, 'utf8').slice(0, 2000);
    const ids = tok.encode(text, { addBos: true }).slice(0, 128);
    const { worst, pplOurs, pplCpp } = await compare(out, gguf, ids);
    t.diagnostic(`${ids.length} tokens: max |Δ log-prob| ${worst.toExponential(2)}, ppl ours ${pplOurs.toFixed(6)} llama.cpp ${pplCpp.toFixed(6)}`);
    assert.ok(worst <= TOL, `max |Δ log-prob| ${worst} > ${TOL}`);
    assert.ok(Math.abs(pplOurs / pplCpp - 1) <= 1e-4, `ppl ${pplOurs} vs ${pplCpp}`);
  });
});

describe('deepseek2 GGUF with experts read back by the engine', () => {
  it('computes what the stock folder computes; inspect names the experts from the headers; ppl, generate and serve run on it', { skip: randomSkip }, async (t) => {
    const { out, gguf } = await randomMoeGguf();
    const loaded = loadModel(gguf);
    assert.equal(loaded.format, 'gguf');
    assert.equal(loaded.mla?.semantics, 'stock');
    const ids = randomIds();
    const { worst } = diff(ourLogProbs(gguf, ids), ourLogProbs(out, ids), ids);
    t.diagnostic(`max |Δ log-prob| GGUF read back vs the folder = ${worst.toExponential(2)}`);
    assert.ok(worst <= TOL, `max |Δ log-prob| ${worst} > ${TOL}`);
    // The zero shared expert the export writes is read back as the folder's (it adds exactly 0).
    const want = 'MoE: 8 experts × 96, top-2 + shared expert × 96';
    const d = inspectModel(gguf);
    assert.equal(d.weightsRead, false);
    assert.equal(d.mlp, want);
    assert.equal(describeModel(loaded).mlp, want);
    assert.equal(d.params, describeModel(loaded).params);
    // Commands print to stdout (inspect's report) as well as through the io sink.
    const run = async (argv: string[]): Promise<{ code: number; out: string; err: string }> => {
      const o: string[] = [], e: string[] = [];
      const r = await capture(() => runCli(argv, { out: (x) => o.push(x), err: (x) => e.push(x) }));
      return { code: r.value, out: [r.out, ...o].join('\n'), err: [r.err, ...e].join('\n') };
    };
    const ins = await run(['inspect', gguf]);
    assert.equal(ins.code, 0, ins.err);
    assert.match(ins.out, new RegExp(`MLP ${want.replace(/[+×]/g, '.')}`));
    const text = join(tmp, 'moe-text.txt');
    writeFileSync(text, 'In the beginning God created the heaven and the earth. And the earth was without form, and void.');
    const ppl = await run(['ppl', gguf, '--text', text, '--tokenizer', out, '--ctx', '16', '--json']);
    assert.equal(ppl.code, 0, ppl.err);
    const gen = await run(['generate', gguf, '--tokenizer', out, '--prompt', 'In the', '--max-tokens', '4', '--temperature', '0']);
    assert.equal(gen.code, 0, gen.err);
    // serve: greedy completions of the file equal the folder's.
    const complete = async (model: string): Promise<string> => {
      const srv = await startServer(loadServedModel(model, { tokenizer: out, name: 'moe' }), 0, '127.0.0.1');
      try {
        const r = await fetch(`${srv.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'moe', prompt: 'In the beginning', temperature: 0, max_tokens: 6 }) });
        assert.equal(r.status, 200);
        return ((await r.json()) as { choices: { text: string }[] }).choices[0]!.text;
      } finally {
        await srv.close();
      }
    };
    assert.equal(await complete(gguf), await complete(out));
  });

  it('routing the engine does not compute is refused with one line naming the file and the GGUF key', { skip: randomSkip }, async (t) => {
    const { gguf } = await randomMoeGguf();
    const f = readGguf(gguf);
    const rewrite = (name: string, md: (e: GgufMetadataEntry[]) => GgufMetadataEntry[], extra: GgufTensorInput[] = []): string => {
      const path = join(tmp, name);
      writeGguf(path, { metadata: md([...f.metadata].map(([key, v]) => ({ key, ...v }) as GgufMetadataEntry)), tensors: [...f.tensors.map((x) => ({ name: x.name, tensor: f.readTensor(x.name) })), ...extra] });
      return path;
    };
    const set = (key: string, entry: Omit<GgufMetadataEntry, 'key'> | null) => (e: GgufMetadataEntry[]): GgufMetadataEntry[] =>
      [...e.filter((x) => x.key !== key), ...(entry ? [{ key, ...entry } as GgufMetadataEntry] : [])];
    const cases: [string, (e: GgufMetadataEntry[]) => GgufMetadataEntry[], RegExp][] = [
      ['sigmoid.gguf', set('deepseek2.expert_gating_func', { type: 'u32', value: 2 }), /: deepseek2\.expert_gating_func is "sigmoid": this engine runs mixture-of-experts layers with Mixtral's routing only/],
      ['no-norm.gguf', set('deepseek2.expert_weights_norm', { type: 'bool', value: false }), /: deepseek2\.expert_weights_norm is false: .*renormalised/],
      // llama.cpp's default when the key is absent is false too.
      ['norm-absent.gguf', set('deepseek2.expert_weights_norm', null), /: deepseek2\.expert_weights_norm is absent: /],
      ['scaled.gguf', set('deepseek2.expert_weights_scale', { type: 'f32', value: 2.5 }), /: deepseek2\.expert_weights_scale is 2\.5: .*unscaled/],
      ['groups.gguf', (e) => set('deepseek2.expert_group_used_count', { type: 'u32', value: 1 })(set('deepseek2.expert_group_count', { type: 'u32', value: 2 })(e)), /: deepseek2\.expert_group_count is 2: .*one expert group/],
    ];
    for (const [name, md, re] of cases) {
      const bad = rewrite(name, md);
      try { inspectModel(bad); } catch (e) { t.diagnostic((e as Error).message); }
      for (const open of [() => loadModel(bad), () => inspectModel(bad)]) {
        assert.throws(open, (e: Error) => e.message.startsWith(`${bad} (deepseek2 metadata): `) && re.test(e.message) && !e.message.includes('\n'), name);
      }
    }
    // DeepSeek-V3's selection bias (noaux_tc) is refused by the tensor's name.
    const biased = rewrite('bias.gguf', (e) => e, [{ name: 'blk.0.exp_probs_b.bias', tensor: { dtype: 'f32', shape: [8], data: new Float32Array(8) } }]);
    assert.throws(() => inspectModel(biased), (e: Error) => e.message.startsWith(`${biased}: tensor blk.0.exp_probs_b.bias biases the expert selection`) && !e.message.includes('\n'));
    // And the unmodified file loads: the refusals come from the edited keys.
    assert.equal(inspectModel(rewrite('same.gguf', (e) => e)).mlp, 'MoE: 8 experts × 96, top-2 + shared expert × 96');
  });
});
