// Entry of a benchmark child process (bench.ts runs every measured engine in its own process,
// so each peak RSS is that engine's alone and one model's memory does not slow the other).
// argv[2]: the job as JSON; the result is printed to stdout as one JSON line; logs go to stderr.
// With an IPC channel, the child stops between timed repetitions and waits for the parent to read
// the memory bandwidth (so the two alternate: nothing of ours runs during either measurement).
import { benchEngineDecode, benchLlamaCppDecode, type DecodeBenchOptions, type ModelFacts, type RepBoundary } from './bench-decode.js';

/** Parent → child reply once it has read the bandwidth at a boundary. */
export interface ProbedMessage { kind: 'probed' }
/** Child → parent: a repetition boundary, read the bandwidth now. */
export interface BoundaryMessage extends RepBoundary { kind: 'boundary' }

function boundaryHook(): ((b: RepBoundary) => Promise<void>) | undefined {
  const send = process.send?.bind(process);
  if (!send) return undefined;
  return (b) => new Promise<void>((res) => {
    process.once('message', () => res());
    send({ kind: 'boundary', ...b } satisfies BoundaryMessage);
  });
}

export type BenchJob =
  | { kind: 'engine'; path: string; options: DecodeBenchOptions }
  | { kind: 'llama.cpp'; gguf: string; facts: ModelFacts; options: DecodeBenchOptions & { threads: number } };

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2] ?? 'null') as BenchJob | null;
  if (!job) throw new Error('bench child: no job given');
  const log = (line: string): void => { process.stderr.write(`${line}\n`); };
  const between = boundaryHook();
  const result = job.kind === 'engine'
    ? await benchEngineDecode(job.path, { ...job.options, log, between })
    : await benchLlamaCppDecode(job.gguf, job.facts, { ...job.options, log, between });
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`${(e as Error)?.message ?? String(e)}\n`);
    process.exit(1);
  },
);
