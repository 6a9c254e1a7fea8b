// `npm run bench -- kjv-mixtral [--fractions 0.5,0.3125,0.125] [--calib-samples 64] [--calib-seqlen 256]
//   [--eval-ctx 256] [--eval-chunks 32] [--methods transmla,mha2mla] [--rope-dim D --freqfold M] [--partial FILE]`
//
// The kjv-mixtral row of docs/results.md: ../shared/assets/models/kjv-mixtral (4 experts, top-2)
// converted by TransMLA and MHA2MLA at each KV fraction, each conversion its own `transmla
// convert … --json` process. Held-out perplexity (the KJV New Testament; the model was trained on
// the Old Testament), KL(original ‖ converted) and top-1 agreement on the same tokens for every
// stage: original → partial RoPE → exact MLA, and for TransMLA the default stock DeepSeek-V2 MoE
// folder and that folder as a llama.cpp deepseek2 GGUF, whose perplexity llama.cpp computes
// (bench/ppl-llamacpp.ts: the same chunks, f32). The load average is recorded before and after.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { run as pplLlamaCpp } from './ppl-llamacpp.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ASSETS = resolve(REPO, '..', 'shared', 'assets');
const MODEL = join(ASSETS, 'models', 'kjv-mixtral');
const CALIB = join(ASSETS, 'text', 'kjv-old-testament-calib.txt');
const EVAL = join(ASSETS, 'text', 'kjv-new-testament-eval.txt');

interface Args { fractions: number[]; samples: number; seqLen: number; ctx: number; chunks: number; methods: string[]; ropeDim: string | null; freqFold: string | null; partial: string | null }

function parse(argv: string[]): Args {
  const a: Args = { fractions: [0.5, 0.3125, 0.125], samples: 64, seqLen: 256, ctx: 256, chunks: 32, methods: ['transmla', 'mha2mla'], ropeDim: null, freqFold: null, partial: null };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`bench kjv-mixtral: ${f} needs a value`); return v; };
    if (f === '--fractions') a.fractions = val().split(',').map(Number);
    else if (f === '--calib-samples') a.samples = Number(val());
    else if (f === '--calib-seqlen') a.seqLen = Number(val());
    else if (f === '--eval-ctx') a.ctx = Number(val());
    else if (f === '--eval-chunks') a.chunks = Number(val());
    else if (f === '--methods') a.methods = val().split(',');
    else if (f === '--rope-dim') a.ropeDim = val();
    else if (f === '--freqfold') a.freqFold = val();
    else if (f === '--partial') a.partial = resolve(val());
    else throw new Error(`bench kjv-mixtral: unknown option ${f}`);
  }
  if (a.fractions.some((x) => !(x > 0 && x <= 1))) throw new Error('bench kjv-mixtral: --fractions must be in (0, 1]');
  if (a.methods.some((m) => m !== 'transmla' && m !== 'mha2mla')) throw new Error('bench kjv-mixtral: --methods takes transmla, mha2mla');
  return a;
}

/** `transmla convert …` in its own process; its --json report and wall time. */
function convert(args: string[]): Promise<{ report: Record<string, any>; seconds: number }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'src', 'cli', 'main.ts'), 'convert', ...args, '--json'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('close', (code) => {
      if (code !== 0) return rej(new Error(`transmla convert ${args.join(' ')} failed (exit ${code}):\n${err.slice(-2000)}`));
      try {
        res({ report: JSON.parse(out) as Record<string, any>, seconds: (performance.now() - t0) / 1000 }); // eslint-disable-line @typescript-eslint/no-explicit-any
      } catch (e) {
        rej(new Error(`transmla convert printed no JSON report: ${(e as Error).message}`));
      }
    });
  });
}

const score = (s: { ppl: number; kl?: number; top1?: number }) => ({ ppl: s.ppl, kl: s.kl ?? 0, top1: s.top1 ?? 1 });

