// Serving throughput with continuous batching: `npm run bench -- serve [--model DIR] [--clients 1,8]
// [--max-tokens 64] [--repeats 3] [--threads 2]`. For each number of concurrent clients, the server (in this
// process, on 127.0.0.1) answers one greedy /v1/completions request per client, with different
// prompts, twice per repeat: batched (--max-concurrent 16: the sequences share forward steps) and
// one request at a time (--max-concurrent 1: the server before batching). The two modes alternate
// so that a change in machine load hits both alike; the load average is recorded around each run.
// Reported: generated tokens per second over the wall time of all clients, and the first and last
// request's completion time (medians over the repeats).
import { loadavg } from 'node:os';
import { kernels } from '../src/kernels/index.js';
import { loadNativeAddon } from '../src/kernels/native.js';
import { loadServedModel } from '../src/serve/model.js';
import { startServer } from '../src/serve/server.js';

const PROMPTS = [
  'In the beginning God created', 'And the LORD spake unto Moses, saying', 'Blessed are the poor in spirit', 'And it came to pass in those days',
  'The LORD is my shepherd', 'Now the serpent was more subtil', 'And Jesus answered and said unto them', 'Let not your heart be troubled',
  'For God so loved the world', 'In my Father\'s house are many mansions', 'Then said Jesus unto his disciples', 'And the earth was without form',
];

function flag(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

interface Run { seconds: number; tokens: number; tokensPerSecond: number; firstDone: number; lastDone: number; steps: number; sequenceSteps: number; loadBefore: number[]; loadAfter: number[] }

async function once(model: ReturnType<typeof loadServedModel>, clients: number, maxTokens: number, maxConcurrent: number): Promise<Run> {
  const srv = await startServer(model, 0, '127.0.0.1', { maxConcurrent, maxQueued: 1024 });
  try {
    const loadBefore = loadavg();
    const h0 = await (await fetch(`${srv.url}/health`)).json() as { steps: number; sequenceSteps: number };
    const t0 = performance.now();
    const done: number[] = [];
    const usage = await Promise.all(Array.from({ length: clients }, async (_, i) => {
      const r = await fetch(`${srv.url}/v1/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: PROMPTS[i % PROMPTS.length], max_tokens: maxTokens, temperature: 0 }),
      });
      const j = await r.json() as { usage: { completion_tokens: number } };
      if (r.status !== 200) throw new Error(`request ${i}: ${r.status} ${JSON.stringify(j)}`);
      done.push((performance.now() - t0) / 1000);
      return j.usage.completion_tokens;
    }));
    const seconds = (performance.now() - t0) / 1000;
    const h1 = await (await fetch(`${srv.url}/health`)).json() as { steps: number; sequenceSteps: number };
    const tokens = usage.reduce((a, b) => a + b, 0);
    return {
      seconds, tokens, tokensPerSecond: tokens / seconds, firstDone: Math.min(...done), lastDone: Math.max(...done),
      steps: h1.steps - h0.steps, sequenceSteps: h1.sequenceSteps - h0.sequenceSteps, loadBefore, loadAfter: loadavg(),
    };
  } finally {
    await srv.close();
  }
}

export async function run(args: string[]): Promise<object> {
  const modelDir = flag(args, 'model', '../shared/assets/models/kjv-gqa');
  const clientCounts = flag(args, 'clients', '1,8').split(',').map(Number);
  const maxTokens = Number(flag(args, 'max-tokens', '64'));
  const repeats = Number(flag(args, 'repeats', '3'));
  const threads = Number(flag(args, 'threads', '2'));
  const backend = kernels().backend;
  if (backend === 'native') loadNativeAddon().addon!.setThreads(threads);
  const model = loadServedModel(modelDir, { name: 'bench' });
  // Warm-up: page in the weights, grow the workspaces.
  await once(model, 2, 8, 16);
  const results: Record<string, unknown>[] = [];
  for (const clients of clientCounts) {
    const runs: Record<'batched' | 'serial', Run[]> = { batched: [], serial: [] };
    for (let r = 0; r < repeats; r++) {
      // Alternate the order too, so neither mode always runs second.
      const order: ('batched' | 'serial')[] = r % 2 === 0 ? ['batched', 'serial'] : ['serial', 'batched'];
      for (const mode of order) {
        const x = await once(model, clients, maxTokens, mode === 'batched' ? 16 : 1);
        runs[mode].push(x);
        process.stderr.write(`clients ${clients} ${mode}: ${x.tokens} tokens in ${x.seconds.toFixed(2)} s = ${x.tokensPerSecond.toFixed(1)} tok/s (done ${x.firstDone.toFixed(2)}–${x.lastDone.toFixed(2)} s, ${x.sequenceSteps} sequence steps in ${x.steps} steps, load ${x.loadBefore[0]!.toFixed(2)})\n`);
      }
    }
    const summary = (rs: Run[]) => ({
      tokensPerSecond: median(rs.map((x) => x.tokensPerSecond)), firstDone: median(rs.map((x) => x.firstDone)), lastDone: median(rs.map((x) => x.lastDone)),
      sequencesPerStep: median(rs.map((x) => x.sequenceSteps / x.steps)),
    });
    const b = summary(runs.batched), s = summary(runs.serial);
    results.push({ clients, batched: b, serial: s, speedup: b.tokensPerSecond / s.tokensPerSecond, runs });
  }
  return {
    bench: 'serve', model: modelDir, maxTokens, repeats, backend, threads,
    note: 'clients run in the server\'s process (fetch over loopback); greedy, distinct prompts; serial = --max-concurrent 1 (one request at a time, as before batching)',
    loadavgEnd: loadavg(), results,
  };
}
