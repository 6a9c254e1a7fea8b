// The training loop end to end on tiny random models (no assets needed): the trainer's forward
// equals the engine's (the oracle), packing and token files, schedules, loss going down,
// byte-identical runs with a seed, resume == uninterrupted, and checkpoints that load back.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { UsageError } from '../src/cli/args.js';
import { commands } from '../src/cli/commands.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import type { Decoder } from '../src/models/decoder.js';
import type { SwiGluMlp } from '../src/models/mlp.js';
import { loadModel } from '../src/arch/load.js';
import { buildModel } from '../src/arch/registry.js';
import type { Tensor, WeightSource } from '../src/tensor.js';
import { createBackend } from '../src/train/backend.js';
import { batchRows, packDocuments, readTokenFile } from '../src/train/data.js';
import { finetune, type FinetuneReport } from '../src/train/finetune.js';
import { TrainModel } from '../src/train/model.js';
import { lrAt } from '../src/train/schedule.js';
import { maxAbsDiff, mulberry32, randomLlama, toBf16Bits } from './helpers/random-llama.js';
import { packedRow, randomMha2mla, randomMla } from './helpers/random-train.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-train-test-'));
after(() => { if (!process.env.KEEP) rmSync(tmp, { recursive: true, force: true }); else console.log(tmp); });

/** Engine logits of every segment of a row, laid out like the row. */
function engineRowLogits(m: Decoder, tokens: Int32Array, segments: Int32Array): Float32Array {
  const V = m.config.vocabSize, T = tokens.length, out = new Float32Array(T * V);
  for (let s = 0; s < segments.length; s++) {
    const a = segments[s]!, b = s + 1 < segments.length ? segments[s + 1]! : T;
    out.set(m.forward(Array.from(tokens.subarray(a, b)), m.newCache(), { logits: 'all' }), a * V);
  }
  return out;
}

test('trainer forward equals the engine forward (Llama GQA, Qwen3, MLA, MHA2MLA; documents packed in one row)', () => {
  const row = packedRow([7, 5, 4], 37, 3);
  const llama = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, headDim: 8, inter: 48, vocab: 37, layers: 2, tied: true, seed: 3 });
  const mla = randomMla({ hidden: 32, heads: 4, inter: 48, vocab: 37, layers: 2, nope: 8, rope: 4, v: 8, rank: 12, seed: 4 });
  const m2 = randomMha2mla({ hidden: 32, heads: 4, kvHeads: 2, headDim: 8, inter: 48, vocab: 37, layers: 2, pairs: 2, rank: 12, biases: true, seed: 5 });
  const q3 = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, headDim: 12, inter: 48, vocab: 37, layers: 2, modelType: 'qwen3', seed: 6 });
  const cases: [string, TrainModel, Decoder][] = [
    ['qwen3', TrainModel.create(createBackend('f32'), q3.config, q3.src, 'all'), buildModel(q3.config, q3.src)],
    ['llama', TrainModel.create(createBackend('f32'), llama.config, llama.src, 'all'), buildModel(llama.config, llama.src)],
    ['mla', TrainModel.create(createBackend('f32'), mla.cfg, mla.src, 'all'), buildModel(mla.cfg, mla.src)],
    ['mha2mla', TrainModel.create(createBackend('f32'), m2.cfg, m2.src, 'all'), buildModel(m2.cfg, m2.src)],
  ];
  for (const [name, tm, engine] of cases) {
    const a = tm.logits(row), b = engineRowLogits(engine, row.tokens, row.segments);
    const err = maxAbsDiff(a, b);
    assert.ok(err < 1e-4, `${name}: max |trainer − engine| = ${err}`);
  }
});