export async function run(argv: string[]): Promise<object> {
  const a = parse(argv);
  const load0 = loadavg();
  const work = mkdtempSync(join(tmpdir(), 'transmla-kjv-mixtral-'));
  const rows: object[] = [];
  const common = ['--calib', CALIB, '--calib-samples', String(a.samples), '--calib-seqlen', String(a.seqLen), '--eval-text', EVAL, '--eval-ctx', String(a.ctx), '--eval-chunks', String(a.chunks)];
  const table = ['| method | KV | r + d_R | original | partial RoPE | exact MLA (KL / top-1) | stock DeepSeek-V2 (KL / top-1) | GGUF (llama.cpp) |', '|---|---|---|---|---|---|---|---|'];
  try {
    for (const f of a.fractions) {
      for (const method of a.methods) {
        const out = join(work, `${method}-${f}`);
        process.stderr.write(`bench kjv-mixtral: ${method} at ${(100 * f).toFixed(2)} % KV\n`);
        // TransMLA's d_R / FreqFold: searched per fraction unless given (a fixed shape skips the search).
        const shapeArgs = method === 'transmla' ? [...(a.ropeDim ? ['--rope-dim', a.ropeDim] : []), ...(a.freqFold ? ['--freqfold', a.freqFold] : [])] : [];
        const args = [MODEL, '--out', out, '--kv-fraction', String(f), ...common, ...shapeArgs, ...(method === 'mha2mla' ? ['--method', 'mha2mla'] : [])];
        const { report, seconds } = await convert(args);
        // convert --json: { conversion, stock } for TransMLA; MHA2MLA's report is flat.
        const conv = method === 'transmla' ? report.conversion : report;
        const ev = conv.evaluations[0];
        const row: Record<string, unknown> = {
          method, kvFraction: f, command: `transmla convert ${args.join(' ')}`, seconds,
          shape: method === 'transmla'
            ? { kvLoraRank: conv.parameters.kvLoraRank, ropeDim: conv.parameters.qkRopeHeadDim, freqFold: conv.parameters.freqFold }
            : { kvLoraRank: conv.parameters.kvLoraRank, ropePairsPerHead: conv.parameters.ropePairsPerHead },
          ctx: ev.ctx, chunks: ev.chunks, original: score(ev.original), partialRope: score(ev.partialRope), mla: score(ev.mla),
        };
        let stockCell = '—', ggufCell = '—';
        if (method === 'transmla') {
          const se = report.stock?.evaluations?.[0];
          const stock = se?.stock;
          // KL/top-1 of the stock model against the original: the convert's 4-stage sweep (stock vs exact is se itself).
          row.stock = stock ? { ppl: stock.ppl, klVsExact: stock.kl, top1VsExact: stock.top1 } : null;
          const g = await pplLlamaCpp(['--model', out, '--text', EVAL, '--ctx', String(a.ctx), '--max-chunks', String(a.chunks), '--outtype', 'f32']) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
          row.gguf = { llamacppPpl: g.llamacpp.ppl, oursOnGgufPpl: g.transmlaGguf.ppl, relativePplDifference: g.relativePplDifference, maxAbsLogProbDifference: g.maxAbsLogProbDifference };
          if (stock) stockCell = `${stock.ppl.toFixed(2)} (${stock.kl.toFixed(4)} / ${(100 * stock.top1).toFixed(2)} % vs exact)`;
          ggufCell = `${g.llamacpp.ppl.toFixed(4)} (ours ${g.transmlaGguf.ppl.toFixed(4)})`;
        }
        rows.push(row);
        // --partial FILE: the rows so far after each one (a long run on a loaded machine may be cut short).
        if (a.partial) writeFileSync(a.partial, `${JSON.stringify({ bench: 'kjv-mixtral', partial: true, args: a, loadavgStart: load0, loadavgNow: loadavg(), rows }, null, 2)}\n`);
        const m = row.mla as ReturnType<typeof score>;
        const sh = row.shape as Record<string, unknown>;
        table.push(`| ${method} | ${(100 * f).toFixed(2)} % | ${method === 'transmla' ? `${sh.kvLoraRank} + ${sh.ropeDim}` : `${sh.kvLoraRank} + 2·${sh.ropePairsPerHead} per KV head`} | ${(row.original as { ppl: number }).ppl.toFixed(2)} | ${(row.partialRope as { ppl: number }).ppl.toFixed(2)} | ${m.ppl.toFixed(2)} (${m.kl.toFixed(4)} / ${(100 * m.top1).toFixed(2)} %) | ${stockCell} | ${ggufCell} |`);
        rmSync(out, { recursive: true, force: true });
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  process.stderr.write(`${table.join('\n')}\n`);
  return { bench: 'kjv-mixtral', model: MODEL, calib: CALIB, eval: EVAL, args: a, cpus: cpus().length, loadavgStart: load0, loadavgEnd: loadavg(), rows, table };
}
