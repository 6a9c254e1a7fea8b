// `npm run bench -- decode-real [--shape llama-3.2-1b|small] [--mla random|convert] [--contexts 1024,4096,16384] [--threads 1,2]
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
// `--mla random` (default) writes random weights in the exact shapes the conversion outputs
// instead of converting (the conversion of a 1B model takes most of an hour on a shared 2-core
// machine; decode cost depends on the shapes only); `--mla convert` runs `convertModel`.
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

interface Args { mla: 'random' | 'convert'; shape: string; contexts: number[]; threads: number[]; weights: ('bf16' | QuantDType)[]; decodeTokens: number; reps: number; fill: 'prefill' | 'repeated-chunk'; llamaCpp: boolean; work: string | null }

function parse(argv: string[]): Args {
  const a: Args = { mla: 'random', shape: 'llama-3.2-1b', contexts: [1024, 4096, 16384], threads: [1, 2], weights: ['bf16', 'q8_0'], decodeTokens: 16, reps: 2, fill: 'repeated-chunk', llamaCpp: true, work: null };
  const list = (v: string): string[] => v.split(',').filter(Boolean);
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${f} needs a value`); return v; };
    if (f === '--shape') a.shape = val();
    else if (f === '--mla') a.mla = val() as Args['mla'];
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
  if (a.mla !== 'random' && a.mla !== 'convert') throw new Error('bench decode-real: --mla must be random or convert');
  if (a.fill !== 'prefill' && a.fill !== 'repeated-chunk') throw new Error('bench decode-real: --fill must be prefill or repeated-chunk');
  return a;
}

/** Random bf16 tensors, one at a time (uniform, std 0.02; norms, shapes of one entry, 1), deterministic. */
function* randomTensors(specs: Iterable<[string, number[]]>): Generator<NamedTensor> {
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
  for (const [name, shape] of specs) yield shape.length === 1 ? ones(name, shape[0]!) : mat(name, shape[0]!, shape[1]!);
}

/** The tensors of the Llama model (`attn`: its attention's tensors per layer; the MLA folder swaps them). */
function* llamaSpecs(s: Shape, attn: (p: string) => [string, number[]][]): Generator<[string, number[]]> {
  const D = s.hidden, I = s.inter;
  yield ['model.embed_tokens.weight', [s.vocab, D]];
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    yield [`${p}.input_layernorm.weight`, [D]];
    yield* attn(`${p}.self_attn`);
    yield [`${p}.post_attention_layernorm.weight`, [D]];
    yield [`${p}.mlp.gate_proj.weight`, [I, D]];
    yield [`${p}.mlp.up_proj.weight`, [I, D]];
    yield [`${p}.mlp.down_proj.weight`, [D, I]];
  }
  yield ['model.norm.weight', [D]];
}

const gqaAttention = (s: Shape) => (p: string): [string, number[]][] => {
  const D = s.hidden, H = s.heads, G = s.kvHeads, d = s.headDim;
  return [[`${p}.q_proj.weight`, [H * d, D]], [`${p}.k_proj.weight`, [G * d, D]], [`${p}.v_proj.weight`, [G * d, D]], [`${p}.o_proj.weight`, [D, H * d]]];
};

/**
 * The attention tensors TransMLA's stock output has for this source (convert --kv-lora-rank r
 * --rope-dim d_R, q_lora none): q_proj [H·(d_n+d_R), D] with d_n = head_dim, kv_a_proj_with_mqa
 * [r + d_R, D], kv_a_layernorm [r], kv_b_proj [H·(d_n+d_v), r], o_proj [D, H·d_v].
 */
const mlaAttention = (s: Shape) => (p: string): [string, number[]][] => {
  const D = s.hidden, H = s.heads, d = s.headDim, r = s.kvLoraRank, dR = s.ropeDim;
  return [[`${p}.q_proj.weight`, [H * (d + dR), D]], [`${p}.kv_a_proj_with_mqa.weight`, [r + dR, D]], [`${p}.kv_a_layernorm.weight`, [r]],
    [`${p}.kv_b_proj.weight`, [H * 2 * d, r]], [`${p}.o_proj.weight`, [D, H * d]]];
};

/** A stock DeepSeek-V3 (dense, MLA) folder of the conversion's shape with random weights (untied head, as the strict export writes). */
async function writeRandomMla(dir: string, s: Shape): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const config = {
    architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3', vocab_size: s.vocab, hidden_size: s.hidden,
    intermediate_size: s.inter, moe_intermediate_size: s.inter, num_hidden_layers: s.layers, num_attention_heads: s.heads, num_key_value_heads: s.heads,
    n_shared_experts: 1, n_routed_experts: 1, routed_scaling_factor: 1, n_group: 1, topk_group: 1, num_experts_per_tok: 1, first_k_dense_replace: s.layers, norm_topk_prob: true,
    kv_lora_rank: s.kvLoraRank, q_lora_rank: null, qk_rope_head_dim: s.ropeDim, v_head_dim: s.headDim, qk_nope_head_dim: s.headDim,
    hidden_act: 'silu', max_position_embeddings: 131072, rms_norm_eps: 1e-5, rope_theta: 500000, rope_scaling: null, rope_interleave: true,
    attention_bias: false, attention_dropout: 0, tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'bfloat16',
  };
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) copyFileSync(join(ASSETS, 'models', 'kjv-gqa', f), join(dir, f));
  const specs = [...llamaSpecs(s, mlaAttention(s)), ['lm_head.weight', [s.vocab, s.hidden]] as [string, number[]]];
  await writeCheckpoint(dir, randomTensors(specs));
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
  await writeCheckpoint(dir, randomTensors(llamaSpecs(s, gqaAttention(s))));
}

export async function run(argv: string[]): Promise<object> {
  const a = parse(argv);
  const s = SHAPES[a.shape]!;
  const log = (line: string): void => { process.stderr.write(`${line}\n`); };
  const loadStart = loadavg();
  const work = a.work ? resolve(a.work) : mkdtempSync(join(tmpdir(), 'transmla-decode-real-'));
  const src = join(work, `random-${a.shape}`), mla = join(work, `random-${a.shape}-mla-${a.mla}`);
  const t0 = performance.now();
  try {
    if (!existsSync(join(src, 'config.json'))) {
      log(`writing random ${a.shape} (bf16) to ${src}…`);
      await writeRandomLlama(src, s);
    }
    if (!existsSync(join(mla, 'config.json')) && a.mla === 'random') {
      log(`writing a random stock MLA model of the conversion's shape (kv_lora_rank ${s.kvLoraRank}, rope dim ${s.ropeDim}) to ${mla}…`);
      await writeRandomMla(mla, s);
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