test('packing: every document token after the first is a target exactly once; segments and positions', () => {
  const rnd = mulberry32(9);
  const docs = [5, 1, 13, 2, 9, 30, 4].map((n, d) => Int32Array.from({ length: n }, (_, i) => (i === 0 ? 1 : 3 + ((d * 7 + i * 5 + Math.floor(rnd() * 3)) % 50))));
  const T = 8;
  const { rows, targets, documents } = packDocuments(docs, T);
  assert.equal(documents, 6, 'a one-token document has nothing to predict');
  assert.equal(targets, docs.filter((d) => d.length >= 2).reduce((a, d) => a + d.length - 1, 0));
  // Walk the rows back into the token stream: the targets reproduce every document's continuation.
  const stream: number[] = [], labels: number[] = [];
  for (const r of rows) {
    assert.equal(r.segments[0], 0);
    for (let s = 0; s < r.segments.length; s++) {
      const a = r.segments[s]!, b = s + 1 < r.segments.length ? r.segments[s + 1]! : T;
      for (let t = a; t < b; t++) assert.equal(r.positions[t], t - a);
    }
    for (let t = 0; t < T; t++) if (r.targets[t]! >= 0) { stream.push(r.tokens[t]!); labels.push(r.targets[t]!); }
  }
  const want: number[] = [], wantLabels: number[] = [];
  for (const d of docs) for (let i = 0; i + 1 < d.length; i++) { want.push(d[i]!); wantLabels.push(d[i + 1]!); }
  assert.deepEqual(stream, want);
  assert.deepEqual(labels, wantLabels);
  // Batches: a permutation per epoch.
  const seen = batchRows(rows.length, rows.length, 0, 5).sort((a, b) => a - b);
  assert.deepEqual(seen, rows.map((_, i) => i));
  assert.deepEqual(batchRows(rows.length, 3, 2, 5), batchRows(rows.length, 3, 2, 5));
});

test('token files: llm.c header and raw uint16, documents split at BOS', () => {
  const ids = [1, 5, 6, 7, 1, 8, 9, 1, 10];
  const llmc = new Uint8Array(1024 + ids.length * 2);
  const head = new Int32Array(llmc.buffer, 0, 256);
  head[0] = 20240520; head[1] = 1; head[2] = ids.length;
  const dv = new DataView(llmc.buffer);
  ids.forEach((v, i) => dv.setUint16(1024 + 2 * i, v, true));
  writeFileSync(join(tmp, 'toks.llmc.bin'), llmc);
  const raw = new Uint8Array(ids.length * 2);
  ids.forEach((v, i) => new DataView(raw.buffer).setUint16(2 * i, v, true));
  writeFileSync(join(tmp, 'toks.u16'), raw);
  for (const f of ['toks.llmc.bin', 'toks.u16']) {
    const docs = readTokenFile(join(tmp, f), 11, 1).map((d) => [...d]);
    assert.deepEqual(docs, [[1, 5, 6, 7], [1, 8, 9], [1, 10]], f);
  }
  assert.throws(() => readTokenFile(join(tmp, 'toks.u16'), 9, 1), /outside the vocabulary/);
});

test('schedules: warmup, cosine to the floor, wsd 1−sqrt decay', () => {
  const base = { peakLr: 1, totalSteps: 100, warmupSteps: 10, minRatio: 0.1, decayFraction: 0.2 };
  const cos = { ...base, kind: 'cosine' as const }, wsd = { ...base, kind: 'wsd' as const };
  assert.equal(lrAt(cos, 0), 0.1);
  assert.equal(lrAt(cos, 9), 1);
  assert.ok(Math.abs(lrAt(cos, 10) - 1) < 1e-12);
  assert.ok(Math.abs(lrAt(cos, 99) - 0.1) < 1e-12);
  assert.equal(lrAt(wsd, 50), 1);
  assert.equal(lrAt(wsd, 79), 1);
  assert.ok(lrAt(wsd, 80) < 1 && lrAt(wsd, 90) < lrAt(wsd, 80));
  assert.ok(Math.abs(lrAt(wsd, 99) - 0.1) < 1e-12);
});

// ---------------------------------------------------------------------------------------------
// Tiny HF folders and a learnable token file

function writeFolder(dir: string, json: Record<string, unknown>, src: WeightSource, dtype: 'f32' | 'bf16'): string {
  const tensors = src.names().map((name) => {
    const t = src.get(name);
    if (dtype === 'f32') return { name, tensor: t };
    const f = t.data as Float32Array, bits = new Uint16Array(f.length);
    for (let i = 0; i < f.length; i++) bits[i] = toBf16Bits(f[i]!);
    return { name, tensor: { dtype: 'bf16', shape: t.shape, data: bits } as Tensor };
  });
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...json, torch_dtype: dtype === 'f32' ? 'float32' : 'bfloat16' }));
  return dir;
}

