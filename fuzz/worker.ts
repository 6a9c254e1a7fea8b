// Worker side of the fuzz runner: generates and executes cases [from, to) and reports each
// result. It runs in a worker thread so the main thread can terminate it when a case hangs.
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { executeCase } from './exec.js';
import { makeCase, targetOf } from './targets.js';
import type { CaseResult, SeedSet, TargetName } from './types.js';

export interface WorkerInput {
  seeds: SeedSet;
  runSeed: number;
  target: TargetName | 'all';
  from: number;
  to: number;
  timeLimitMs: number;
  memLimitBytes: number;
  /** Folder for case files, created and removed by the main thread (a terminated worker cannot clean up). */
  workDir: string;
}

export type WorkerMessage = { type: 'ready' } | { type: 'result'; result: CaseResult } | { type: 'done' };

function main(): void {
  const port = parentPort;
  if (!port) throw new Error('fuzz/worker.ts must run in a worker thread');
  const input = workerData as WorkerInput;
  port.postMessage({ type: 'ready' } satisfies WorkerMessage);
  for (let i = input.from; i < input.to; i++) {
    const target = targetOf(input.target, i);
    let result: CaseResult;
    try {
      result = executeCase(makeCase(input.seeds, input.runSeed, target, i), join(input.workDir, 'case'), input);
    } catch (err) {
      // A failure of the fuzzer itself (generation, file layout), not of a parser: still reported.
      result = { target, index: i, outcome: 'bad', detail: `fuzzer error: ${(err as Error).stack ?? String(err)}`, ms: 0, memGrowth: 0, seedName: '?', ops: [] };
    }
    port.postMessage({ type: 'result', result } satisfies WorkerMessage);
  }
  port.postMessage({ type: 'done' } satisfies WorkerMessage);
}

main();
