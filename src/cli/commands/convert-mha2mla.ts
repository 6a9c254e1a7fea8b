// transmla convert <model> --method mha2mla …: the MHA2MLA method's flags (convert.ts dispatches here).
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { bool, exactlyOne, int, num, onePositional, parseArgs, str, UsageError } from '../args.js';
import type { EvalTextSpec } from '../../convert/pipeline.js';
import { convertMha2mla, type Weighting } from '../../convert/mha2mla.js';
import type { LowRankInit } from '../../convert/mha2mla-layer.js';
import { ROPE_SELECTIONS, type NormStat, type RopeSelection } from '../../convert/rope-select.js';
import { textModeFor } from '../../eval/perplexity.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';
import { checkOutputDir } from '../../io/atomic-dir.js';
import { withHfFolder } from '../../export/llama2c.js';

export const MHA2MLA_USAGE =
  'transmla convert <model> --method mha2mla --out DIR (--kv-rank R | --kv-fraction F) --calib FILE [--rope-pairs r]\n' +
  '    [--selection 2norm|high|low|uniform] [--svd joint|split] [--weighting weights|activations] [--norm-stat mean|rms]\n' +
  '    [--calib-samples 128] [--calib-seqlen 256] [--seed 42] [--eval-text FILE[,FILE…]] [--eval-ctx N] [--eval-chunks N] [--overwrite] [--no-save] [--json] [--tokenizer FILE]\n' +
  '  Cache per token per layer: KV heads × 2r RoPE key dims + a latent of R values shared by all heads.\n' +
  '  --rope-pairs r: frequency pairs kept per KV head at their original frequencies (default head_dim/16, ≥ 1).\n' +
  '  --kv-fraction F: R = ⌊F·2·G·d⌋ − G·2r (equal cache bytes to a TransMLA model at the same F).\n' +
  '  --selection: which pairs (S_2-norm per layer and KV head from calibration; S_high/low/uniform fixed).\n' +
  '  --svd joint: one factorisation of [W_k,nope ; W_v] (rank R); split: W_k,nope and W_v separately (⌈R/2⌉ + ⌊R/2⌋).\n' +
  '  --weighting weights: truncated SVD of the weights (the paper); activations: the same factorisation weighted\n' +
  '    by the calibration second moment of the layer input (minimises the expected K/V output error).\n' +
  '  --norm-stat mean: exact mean per-token pair norms (the paper); rms: root mean square from the input Gram.';

const FLAGS = {
  method: 'string', out: 'string', 'kv-rank': 'string', 'kv-fraction': 'string', 'rope-pairs': 'string', selection: 'string',
  svd: 'string', weighting: 'string', 'norm-stat': 'string', calib: 'string', 'calib-samples': 'string', 'calib-seqlen': 'string',
  seed: 'string', 'eval-text': 'string', 'eval-ctx': 'string', 'eval-chunks': 'string', overwrite: 'boolean', 'no-save': 'boolean', json: 'boolean',
  tokenizer: 'string', ...HUB_FLAGS,
} as const;

/** The value of --method in argv (default 'transmla'), without parsing the other flags. */
export function methodFlag(argv: readonly string[]): string {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') break;
    if (a === '--method') return argv[i + 1] ?? '';
    if (a.startsWith('--method=')) return a.slice('--method='.length);
  }
  return 'transmla';
}

function oneOf<T extends string>(v: string | undefined, allowed: readonly T[], flag: string, dflt: T): T {
  if (v === undefined) return dflt;
  if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`--${flag} must be one of ${allowed.join(', ')}, got "${v}"`);
  return v as T;
}

/** --eval-text FILE[,FILE…]; a "lines:" prefix reads every line as a document (WikiText-2 as the papers do). */
export function evalTexts(v: string | undefined): EvalTextSpec[] {
  if (!v) return [];
  return v.split(',').filter((x) => x !== '').map((x) => (x.startsWith('lines:') ? { path: x.slice(6), mode: 'lines' as const } : { path: x, mode: textModeFor(x) }));
}

export async function runMha2mlaConvert(argv: string[]): Promise<void> {
  const p = parseArgs(argv, { ...FLAGS });
  const spec = onePositional(p, 'model');
  exactlyOne(p, 'kv-rank', 'kv-fraction', '--kv-rank R or --kv-fraction F');
  const out = str(p, 'out');
  if (!out && !bool(p, 'no-save')) throw new UsageError('--out DIR is required (or --no-save to only measure)');
  const calib = str(p, 'calib');
  if (!calib) throw new UsageError('--calib FILE is required (held-out documents, and the statistics S_2-norm and --weighting activations need)');
  const json = bool(p, 'json');
  const options = {
    out: bool(p, 'no-save') ? null : resolve(out!),
    overwrite: bool(p, 'overwrite'),
    ropePairs: int(p, 'rope-pairs', undefined, 0),
    kvRank: int(p, 'kv-rank', undefined, 1),
    kvFraction: num(p, 'kv-fraction', undefined, { gt: 0, le: 1 }),
    selection: oneOf<RopeSelection>(str(p, 'selection'), ROPE_SELECTIONS, 'selection', '2norm'),
    init: oneOf<LowRankInit>(str(p, 'svd'), ['joint', 'split'], 'svd', 'joint'),
    weighting: oneOf<Weighting>(str(p, 'weighting'), ['weights', 'activations'], 'weighting', 'weights'),
    normStat: oneOf<NormStat>(str(p, 'norm-stat'), ['mean', 'rms'], 'norm-stat', 'mean'),
    calib,
    calibSamples: int(p, 'calib-samples', 128, 1),
    calibSeqLen: int(p, 'calib-seqlen', 256, 2),
    seed: int(p, 'seed', 42),
    evalTexts: evalTexts(str(p, 'eval-text')),
    evalCtx: int(p, 'eval-ctx', undefined, 2),
    evalChunks: int(p, 'eval-chunks', undefined, 1),
    log: (line: string) => { (json ? process.stderr : process.stdout).write(line + '\n'); },
  };
  // Before a Hub model is fetched (convertMha2mla checks again, against the inputs).
  if (options.out) checkOutputDir(options.out, { overwrite: options.overwrite, source: existsSync(spec) ? [spec] : [] });
  const path = await modelArg(spec, p);
  // A llama2.c checkpoint goes through a temporary HF folder (see convert.ts).
  const report = await withHfFolder(path, str(p, 'tokenizer'), (folder) => convertMha2mla({ model: folder, sourcePath: path, ...options }));
  if (json) console.log(JSON.stringify(report, null, 2));
  else {
    const s = report.seconds;
    console.log(`conversion ${s.convertTotal.toFixed(1)} s (evaluation ${s.evaluation.toFixed(1)} s more), peak RSS ${(report.peakRssBytes / 2 ** 20).toFixed(0)} MiB`);
  }
}
