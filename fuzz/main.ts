// Seeded mutation fuzzer for the project's file parsers.
//
//   node --import tsx fuzz/main.ts --iterations N [--seed S] [--target all|safetensors|index|
//     config|gguf|llama2c|llama2c-tok] [--time-limit-ms 2000] [--mem-limit-mb 256] [--start K]
//     [--out report.json] [--crash-dir fuzz/crashes]
//   node --import tsx fuzz/main.ts --replay fuzz/crashes/<case-folder>
//
// Exit code 0 when every case loaded or failed with the parser's typed error; 1 when any case
// was bad (other exception, error not naming the file, over-long message, memory growth) or
// hung; 2 on usage errors.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runFuzz, type FuzzReport } from './runner.js';
import { classifyError, TARGETS } from './targets.js';
import { isTargetName, TARGET_NAMES, type TargetName } from './types.js';

const USAGE = `usage: fuzz/main.ts --iterations N [--seed S] [--target all|${TARGET_NAMES.join('|')}] [--time-limit-ms MS] [--mem-limit-mb MB] [--start K] [--out report.json] [--crash-dir DIR]
       fuzz/main.ts --replay CASE_FOLDER`;

class UsageError extends Error {}

function parseArgs(argv: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') throw new UsageError('');
    if (!a.startsWith('--')) throw new UsageError(`unexpected argument ${JSON.stringify(a)}`);
    const eq = a.indexOf('=');
    if (eq > 0) out.set(a.slice(2, eq), a.slice(eq + 1));
    else {
      const v = argv[i + 1];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      out.set(a.slice(2), v);
      i++;
    }
  }
  const known = new Set(['iterations', 'seed', 'target', 'time-limit-ms', 'mem-limit-mb', 'start', 'out', 'crash-dir', 'replay']);
  for (const k of out.keys()) if (!known.has(k)) throw new UsageError(`unknown option --${k}`);
  return out;
}

function intArg(args: Map<string, string>, key: string, dflt: number | null, min: number): number {
  const s = args.get(key);
  if (s === undefined) {
    if (dflt === null) throw new UsageError(`--${key} is required`);
    return dflt;
  }
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${key} must be an integer >= ${min}, got ${JSON.stringify(s)}`);
  return n;
}

/** Re-runs one reproducer folder in-process and prints its classification. */
function replay(dir: string): number {
  const info = JSON.parse(readFileSync(join(dir, 'case.json'), 'utf8')) as { target: string; entry: string };
  if (!isTargetName(info.target)) throw new UsageError(`${dir}/case.json names unknown target ${JSON.stringify(info.target)}`);
  const spec = TARGETS[info.target];
  const entry = resolve(dir, info.entry);
  try {
    spec.load(entry);
    console.log(`${info.target} ${entry}: ok`);
    return 0;
  } catch (err) {
    const r = classifyError(err, spec, entry);
    console.log(`${info.target} ${entry}: ${r.outcome}: ${r.detail}`);
    if (r.outcome === 'bad' && err instanceof Error && err.stack) console.log(err.stack);
    return r.outcome === 'bad' ? 1 : 0;
  }
}

function summary(r: FuzzReport): string {
  const lines = [`fuzz: ${r.iterations} cases, seed ${r.seed}, target ${r.target}, ${(r.wallMs / 1000).toFixed(1)} s wall, time limit ${r.timeLimitMs} ms, worker starts ${r.workerStarts}`];
  lines.push('target        cases        ok  typed-error   bad  hang   mean ms   max ms  max mem MiB  error kinds');
  for (const t of TARGET_NAMES) {
    const s = r.stats[t];
    if (!s) continue;
    const o = s.outcomes;
    lines.push(
      `${t.padEnd(12)} ${String(s.cases).padStart(6)} ${String(o.ok).padStart(9)} ${String(o['typed-error']).padStart(12)} ${String(o.bad).padStart(5)} ${String(o.hang).padStart(5)} ${(s.totalMs / s.cases).toFixed(2).padStart(9)} ${s.maxMs.toFixed(0).padStart(8)} ${(s.maxMemGrowth / 2 ** 20).toFixed(1).padStart(12)} ${String(Object.keys(s.errorKinds).length).padStart(12)}`,
    );
  }
  const t = r.totals;
  lines.push(`total: ok ${t.ok}, typed-error ${t['typed-error']}, bad ${t.bad}, hang ${t.hang}`);
  for (const p of r.problems.slice(0, 20)) lines.push(`  ${p.outcome} ${p.target} #${p.index} [${p.seedName}; ${p.ops.join(' ').slice(0, 120)}]: ${p.detail.slice(0, 300)}${p.reproducer ? ` -> ${p.reproducer}` : ''}`);
  if (r.problems.length > 20) lines.push(`  … ${r.problems.length - 20} more problems in the report`);
  return lines.join('\n');
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const rep = args.get('replay');
  if (rep !== undefined) return replay(rep);
  const target = args.get('target') ?? 'all';
  if (target !== 'all' && !isTargetName(target)) throw new UsageError(`--target must be all or one of ${TARGET_NAMES.join(', ')}`);
  const here = dirname(fileURLToPath(import.meta.url));
  const report = await runFuzz({
    iterations: intArg(args, 'iterations', null, 1),
    seed: intArg(args, 'seed', 1, 0),
    target: target as TargetName | 'all',
    timeLimitMs: intArg(args, 'time-limit-ms', 2000, 1),
    memLimitBytes: intArg(args, 'mem-limit-mb', 256, 1) * 2 ** 20,
    start: intArg(args, 'start', 0, 0),
    crashDir: resolve(args.get('crash-dir') ?? join(here, 'crashes')),
    progress: (line) => console.error(line),
  });
  const out = args.get('out');
  if (out !== undefined) {
    const dir = dirname(resolve(out));
    if (!existsSync(dir)) throw new UsageError(`--out folder ${dir} does not exist`);
    writeFileSync(out, JSON.stringify({ command: process.argv.slice(2).join(' '), ...report }, null, 2) + '\n');
  }
  console.log(summary(report));
  return report.totals.bad + report.totals.hang > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) {
      if (err.message) console.error(`fuzz: ${err.message}`);
      console.error(USAGE);
      process.exit(2);
    }
    console.error(err);
    process.exit(2);
  },
);
