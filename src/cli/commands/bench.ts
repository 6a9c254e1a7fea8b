// transmla bench <model>: decode speed vs context (our engine, its source or --compare model,
// llama.cpp on the same weights) with the memory roofline; JSON to --out or into a converted folder.
import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { bool, int, onePositional, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { formatBenchReport, runBench } from '../../bench/bench.js';
import { writeReport } from '../../report/report.js';
import { checkOutputFile } from '../../io/atomic-dir.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';

function contexts(v: string | undefined): number[] {
  if (v === undefined) return [1024, 4096, 8192, 16384];
  const xs = v.split(',').filter((x) => x !== '');
  if (xs.length === 0 || xs.some((x) => !/^\d+$/.test(x) || Number(x) < 1)) throw new UsageError(`--contexts must be positive integers separated by commas, got "${v}"`);
  return xs.map(Number);
}

export const command: Command = {
  usage: 'transmla bench <model> [--revision REV] [--contexts 1024,4096,8192,16384] [--compare MODEL | --no-compare] [--decode-tokens 64] [--reps 3]\n' +
    '    [--no-llamacpp] [--threads N] [--out FILE] [--json]\n' +
    '  An MLA folder written by `transmla convert` is compared with its source model (from transmla.json) unless\n' +
    '  --compare or --no-compare says otherwise; its results are saved as bench.json in the folder and its\n' +
    '  report.html is rebuilt with the speed chart (not for a Hub model: the cache is not written to; use --out).\n' +
    '  Contexts past the trained window are allowed (speed only).',
  async run(argv) {
    const p = parseArgs(argv, {
      contexts: 'string', compare: 'string', 'no-compare': 'boolean', 'decode-tokens': 'string', reps: 'string',
      'no-llamacpp': 'boolean', threads: 'string', out: 'string', json: 'boolean', ...HUB_FLAGS,
    });
    const spec = onePositional(p, 'model');
    if (str(p, 'compare') && bool(p, 'no-compare')) throw new UsageError('give --compare or --no-compare, not both');
    const json = bool(p, 'json');
    const log = (line: string): void => { process.stderr.write(`${line}\n`); };
    const options = {
      contexts: contexts(str(p, 'contexts')),
      decodeTokens: int(p, 'decode-tokens', 64, 1),
      reps: int(p, 'reps', 3, 1),
      llamaCpp: !bool(p, 'no-llamacpp'),
      threads: int(p, 'threads', undefined, 1),
      log,
    };
    // --out is written after minutes of measuring: refuse a bad one first.
    if (str(p, 'out')) checkOutputFile(str(p, 'out')!, { overwrite: true });
    const path = await modelArg(spec, p);
    const model = resolve(path);
    const compareSpec = str(p, 'compare');
    const compare = bool(p, 'no-compare') ? null : compareSpec === undefined ? undefined : await modelArg(compareSpec, p, { flag: 'compare' });
    const report = await runBench({ model, compare, ...options });
    const text = `${JSON.stringify(report, null, 2)}\n`;
    // A Hub model's folder is the shared download cache: results go to --out only, never into it.
    const converted = existsSync(join(model, 'transmla.json')) && path === spec;
    const out = str(p, 'out') ?? (converted ? join(model, 'bench.json') : undefined);
    if (out) {
      writeFileSync(resolve(out), text);
      log(`wrote ${resolve(out)}`);
    }
    if (converted && (out === undefined || resolve(out) === join(model, 'bench.json'))) {
      log(`rebuilt ${await writeReport(model)}`);
    }
    if (json) process.stdout.write(text);
    else console.log(formatBenchReport(report));
  },
};
