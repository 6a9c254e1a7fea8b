// Entry of a benchmark child process (bench.ts runs every measured engine in its own process,
// so each peak RSS is that engine's alone and one model's memory does not slow the other).
// argv[2]: the job as JSON; the result is printed to stdout as one JSON line; logs go to stderr.
import { benchEngineDecode, benchLlamaCppDecode, type DecodeBenchOptions, type ModelFacts } from './bench-decode.js';

export type BenchJob =
  | { kind: 'engine'; path: string; options: DecodeBenchOptions }
  | { kind: 'llama.cpp'; gguf: string; facts: ModelFacts; options: DecodeBenchOptions & { threads: number } };

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2] ?? 'null') as BenchJob | null;
  if (!job) throw new Error('bench child: no job given');
  const log = (line: string): void => { process.stderr.write(`${line}\n`); };
  const result = job.kind === 'engine'
    ? await benchEngineDecode(job.path, { ...job.options, log })
    : await benchLlamaCppDecode(job.gguf, job.facts, { ...job.options, log });
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`${(e as Error)?.message ?? String(e)}\n`);
    process.exit(1);
  },
);
