// `npm run bench -- decode-real [--shape llama-3.2-1b|small] [--contexts 1024,4096,16384] [--threads 1,2]
//   [--weights bf16,q8_0] [--decode-tokens 16] [--reps 2] [--fill repeated-chunk|prefill] [--no-llamacpp] [--work DIR]`
//
// Decode speed at a real model shape: a random-weight model of Llama-3.2-1B's shape (16 layers,
// hidden 2048, 32/8 heads × 64, MLP 8192, vocab 128,256, tied embeddings, bf16) and its TransMLA
// conversion (the default stock DeepSeek-V3 folder, so llama.cpp runs it as deepseek2), each in
// our engine and in llama.cpp on a GGUF of the same weights (bf16, and Q8_0 where our engine loads
// with --weights q8_0 and llama.cpp gets the Q8_0 GGUF we write, bit-identical to
// llama-quantize's), at every context and thread count. Every combination is one `runBench`
// (src/bench/bench.ts): the engines run one after another in child processes, the memory
// bandwidth is read between their timed repetitions, and the load average is recorded before
// and after. The weights are random (decode cost does not depend on their values); the
// conversion calibrates on a few KJV sequences only (its quality is not what is measured).
// `--shape small` is the same pipeline at a toy size, to check the bench quickly.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCheckpoint } from '../src/io/checkpoint.js';
import type { NamedTensor } from '../src/io/safetensors.js';
import { convertModel } from '../src/convert/transmla.js';
import { runBench, type BenchReport } from '../src/bench/bench.js';
import { kernels } from '../src/kernels/index.js';
import type { QuantDType } from '../src/kernels/types.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ASSETS = resolve(REPO, '..', 'shared', 'assets');

interface Shape { layers: number; hidden: number; heads: number; kvHeads: number; headDim: number; inter: number; vocab: number; kvLoraRank: number; ropeDim: number }

const SHAPES: Record<string, Shape> = {
  // meta-llama/Llama-3.2-1B config.json; the MLA conversion keeps half of the 2·8·64 = 1024 cache values per token per layer.
  'llama-3.2-1b': { layers: 16, hidden: 2048, heads: 32, kvHeads: 8, headDim: 64, inter: 8192, vocab: 128256, kvLoraRank: 448, ropeDim: 64 },
  small: { layers: 2, hidden: 256, heads: 8, kvHeads: 2, headDim: 32, inter: 512, vocab: 32000, kvLoraRank: 64, ropeDim: 32 },
};

interface Args { shape: string; contexts: number[]; threads: number[]; weights: ('bf16' | QuantDType)[]; decodeTokens: number; reps: number; fill: 'prefill' | 'repeated-chunk'; llamaCpp: boolean; work: string | null }

