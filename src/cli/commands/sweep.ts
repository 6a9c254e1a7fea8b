// transmla sweep <model> --kv-fractions ...: converts at several cache budgets (per method) and
// draws perplexity vs KV fraction into sweep.html (+ sweep.json). Progress goes to stderr; the
// result to stdout: a summary table, or with --json the sweep.json record.
import { resolve } from 'node:path';
import { bool, int, onePositional, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import type { EvalTextSpec } from '../../convert/pipeline.js';
import type { CalibOrder } from '../../schema/transmla-json.js';
import { CONVERT_METHODS } from '../../convert/methods.js';
import { runSweep } from '../../convert/sweep.js';
import { formatSweepSummary } from '../../report/sweep-report.js';
import { textModeFor } from '../../eval/perplexity.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';
import { checkOutputDir } from '../../io/atomic-dir.js';

function list(v: string | undefined, flag: string): string[] {
  const xs = (v ?? '').split(',').map((x) => x.trim()).filter((x) => x !== '');
  if (xs.length === 0) throw new UsageError(`${flag} needs a comma-separated list`);
  return xs;
}

function evalTexts(v: string | undefined): EvalTextSpec[] {
  if (!v) return [];
  return v.split(',').filter((x) => x !== '').map((x) => (x.startsWith('lines:') ? { path: x.slice(6), mode: 'lines' as const } : { path: x, mode: textModeFor(x) }));
}

export const command: Command = {
  usage: 'transmla sweep <model> --kv-fractions F1,F2,... --calib FILE --out DIR [--revision REV] [--methods transmla]\n' +
    '    [--eval-text FILE[,FILE…]] [--eval-ctx N] [--eval-chunks N] [--calib-samples 128] [--calib-seqlen 256] [--seed 42]\n' +
    '    [--freqfold auto|M] [--calib-order faithful|sequential] [--search-chunks 16] [--save-models] [--overwrite] [--json]\n' +
    `  methods: ${Object.keys(CONVERT_METHODS).join(', ')} (each with its defaults; --freqfold, --calib-order and --search-chunks\n` +
    '  are TransMLA\'s). Writes DIR/sweep.json (after every point) and DIR/sweep.html;\n' +
    '  --save-models keeps each converted model in DIR/<method>-kv<fraction> with its report.html.\n' +
    '  Progress goes to stderr; stdout gets a summary table (KV fraction, bytes/token, perplexity per stage, KL,\n' +
    '  top-1, seconds per point), or with --json the sweep.json record.',
  async run(argv) {
    const p = parseArgs(argv, {
      'kv-fractions': 'string', methods: 'string', calib: 'string', out: 'string', 'eval-text': 'string', 'eval-ctx': 'string',
      'eval-chunks': 'string', 'calib-samples': 'string', 'calib-seqlen': 'string', seed: 'string', freqfold: 'string',
      'calib-order': 'string', 'search-chunks': 'string', 'save-models': 'boolean', overwrite: 'boolean', json: 'boolean', ...HUB_FLAGS,
    });
    const spec = onePositional(p, 'model');
    const fractions = list(str(p, 'kv-fractions'), '--kv-fractions').map((x) => {
      const f = Number(x);
      if (!(f > 0 && f <= 1)) throw new UsageError(`--kv-fractions values must be in (0, 1], got "${x}"`);
      return f;
    });
    const methods = str(p, 'methods') === undefined ? ['transmla'] : list(str(p, 'methods'), '--methods');
    for (const m of methods) if (!CONVERT_METHODS[m]) throw new UsageError(`unknown method "${m}"; known: ${Object.keys(CONVERT_METHODS).join(', ')}`);
    const calib = str(p, 'calib');
    if (!calib) throw new UsageError('--calib FILE is required');
    const out = str(p, 'out');
    if (!out) throw new UsageError('--out DIR is required');
    const ff = str(p, 'freqfold') ?? 'auto';
    if (ff !== 'auto' && !/^\d+$/.test(ff)) throw new UsageError(`--freqfold must be "auto" or a positive integer, got "${ff}"`);
    const order = str(p, 'calib-order') ?? 'faithful';
    if (order !== 'faithful' && order !== 'sequential') throw new UsageError(`--calib-order must be faithful or sequential, got "${order}"`);
    const convert = {
      calib, freqFold: ff === 'auto' ? 'auto' as const : Number(ff), calibOrder: order as CalibOrder,
      calibSamples: int(p, 'calib-samples', 128, 1), calibSeqLen: int(p, 'calib-seqlen', 256, 2), seed: int(p, 'seed', 42),
      evalTexts: evalTexts(str(p, 'eval-text')), evalCtx: int(p, 'eval-ctx', undefined, 2), evalChunks: int(p, 'eval-chunks', undefined, 1),
      searchChunks: int(p, 'search-chunks', undefined, 1),
    };
    // Before a Hub model is fetched (runSweep checks again, against the inputs).
    checkOutputDir(resolve(out), { overwrite: bool(p, 'overwrite') });
    const report = await runSweep({
      model: await modelArg(spec, p), fractions, methods, out: resolve(out), saveModels: bool(p, 'save-models'), overwrite: bool(p, 'overwrite'),
      convert,
      log: (line) => process.stderr.write(`${line}\n`),
    });
    process.stdout.write(bool(p, 'json') ? `${JSON.stringify(report, null, 2)}\n` : `${formatSweepSummary(report)}\n`);
  },
};