/** Documents that are arithmetic progressions mod V after a BOS: learnable from context. */
function tokenFile(path: string, V: number, docs: number, seed: number): string {
  const rnd = mulberry32(seed);
  const ids: number[] = [];
  for (let d = 0; d < docs; d++) {
    const step = 1 + Math.floor(rnd() * 3), len = 10 + Math.floor(rnd() * 30);
    let t = 3 + Math.floor(rnd() * (V - 3));
    ids.push(1);
    for (let i = 0; i < len; i++) { ids.push(t); t = 3 + ((t - 3 + step) % (V - 3)); }
  }
  const raw = new Uint8Array(ids.length * 2);
  ids.forEach((v, i) => new DataView(raw.buffer).setUint16(2 * i, v, true));
  writeFileSync(path, raw);
  return path;
}

const V = 48;
const llama = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, headDim: 8, inter: 64, vocab: V, layers: 2, tied: true, seed: 11 });
const llamaDir = writeFolder(join(tmp, 'llama'), llama.json, llama.src, 'f32');
const mla = randomMla({ hidden: 32, heads: 4, inter: 64, vocab: V, layers: 2, nope: 8, rope: 4, v: 8, rank: 10, tied: true, seed: 12 });
const mlaDir = writeFolder(join(tmp, 'mla'), mla.json, mla.src, 'bf16');
const toks = tokenFile(join(tmp, 'train.u16'), V, 120, 13);
const quiet = { progress: false, evalCtx: 24, evalChunks: 4 } as const;

test('loss goes down (full training of a random Llama)', async () => {
  const r = await finetune({ ...quiet, model: llamaDir, out: null, tokens: toks, train: 'all', steps: 40, batch: 4, seqLen: 32, lr: 1e-2, warmup: 0.1 });
  const first = r.history[0]!.loss, last = r.history.slice(-5).reduce((a, h) => a + h.loss, 0) / 5;
  assert.ok(last < 0.7 * first, `loss ${first.toFixed(3)} → ${last.toFixed(3)}`);
  assert.ok(r.evals.at(-1)!.ppl < 0.7 * r.evals[0]!.ppl, `eval ppl ${r.evals[0]!.ppl} → ${r.evals.at(-1)!.ppl}`);
  assert.ok(r.throughput.gemmFlops > 0 && r.throughput.tokens === 40 * 4 * 32);
});

function files(dir: string): Record<string, Buffer> {
  return Object.fromEntries(['model.safetensors', 'trainer/optimizer.safetensors'].map((f) => [f, readFileSync(join(dir, f))]));
}

/** The trainer state without wall-clock fields. */
function timeless(r: FinetuneReport): unknown {
  return { ...r, throughput: null, evals: r.evals.map((e) => ({ ...e, seconds: 0 })), output: null };
}

const mlaRun = { ...quiet, model: mlaDir, tokens: toks, teacher: llamaDir, kdWeight: 0.5, train: 'attention' as const, steps: 6, batch: 3, seqLen: 24, lr: 3e-3, evalEvery: 2 };

test('determinism: two runs with a seed are byte-identical (MLA bf16, attention only, distillation)', async () => {
  const a = await finetune({ ...mlaRun, out: join(tmp, 'det-a') });
  const b = await finetune({ ...mlaRun, out: join(tmp, 'det-b') });
  assert.deepEqual(files(join(tmp, 'det-a')), files(join(tmp, 'det-b')));
  assert.deepEqual(timeless(a), timeless(b));
  // Only attention tensors the conversion made changed; o_proj, MLP, norms, embedding did not.
  const before = loadModel(mlaDir).model, afterM = loadModel(join(tmp, 'det-a')).model;
  const src0 = before.layers[0]!, src1 = afterM.layers[0]!;
  assert.deepEqual((src0.mlp as SwiGluMlp).up.weight.data, (src1.mlp as SwiGluMlp).up.weight.data);
  assert.notDeepEqual((src0.attn as unknown as { p: { kvB: { weight: Tensor } } }).p.kvB.weight.data, (src1.attn as unknown as { p: { kvB: { weight: Tensor } } }).p.kvB.weight.data);
  const o0 = (src0.attn as unknown as { p: { o: { weight: Tensor } } }).p.o.weight.data, o1 = (src1.attn as unknown as { p: { o: { weight: Tensor } } }).p.o.weight.data;
  assert.deepEqual(o0, o1);
  assert.ok(a.history.every((h) => h.kl !== null && h.kl >= 0) && a.evals.every((e) => e.kl !== null));
});