function parse(argv: string[]): Args {
  const a: Args = { shape: 'llama-3.2-1b', contexts: [1024, 4096, 16384], threads: [1, 2], weights: ['bf16', 'q8_0'], decodeTokens: 16, reps: 2, fill: 'repeated-chunk', llamaCpp: true, work: null };
  const list = (v: string): string[] => v.split(',').filter(Boolean);
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${f} needs a value`); return v; };
    if (f === '--shape') a.shape = val();
    else if (f === '--contexts') a.contexts = list(val()).map(Number);
    else if (f === '--threads') a.threads = list(val()).map(Number);
    else if (f === '--weights') a.weights = list(val()) as Args['weights'];
    else if (f === '--decode-tokens') a.decodeTokens = Number(val());
    else if (f === '--reps') a.reps = Number(val());
    else if (f === '--fill') a.fill = val() as Args['fill'];
    else if (f === '--no-llamacpp') a.llamaCpp = false;
    else if (f === '--work') a.work = val();
    else throw new Error(`bench decode-real: unknown option ${f}`);
  }
  if (!SHAPES[a.shape]) throw new Error(`bench decode-real: --shape must be ${Object.keys(SHAPES).join(' or ')}`);
  if (a.weights.some((w) => w !== 'bf16' && w !== 'q8_0' && w !== 'q4_0')) throw new Error('bench decode-real: --weights takes bf16, q8_0, q4_0');
  if (a.fill !== 'prefill' && a.fill !== 'repeated-chunk') throw new Error('bench decode-real: --fill must be prefill or repeated-chunk');
  return a;
}

/** Random bf16 tensors of the shape, one at a time (uniform, std 0.02; norms 1), deterministic. */
function* randomTensors(s: Shape): Generator<NamedTensor> {
  let seed = 0x9e3779b9;
  const rnd = (): number => {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  const mat = (name: string, rows: number, cols: number): NamedTensor => {
    const data = new Uint16Array(rows * cols);
    const a = 0.02 * Math.sqrt(3);
    for (let i = 0; i < data.length; i++) { f32[0] = (2 * rnd() - 1) * a; data[i] = u32[0]! >>> 16; }
    return { name, tensor: { dtype: 'bf16', shape: [rows, cols], data } };
  };
  const ones = (name: string, n: number): NamedTensor => ({ name, tensor: { dtype: 'bf16', shape: [n], data: new Uint16Array(n).fill(0x3f80) } });
  const D = s.hidden, H = s.heads, G = s.kvHeads, d = s.headDim, I = s.inter;
  yield mat('model.embed_tokens.weight', s.vocab, D);
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    yield ones(`${p}.input_layernorm.weight`, D);
    yield mat(`${p}.self_attn.q_proj.weight`, H * d, D);
    yield mat(`${p}.self_attn.k_proj.weight`, G * d, D);
    yield mat(`${p}.self_attn.v_proj.weight`, G * d, D);
    yield mat(`${p}.self_attn.o_proj.weight`, D, H * d);
    yield ones(`${p}.post_attention_layernorm.weight`, D);
    yield mat(`${p}.mlp.gate_proj.weight`, I, D);
    yield mat(`${p}.mlp.up_proj.weight`, I, D);
    yield mat(`${p}.mlp.down_proj.weight`, D, I);
  }
  yield ones('model.norm.weight', D);
}

async function writeRandomLlama(dir: string, s: Shape): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const config = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: s.hidden, intermediate_size: s.inter,
    num_hidden_layers: s.layers, num_attention_heads: s.heads, num_key_value_heads: s.kvHeads, head_dim: s.headDim,
    hidden_act: 'silu', max_position_embeddings: 131072, rms_norm_eps: 1e-5, rope_theta: 500000, rope_scaling: null,
    attention_bias: false, mlp_bias: false, tie_word_embeddings: true, vocab_size: s.vocab, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'bfloat16',
  };
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  // The KJV tokenizer (32,000 tokens) stands in for Llama 3's: the GGUF pads the vocabulary to the embedding's rows.
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) copyFileSync(join(ASSETS, 'models', 'kjv-gqa', f), join(dir, f));
  await writeCheckpoint(dir, randomTensors(s));
}

export async function run(argv: string[]): Promise<object> {
  const a = parse(argv);
  const s = SHAPES[a.shape]!;
  const log = (line: string): void => { process.stderr.write(`${line}\n`); };
  const loadStart = loadavg();
  const work = a.work ? resolve(a.work) : mkdtempSync(join(tmpdir(), 'transmla-decode-real-'));
  const src = join(work, `random-${a.shape}`), mla = join(work, `random-${a.shape}-mla`);
  const t0 = performance.now();
  try {
    if (!existsSync(join(src, 'config.json'))) {
      log(`writing random ${a.shape} (bf16) to ${src}…`);
      await writeRandomLlama(src, s);
    }
    if (!existsSync(join(mla, 'config.json'))) {
      log(`converting to MLA (kv_lora_rank ${s.kvLoraRank}, rope dim ${s.ropeDim})…`);
      await convertModel({
        model: src, out: mla, kvLoraRank: s.kvLoraRank, ropeDim: s.ropeDim, freqFold: 1, qLoraRank: null,
        calib: join(ASSETS, 'text', 'kjv-old-testament-calib.txt'), calibSamples: 4, calibSeqLen: 64, evaluate: false, progress: false,
      });
    }
    const prepSeconds = (performance.now() - t0) / 1000;
    const runs: { weights: string; threads: number; loadAverage: { before: number[]; after: number[] }; report: BenchReport }[] = [];
    for (const w of a.weights) {
      for (const threads of a.threads) {
        log(`--- ${w} weights, ${threads} thread${threads === 1 ? '' : 's'} ---`);
        const before = loadavg();
        const report = await runBench({
          model: mla, compare: src, contexts: a.contexts, decodeTokens: a.decodeTokens, reps: a.reps, threads,
          weights: w === 'bf16' ? null : w, kvDtype: 'f16', fill: a.fill, llamaCpp: a.llamaCpp, log,
        });
        runs.push({ weights: w, threads, loadAverage: { before, after: loadavg() }, report });
      }
    }
    return {
      bench: 'decode-real', shape: a.shape, dims: s, args: a, kernels: kernels().backend,
      machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? null, totalMemoryBytes: totalmem() },
      loadAverage: { start: loadStart, end: loadavg() }, prepSeconds, runs,
      note: 'our engine: f16 KV/latent cache; llama.cpp: its default f16 cache. ' +
        (a.fill === 'repeated-chunk' ? 'Our cache is filled by prefilling 512 tokens and repeating their rows up to each context; llama.cpp prefills the whole context.' : 'Both engines prefill every context.'),
    };
  } finally {
    if (!a.work) rmSync(work, { recursive: true, force: true });
  }
}
