// transmla convert <model> --out DIR: GQA/MHA → MLA (TransMLA, or MHA2MLA with --method mha2mla),
// printing each stage's perplexity.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { bool, exactlyOne, int, num, onePositional, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { convertModel, type ConvertOptions } from '../../convert/transmla.js';
import type { CalibOrder } from '../../schema/transmla-json.js';
import { checkExportOutput, convertToTarget } from '../../export/targets.js';
import { checkOutputDir } from '../../io/atomic-dir.js';
import { withHfFolder } from '../../export/llama2c.js';
import { evalTexts, methodFlag, MHA2MLA_USAGE, runMha2mlaConvert } from './convert-mha2mla.js';
import { EXPORT_USAGE, outType, target } from './export.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';

export const command: Command = {
  usage: 'transmla convert <model> [--method transmla] --out DIR (--kv-lora-rank R | --kv-fraction F) [--rope-dim D] --calib FILE\n' +
    '    [--freqfold auto|M] [--q-lora-rank Q] [--balance-kv-ratio X] [--calib-samples 128] [--calib-seqlen 256] [--seed 42]\n' +
    '    [--calib-order faithful|sequential] [--eval-text FILE[,FILE…]] [--eval-ctx N] [--eval-chunks N] [--search-chunks 16] [--overwrite] [--no-save] [--json]\n' +
    '    [--target deepseek-v3|gguf [--outtype f32|f16|bf16]]   (default: the exact MLA folder, no kv_a_layernorm) [--tokenizer FILE]\n' +
    '  <model> may be a llama2.c .bin: it is imported into a temporary folder first (its tokenizer: tokenizer.bin or\n' +
    '    the only other tok*.bin beside it, or --tokenizer FILE, a tok*.bin or SentencePiece .model).\n' +
    '  --kv-fraction F: cache r + d_R = F·(2·G·d) values per token per layer (e.g. 0.3125).\n' +
    '  --rope-dim D|auto: qk_rope_head_dim, an even divisor of head_dim. With --kv-fraction the default is auto:\n' +
    '    every split of the budget is tried (each with its FreqFold search) on held-out documents.\n' +
    '    With --kv-lora-rank the default is the largest even divisor ≤ head_dim/2 and ≤ r.\n' +
    '  --calib FILE: .txt (documents separated by blank lines) or .jsonl ("text" fields); the last 10 % of its\n' +
    '    documents are held out for --freqfold auto and, without --eval-text, for the reported perplexities.\n' +
    '  --eval-text: perplexity, KL and top-1 agreement of every stage against the original on each file;\n' +
    '    prefix a file with "lines:" to read every line as a document (WikiText-2 as the papers read it).\n' +
    '  --balance-kv-ratio 0 turns key/value balancing off.\n' +
    '  --no-eval: no evaluation; needs --rope-dim and a numeric --freqfold. The conversion then streams layer by\n' +
    '    layer (one layer of weights in memory, not the model) and writes the same folder without perplexities.\n' + EXPORT_USAGE + MHA2MLA_USAGE,
  async run(argv) {
    const method = methodFlag(argv);
    if (method === 'mha2mla') return runMha2mlaConvert(argv);
    if (method !== 'transmla') throw new UsageError(`--method must be transmla or mha2mla, got "${method}"`);
    const p = parseArgs(argv, {
      method: 'string', out: 'string', 'kv-lora-rank': 'string', 'kv-fraction': 'string', 'rope-dim': 'string', freqfold: 'string',
      'q-lora-rank': 'string', 'balance-kv-ratio': 'string', calib: 'string', 'calib-samples': 'string',
      'calib-seqlen': 'string', seed: 'string', 'calib-order': 'string', 'eval-text': 'string', 'eval-ctx': 'string',
      'eval-chunks': 'string', 'search-chunks': 'string', overwrite: 'boolean', 'no-save': 'boolean', json: 'boolean', 'no-eval': 'boolean',
      target: 'string', outtype: 'string', tokenizer: 'string', ...HUB_FLAGS,
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
    const order = str(p, 'calib-order') ?? 'faithful';
    if (order !== 'faithful' && order !== 'sequential') throw new UsageError(`--calib-order must be faithful or sequential, got "${order}"`);
    const json = bool(p, 'json');
    const opts: ConvertOptions = {
      model: spec,
      out: bool(p, 'no-save') ? null : resolve(out!),
      overwrite: bool(p, 'overwrite'),
      kvLoraRank: int(p, 'kv-lora-rank', undefined, 1),
      kvFraction: num(p, 'kv-fraction', undefined, { gt: 0, le: 1 }),
      ropeDim: str(p, 'rope-dim') === 'auto' ? 'auto' : int(p, 'rope-dim', undefined, 2),
      qLoraRank: int(p, 'q-lora-rank', undefined, 1) ?? null,
      freqFold: ff === 'auto' ? 'auto' : Number(ff),
      balanceKvRatio: num(p, 'balance-kv-ratio', 1),
      calib,
      calibSamples: int(p, 'calib-samples', 128, 1),
      calibSeqLen: int(p, 'calib-seqlen', 256, 2),
      seed: int(p, 'seed', 42),
      calibOrder: order as CalibOrder,
      evalTexts: evalTexts(str(p, 'eval-text')),
      evalCtx: int(p, 'eval-ctx', undefined, 2),
      evalChunks: int(p, 'eval-chunks', undefined, 1),
      searchChunks: int(p, 'search-chunks', undefined, 1),
      log: (line: string) => { (json ? process.stderr : process.stdout).write(line + '\n'); },
    };
    const tgt = str(p, 'target');
    if (tgt !== undefined && bool(p, 'no-save')) throw new UsageError('--target writes an export; it cannot be combined with --no-save');
    const exportTo = tgt === undefined ? null : { target: target(tgt), outType: outType(str(p, 'outtype')) };
    if (tgt === undefined && str(p, 'outtype') !== undefined) throw new UsageError('--outtype needs --target gguf');
    if (tgt === undefined && bool(p, 'no-eval')) {
      if (opts.out === null) throw new UsageError('--no-eval needs --out (without evaluation there is nothing to measure)');
      if (typeof opts.ropeDim !== 'number' || opts.freqFold === 'auto') throw new UsageError('--no-eval needs a fixed shape: --rope-dim D and --freqfold M');
      if ((opts.evalTexts ?? []).length > 0) throw new UsageError('--no-eval and --eval-text contradict each other');
    }
    // Before a Hub model is fetched: the output must be usable (the library checks again, against the inputs).
    // (A llama2.c .bin is converted through a temporary folder, so the .bin itself is named here.)
    const local = existsSync(spec) ? [spec] : [];
    if (exportTo) checkExportOutput(exportTo.target, opts.out!, opts.overwrite ?? false, local);
    else if (opts.out) checkOutputDir(opts.out, { overwrite: opts.overwrite, source: local });
    const path = await modelArg(spec, p);
    // A llama2.c checkpoint goes through a temporary HF folder; transmla.json records the .bin.
    const report = await withHfFolder(path, str(p, 'tokenizer'), async (folder) => {
      const o: ConvertOptions = { ...opts, model: folder, sourcePath: path };
      if (exportTo) return convertToTarget({ ...o, out: o.out! }, exportTo);
      return bool(p, 'no-eval') ? (await import('../../convert/transmla.js')).convertStreaming(o) : convertModel(o);
    });
    if ('conversion' in report) {
      if (json) console.log(JSON.stringify({ conversion: report.conversion, export: { ...report.export, gguf: report.export.gguf && { ...report.export.gguf, tensorNames: undefined } } }, null, 2));
      return;
    }
    if (json) console.log(JSON.stringify(report, null, 2));
    else {
      const s = report.seconds;
      console.log(`conversion ${s.convertTotal.toFixed(1)} s (evaluation ${s.evaluation.toFixed(1)} s more), peak RSS ${(report.peakRssBytes / 2 ** 20).toFixed(0)} MiB`);
    }
  },
};
