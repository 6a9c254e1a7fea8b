// transmla convert <model> --out DIR: GQA/MHA → MLA (TransMLA, or MHA2MLA with --method mha2mla),
// printing each stage's perplexity.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { bool, exactlyOne, int, num, onePositional, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { convertModel, type ConvertOptions, type ConvertVariant } from '../../convert/transmla.js';
import { LATENTS, ROPE_BASES, type LatentMethod, type RopeBasis } from '../../convert/aware-layer.js';
import { RANK_ALLOCS, type RankAlloc } from '../../convert/rank-alloc.js';
import { PROFILE_NAMES, withProfile, type ProfileName } from '../../convert/profiles.js';
import type { CalibOrder } from '../../schema/transmla-json.js';
import { checkExportOutput, convertToTarget } from '../../export/targets.js';
import { checkOutputDir } from '../../io/atomic-dir.js';
import { withHfFolder } from '../../export/llama2c.js';
import { evalTexts, methodFlag, MHA2MLA_USAGE, runMha2mlaConvert } from './convert-mha2mla.js';
import { EXPORT_USAGE, outType, target } from './export.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';

export const command: Command = {
  usage: 'transmla convert <model> [--method transmla] --out DIR (--kv-lora-rank R | --kv-fraction F) --calib FILE\n' +
    '    [--profile fast|faithful] [--variant stock|exact] [--rope-dim D|auto] [--freqfold auto|M] [--q-lora-rank Q]\n' +
    '    [--rope-basis pca|query-aware] [--latent bkv-pca|output-aware] [--key-weight B] [--nope-refit]\n' +
    '    [--rank-alloc uniform|greedy|joint [--rank-min N]]\n' +
    '    [--balance-kv-ratio X] [--calib-samples N] [--calib-seqlen L] [--seed 42] [--calib-order faithful|sequential]\n' +
    '    [--search proxy|perplexity] [--search-chunks 16] [--eval-text FILE[,FILE…]] [--eval-ctx N] [--eval-chunks N]\n' +
    '    [--no-eval] [--overwrite] [--no-save] [--json] [--max-bias-residual X] [--target deepseek-v3|deepseek-v2|gguf [--outtype f32|f16|bf16|q8_0|q4_0]]\n' +
    '    [--tokenizer FILE]\n' +
    '  <model> may be a llama2.c .bin: it is imported into a temporary folder first (its tokenizer: tokenizer.bin or\n' +
    '    the only other tok*.bin beside it, or --tokenizer FILE, a tok*.bin or SentencePiece .model).\n' +
    '  Writes the stock DeepSeek-V3 folder (calibrated kv_a_layernorm, stock keys only) that transformers, vLLM,\n' +
    '  SGLang and llama.cpp run; --variant exact writes transmla\'s exact variant instead (no latent norm, its own\n' +
    '  model_type transmla_mla so no stock engine misreads it; `transmla export` turns it into the stock folder).\n' +
    '  Converts layer by layer: memory holds one layer of weights, not the model.\n' +
    '  --profile fast (default): 64 × 256 calibration tokens, shapes scored by each layer\'s attention-output error\n' +
    '    (the proxy), 8,192 tokens per evaluation text (8 × 1024 or 4 × 2048). About 3 sweeps of the 16K calibration\n' +
    '    tokens plus 4 of the evaluation tokens (one per stage) through every layer.\n' +
    '  --profile faithful: TransMLA\'s recipe, 128 × 256 calibration tokens, FreqFold/d_R searched by held-out\n' +
    '    perplexity of whole candidate models (the model is loaded whole and fully evaluated per candidate),\n' +
    '    every chunk of each evaluation text: several times the time of fast.\n' +
    '  Flags given explicitly override the profile.\n' +
    '  --kv-fraction F: cache r + d_R = F·(2·G·d) values per token per layer (e.g. 0.3125).\n' +
    '  --rope-dim D|auto: qk_rope_head_dim, an even divisor of head_dim. With --kv-fraction the default is auto:\n' +
    '    every split of the budget is tried (each with its FreqFold search). With --kv-lora-rank the default is\n' +
    '    the largest even divisor ≤ head_dim/2 and ≤ r.\n' +
    '  --calib FILE: .txt (documents separated by blank lines) or .jsonl ("text" fields); the last 10 % of its\n' +
    '    documents are held out for the searches and, without --eval-text, for the reported perplexities.\n' +
    '  --eval-text: perplexity, KL and top-1 agreement of every stage against the original on each file;\n' +
    '    prefix a file with "lines:" to read every line as a document (WikiText-2 as the papers read it).\n' +
    '  --rope-basis query-aware: the RoPE dims chosen by the score error they save (balanced truncation of the\n' +
    '    key and absorbed-query moments) instead of the key energy; --latent output-aware: the joint latent in the\n' +
    '    metric of q·k and W_o·v, kv_b refit by least squares (with --calib-order sequential: against the source\n' +
    '    model\'s keys and values); --key-weight B weighs its key term (default 1); --nope-refit: the keys that\n' +
    '    lose RoPE scaled per frequency by the source attention\'s mean cos(ωΔ) (a logit least squares). docs/methods.md#aware.\n' +
    '  --rank-alloc greedy: per-layer kv_lora_rank, the same total Σ r_l = layers·r (same exact-variant cache),\n' +
    '    shared by each component\'s first-order attention-output error; joint: per-layer (d_R, FreqFold, r) with\n' +
    '    Σ (r_l + d_R,l) fixed, each candidate measured with the method\'s step on calibration samples (both from\n' +
    '    original-model statistics; rank floor --rank-min, default ⌈r/4⌉). The stock folder has one kv_lora_rank and\n' +
    '    qk_rope_head_dim: every layer is padded to the largest (exact, but its cache is layers·(r_max + d_R,max));\n' +
    '    --variant exact keeps the per-layer widths (transmla\'s engine runs them). docs/methods.md#aware-budget.\n' +
    '  --balance-kv-ratio 0 turns key/value balancing off.  --no-eval: no stage evaluation.\n' + EXPORT_USAGE + MHA2MLA_USAGE,
  async run(argv) {
    const method = methodFlag(argv);
    if (method === 'mha2mla') return runMha2mlaConvert(argv);
    if (method !== 'transmla') throw new UsageError(`--method must be transmla or mha2mla, got "${method}"`);
    const p = parseArgs(argv, {
      method: 'string', out: 'string', 'kv-lora-rank': 'string', 'kv-fraction': 'string', 'rope-dim': 'string', freqfold: 'string',
      'q-lora-rank': 'string', 'balance-kv-ratio': 'string', calib: 'string', 'calib-samples': 'string',
      'calib-seqlen': 'string', seed: 'string', 'calib-order': 'string', 'eval-text': 'string', 'eval-ctx': 'string',
      'eval-chunks': 'string', 'search-chunks': 'string', overwrite: 'boolean', 'no-save': 'boolean', json: 'boolean', 'no-eval': 'boolean',
      target: 'string', outtype: 'string', profile: 'string', variant: 'string', search: 'string', 'max-bias-residual': 'string', tokenizer: 'string',
      'rope-basis': 'string', latent: 'string', 'key-weight': 'string', 'nope-refit': 'boolean', 'rank-alloc': 'string', 'rank-min': 'string', ...HUB_FLAGS,
    });
    const spec = onePositional(p, 'model');
    exactlyOne(p, 'kv-lora-rank', 'kv-fraction', '--kv-lora-rank R or --kv-fraction F');
    if (str(p, 'rope-dim') === 'auto' && p.flags.has('kv-lora-rank')) throw new UsageError('--rope-dim auto needs --kv-fraction (a fixed cache budget to split between r and d_R)');
    const out = str(p, 'out');
    if (!out && !bool(p, 'no-save')) throw new UsageError('--out DIR is required (or --no-save to only measure)');
    const calib = str(p, 'calib');
    if (!calib) throw new UsageError('--calib FILE is required');
    const ff = str(p, 'freqfold') ?? 'auto';
    if (ff !== 'auto' && !/^\d+$/.test(ff)) throw new UsageError(`--freqfold must be "auto" or a positive integer, got "${ff}"`);
    const order = str(p, 'calib-order');
    if (order !== undefined && order !== 'faithful' && order !== 'sequential') throw new UsageError(`--calib-order must be faithful or sequential, got "${order}"`);
    const profile = str(p, 'profile') ?? 'fast';
    if (!(PROFILE_NAMES as readonly string[]).includes(profile)) throw new UsageError(`--profile must be ${PROFILE_NAMES.join(' or ')}, got "${profile}"`);
    const variant = str(p, 'variant') ?? 'stock';
    if (variant !== 'stock' && variant !== 'exact') throw new UsageError(`--variant must be stock or exact, got "${variant}"`);
    const search = str(p, 'search');
    if (search !== undefined && search !== 'proxy' && search !== 'perplexity') throw new UsageError(`--search must be proxy or perplexity, got "${search}"`);
    const ropeBasis = str(p, 'rope-basis');
    if (ropeBasis !== undefined && !(ROPE_BASES as readonly string[]).includes(ropeBasis)) throw new UsageError(`--rope-basis must be ${ROPE_BASES.join(' or ')}, got "${ropeBasis}"`);
    const latent = str(p, 'latent');
    if (latent !== undefined && !(LATENTS as readonly string[]).includes(latent)) throw new UsageError(`--latent must be ${LATENTS.join(' or ')}, got "${latent}"`);
    if (str(p, 'key-weight') !== undefined && latent !== 'output-aware') throw new UsageError('--key-weight weighs the output-aware latent\'s key term; it needs --latent output-aware');
    const rankAlloc = str(p, 'rank-alloc');
    if (rankAlloc !== undefined && !(RANK_ALLOCS as readonly string[]).includes(rankAlloc)) throw new UsageError(`--rank-alloc must be ${RANK_ALLOCS.join(' or ')}, got "${rankAlloc}"`);
    if (str(p, 'rank-min') !== undefined && (rankAlloc ?? 'uniform') === 'uniform') throw new UsageError('--rank-min is the floor of a per-layer allocation; it needs --rank-alloc greedy or joint');
    const json = bool(p, 'json');
    const noEval = bool(p, 'no-eval');
    const opts: ConvertOptions = withProfile(profile as ProfileName, {
      model: spec,
      out: bool(p, 'no-save') ? null : resolve(out!),
      overwrite: bool(p, 'overwrite'),
      kvLoraRank: int(p, 'kv-lora-rank', undefined, 1),
      kvFraction: num(p, 'kv-fraction', undefined, { gt: 0, le: 1 }),
      ropeDim: str(p, 'rope-dim') === 'auto' ? 'auto' : int(p, 'rope-dim', undefined, 2),
      qLoraRank: int(p, 'q-lora-rank', undefined, 1) ?? null,
      freqFold: ff === 'auto' ? 'auto' : Number(ff),
      balanceKvRatio: num(p, 'balance-kv-ratio', 1),
      ropeBasis: ropeBasis as RopeBasis | undefined,
      latent: latent as LatentMethod | undefined,
      keyWeight: num(p, 'key-weight', undefined, { gt: 0 }),
      nopeRefit: bool(p, 'nope-refit'),
      rankAlloc: rankAlloc as RankAlloc | undefined,
      rankMin: int(p, 'rank-min', undefined, 1),
      calib,
      calibSamples: int(p, 'calib-samples', undefined, 1),
      calibSeqLen: int(p, 'calib-seqlen', undefined, 2),
      seed: int(p, 'seed', 42),
      calibOrder: order as CalibOrder | undefined,
      search: search as 'proxy' | 'perplexity' | undefined,
      evalTexts: evalTexts(str(p, 'eval-text')),
      evalCtx: int(p, 'eval-ctx', undefined, 2),
      evalChunks: int(p, 'eval-chunks', undefined, 1),
      searchChunks: int(p, 'search-chunks', undefined, 1),
      variant: variant as ConvertVariant,
      maxBiasResidual: num(p, 'max-bias-residual', undefined, { ge: 0 }),
      evaluate: !noEval,
      progress: true,
      log: (line: string) => { (json ? process.stderr : process.stdout).write(line + '\n'); },
    });
    const tgt = str(p, 'target');
    if (tgt !== undefined && bool(p, 'no-save')) throw new UsageError('--target writes an export; it cannot be combined with --no-save');
    if (tgt !== undefined && variant === 'exact') throw new UsageError('--target writes a stock export; it cannot be combined with --variant exact');
    const exportTo = tgt === undefined ? null : { target: target(tgt), outType: outType(str(p, 'outtype')) };
    if (tgt === undefined && str(p, 'outtype') !== undefined) throw new UsageError('--outtype needs --target gguf');
    if (variant === 'exact' && str(p, 'max-bias-residual') !== undefined) throw new UsageError('--max-bias-residual bounds the bias fold of the stock folder; the exact variant keeps its biases');
    if (noEval) {
      if (opts.out === null) throw new UsageError('--no-eval needs --out (without evaluation there is nothing to measure)');
      if ((opts.evalTexts ?? []).length > 0) throw new UsageError('--no-eval and --eval-text contradict each other');
    }
    // Before a Hub model is fetched: the output must be usable (the library checks again, against the inputs).
    // (A llama2.c .bin is converted through a temporary folder, so the .bin itself is named here.)
    const local = existsSync(spec) ? [spec] : [];
    if (exportTo) checkExportOutput(exportTo.target, opts.out!, opts.overwrite ?? false, local);
    else if (opts.out) checkOutputDir(opts.out, { overwrite: opts.overwrite, source: local });
    const path = await modelArg(spec, p);
    // A llama2.c checkpoint goes through a temporary HF folder; transmla.json records the .bin.
    const { r, report } = await withHfFolder(path, str(p, 'tokenizer'), async (folder) => {
      const o: ConvertOptions = { ...opts, model: folder, sourcePath: path };
      const r = exportTo ? await convertToTarget({ ...o, out: o.out! }, exportTo) : null;
      return { r, report: r ? r.conversion : await convertModel(o) };
    });
    if (json) {
      const { stockExport, ...conversion } = report;
      console.log(JSON.stringify(r ? { conversion, export: { ...r.export, gguf: r.export.gguf && { ...r.export.gguf, tensorNames: undefined } } } : { conversion, stock: stockExport }, null, 2));
    } else {
      const s = report.seconds;
      console.log(`conversion ${(s.convertTotal - s.evaluation).toFixed(1)} s (evaluation ${s.evaluation.toFixed(1)} s of it... )`.replace(' of it... ', ''), `total ${s.convertTotal.toFixed(1)} s, peak RSS ${(report.peakRssBytes / 2 ** 20).toFixed(0)} MiB`);
    }
  },
};