test('resume: stopping at step 3 and resuming equals the uninterrupted run', async () => {
  const full = await finetune({ ...mlaRun, out: join(tmp, 'full') });
  const part = await finetune({ ...mlaRun, out: join(tmp, 'part'), stopAt: 3 });
  assert.equal(part.finished, false);
  assert.equal(part.step, 3);
  const rest = await finetune({ resume: join(tmp, 'part'), progress: false });
  assert.equal(rest.finished, true);
  assert.deepEqual(files(join(tmp, 'part')), files(join(tmp, 'full')));
  assert.deepEqual(timeless(rest), timeless(full));
  await assert.rejects(finetune({ resume: join(tmp, 'part'), progress: false }), /already finished/);
});

test('a saved checkpoint loads through loadModel and computes what the trainer computed', async () => {
  const out = join(tmp, 'reload');
  await finetune({ ...quiet, model: llamaDir, out, tokens: toks, train: 'all', steps: 3, batch: 2, seqLen: 16, lr: 1e-2 });
  const loaded = loadModel(out);
  assert.equal(loaded.config.hiddenSize, 32);
  // Reload the trainer from the saved folder and compare logits with the engine's.
  const ck = (await import('../src/io/checkpoint.js')).openCheckpoint(out);
  const tm = TrainModel.create(createBackend('f32'), loaded.config, ck, 'all');
  ck.close();
  const row = packedRow([16], V, 21);
  assert.ok(maxAbsDiff(tm.logits(row), engineRowLogits(loaded.model, row.tokens, row.segments)) < 1e-4);
  // The bf16 MLA run above saved bf16 tensors and fp32 masters beside them.
  const mlaOut = loadModel(join(tmp, 'det-a'));
  assert.equal(mlaOut.model.weightDtype, 'bf16');
  assert.ok(mlaOut.mla, 'still an MLA folder');
  const st = JSON.parse(readFileSync(join(tmp, 'det-a', 'trainer_state.json'), 'utf8')) as FinetuneReport;
  assert.equal(st.step, 6);
});

test('clear errors: existing output, missing data, kd without teacher', async () => {
  await assert.rejects(finetune({ ...quiet, model: llamaDir, out: join(tmp, 'reload'), tokens: toks, steps: 1 }), /exists and is not empty/);
  await assert.rejects(finetune({ ...quiet, model: llamaDir, out: null, steps: 1 }), /exactly one of --text FILE and --tokens FILE/);
  await assert.rejects(finetune({ ...quiet, model: llamaDir, out: null, tokens: toks, kdWeight: 0.5, steps: 1 }), /needs --teacher/);
  await assert.rejects(finetune({ ...quiet, model: llamaDir, out: null, text: toks, steps: 1 }), /has no tokenizer/);
});

/** Runs a CLI command in-process, capturing stdout. */
async function capture(name: string, argv: string[]): Promise<string> {
  const cmd = await commands[name]!();
  let out = '';
  const log = console.log;
  const write = process.stdout.write.bind(process.stdout);
  console.log = (...a: unknown[]) => { out += a.join(' ') + '\n'; };
  process.stdout.write = ((chunk: string | Uint8Array) => { out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString(); return true; }) as typeof process.stdout.write;
  try {
    await cmd.run(argv);
  } finally {
    console.log = log;
    process.stdout.write = write;
  }
  return out;
}

test('transmla finetune: a stopped run resumes from the command line; the report has the loss curve', async () => {
  const out = join(tmp, 'cli');
  const first = await capture('finetune', [llamaDir, '--tokens', toks, '--out', out, '--train', 'all', '--steps', '3', '--batch', '2', '--seqlen', '16', '--eval-ctx', '16', '--eval-chunks', '2', '--stop-at', '2']);
  assert.match(first, /stopped at step 2 of 3; continue with: transmla finetune --resume /);
  assert.match(first, /training loss \(CE, per step\)/);
  const second = await capture('finetune', ['--resume', out]);
  assert.match(second, /finished 3 steps/);
  assert.match(second, /tokens\/s per step/);
  const cmd = await commands.finetune!();
  await assert.rejects(cmd.run(['--resume', out, '--lr', '1']), UsageError);
  await assert.rejects(cmd.run([llamaDir, '--tokens', toks, '--train', 'everything']), /--train must be attention or all/);
});
