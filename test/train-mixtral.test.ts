// Fine-tuning Mixtral folders: the trainer's forward equals the engine's, `--train attention`
// trains q/k/v/o and leaves routers and experts bit for bit, `--train all` trains routers and
// experts and lowers the loss, and router jitter (which the trainer does not implement) is refused.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { buildModel } from '../src/arch/registry.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { createBackend } from '../src/train/backend.js';
import { finetune } from '../src/train/finetune.js';
import { TrainModel } from '../src/train/model.js';
import { maxAbsDiff, mulberry32 } from './helpers/random-llama.js';
import { randomMixtral } from './helpers/random-mixtral.js';
import { packedRow } from './helpers/random-train.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-train-mixtral-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const V = 48;
const m = randomMixtral({ hidden: 32, heads: 4, kvHeads: 2, headDim: 8, inter: 24, vocab: V, layers: 2, experts: 4, topK: 2, seed: 21 });

function folder(name: string, json: Record<string, unknown>): string {
  const dir = join(tmp, name);
  mkdirSync(dir);
  writeSafetensors(join(dir, 'model.safetensors'), m.src.names().map((n) => ({ name: n, tensor: m.src.get(n) })));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...json, torch_dtype: 'float32' }));
  return dir;
}

/** Documents that are arithmetic progressions mod V after a BOS: learnable from context. */
function tokenFile(path: string, docs: number, seed: number): string {
  const rnd = mulberry32(seed), ids: number[] = [];
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

const dir = folder('mixtral', m.json);
const toks = tokenFile(join(tmp, 'train.u16'), 120, 13);
const quiet = { progress: false, evalCtx: 24, evalChunks: 4 } as const;

test('trainer forward equals the engine forward (documents packed in one row)', () => {
  const row = packedRow([7, 5, 4], V, 3);
  const tm = TrainModel.create(createBackend('f32'), m.config, m.src, 'all');
  const engine = buildModel(m.config, m.src);
  const want = new Float32Array(row.T * V);
  for (let s = 0; s < row.segments.length; s++) {
    const a = row.segments[s]!, b = s + 1 < row.segments.length ? row.segments[s + 1]! : row.T;
    want.set(engine.forward(Array.from(row.tokens.subarray(a, b)), engine.newCache(), { logits: 'all' }), a * V);
  }
  const err = maxAbsDiff(tm.logits(row), want);
  assert.ok(err < 1e-4, `max |trainer − engine| = ${err}`);
});

function changed(a: string, b: string): { changed: string[]; same: string[] } {
  const ca = openCheckpoint(a), cb = openCheckpoint(b);
  try {
    const out = { changed: [] as string[], same: [] as string[] };
    for (const n of ca.names()) (maxAbsDiff(ca.get(n).data, cb.get(n).data) === 0 ? out.same : out.changed).push(n);
    return out;
  } finally {
    ca.close(); cb.close();
  }
}

test('--train attention: q/k/v/o change, routers, experts, norms and embeddings do not', async () => {
  const out = join(tmp, 'attn');
  const r = await finetune({ ...quiet, model: dir, out, tokens: toks, train: 'attention', steps: 4, batch: 2, seqLen: 24, lr: 1e-2 });
  const { changed: moved, same } = changed(dir, out);
  assert.deepEqual(moved.sort(), m.src.names().filter((n) => /self_attn\.[qkvo]_proj\.weight$/.test(n)).sort());
  assert.ok(same.some((n) => n.includes('block_sparse_moe.gate')) && same.some((n) => n.includes('experts.3.w2')));
  assert.equal(r.params.trained, m.src.names().filter((n) => n.includes('self_attn')).reduce((a, n) => a + m.src.get(n).data.length, 0));
});

test('--train all trains routers and experts and lowers the loss', async () => {
  const out = join(tmp, 'all');
  const r = await finetune({ ...quiet, model: dir, out, tokens: toks, train: 'all', steps: 30, batch: 4, seqLen: 32, lr: 1e-2, warmup: 0.1 });
  const first = r.history[0]!.loss, last = r.history.slice(-5).reduce((a, h) => a + h.loss, 0) / 5;
  assert.ok(last < 0.8 * first, `loss ${first.toFixed(3)} → ${last.toFixed(3)}`);
  const { changed: moved } = changed(dir, out);
  for (let l = 0; l < 2; l++) assert.ok(moved.includes(`model.layers.${l}.block_sparse_moe.gate.weight`), `layer ${l} router trained`);
  assert.ok(moved.filter((n) => /experts\.\d\.w[123]\.weight$/.test(n)).length >= 12, 'experts trained');
});

test('router jitter is refused with the reason', async () => {
  const jit = folder('jitter', { ...m.json, router_jitter_noise: 0.01 });
  await assert.rejects(finetune({ ...quiet, model: jit, out: null, tokens: toks, train: 'attention', steps: 1 }), /router_jitter_noise 0\.01: transformers multiplies the MoE input by uniform noise in \[0\.99, 1\.01\] while training/);
});
