// `npm run bench -- transmla [--models a,b] [--fractions 0.5,0.3125,0.125] [--calib-samples 128]
//   [--calib-seqlen 256] [--eval-ctx 256] [--eval-chunks 32] [--search-chunks 8] [--freqfold auto] [--calib-order faithful]`
//
// The TransMLA conversion across every real model in ../shared/assets/models at several KV-cache
// fractions: perplexity of the original, the partial-RoPE and the MLA model on the model's
// in-domain evaluation text and on WikiText-2 (test, lines joined with "\n\n" as the papers
// read it), KL(original ‖ converted) and top-1 agreement on the same tokens, and the conversion's
// wall time and peak memory. Each conversion runs as its own `transmla convert` process, so wall
// time and peak RSS are that conversion's alone. llama2.c checkpoints are imported to Hugging
// Face folders first. A readable table goes to stderr; the returned object is the JSON result.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ConvertReport } from '../src/schema/transmla-json.js';
import { importLlama2c } from '../src/export/llama2c.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ASSETS = resolve(REPO, '..', 'shared', 'assets');
const TEXT = join(ASSETS, 'text');
const WIKITEXT = join(TEXT, 'wikitext-2-raw', 'wiki.test.raw');

/** Calibration and in-domain evaluation text per model family (docs/results.md#transmla-results). */
export function domainOf(name: string): { calib: string; inDomain: string } {
  if (name.startsWith('kjv')) return { calib: join(TEXT, 'kjv-old-testament-calib.txt'), inDomain: join(TEXT, 'kjv-new-testament-eval.txt') };
  return { calib: join(TEXT, 'tinystories', 'tinystories_train_lowercased_sample.txt'), inDomain: join(TEXT, 'tinystories', 'tinystories_val_sample.txt') };
}

interface Args {
  models: string[] | null;
  fractions: number[];
  calibSamples: number;
  calibSeqLen: number;
  evalCtx: number;
  evalChunks: number;
  searchChunks: number;
  freqFold: string;
  calibOrder: string;
}

function parse(argv: string[]): Args {
  const a: Args = { models: null, fractions: [0.5, 0.3125, 0.125], calibSamples: 128, calibSeqLen: 256, evalCtx: 256, evalChunks: 32, searchChunks: 8, freqFold: 'auto', calibOrder: 'faithful' };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${f} needs a value`); return v; };
    if (f === '--models') a.models = val().split(',').filter(Boolean);
    else if (f === '--fractions') a.fractions = val().split(',').map(Number);
    else if (f === '--calib-samples') a.calibSamples = Number(val());
    else if (f === '--calib-seqlen') a.calibSeqLen = Number(val());
    else if (f === '--eval-ctx') a.evalCtx = Number(val());
    else if (f === '--eval-chunks') a.evalChunks = Number(val());
    else if (f === '--search-chunks') a.searchChunks = Number(val());
    else if (f === '--freqfold') a.freqFold = val();
    else if (f === '--calib-order') a.calibOrder = val();
    else throw new Error(`bench transmla: unknown option ${f}`);
  }
  if (a.fractions.some((x) => !(x > 0 && x <= 1))) throw new Error('bench transmla: --fractions must be in (0, 1]');
  return a;
}

/** An HF folder for a model asset: itself, or a llama2.c checkpoint imported into `work`. */
export async function hfFolderOf(dir: string, work: string): Promise<string> {
  if (existsSync(join(dir, 'config.json'))) return dir;
  const files = readdirSync(dir);
  const bin = files.filter((f) => f.endsWith('.bin') && !f.startsWith('tok'));
  const tok = files.find((f) => f.endsWith('.model')) ?? files.find((f) => f.startsWith('tok') && f.endsWith('.bin'));
  if (bin.length !== 1 || !tok) throw new Error(`${dir}: expected one llama2.c checkpoint (.bin) and its tokenizer (tok*.bin or .model)`);
  const out = join(work, `${dir.split('/').pop()}-hf`);
  await importLlama2c(join(dir, bin[0]!), join(dir, tok), out);
  return out;
}

export function runConvert(args: string[]): Promise<{ report: ConvertReport; wallSeconds: number }> {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'src', 'cli', 'main.ts'), 'convert', ...args, '--json'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { const s = b.toString(); err += s; process.stderr.write(s.replace(/^/gm, '    ')); });
    child.on('error', rej);
    child.on('close', (code) => {
      if (code !== 0) return rej(new Error(`transmla convert ${args.join(' ')} failed (exit ${code}):\n${err.slice(-2000)}`));
      try {
        res({ report: JSON.parse(out) as ConvertReport, wallSeconds: (performance.now() - t0) / 1000 });
      } catch (e) {
        rej(new Error(`transmla convert printed no JSON report: ${(e as Error).message}`));
      }
    });
  });
}

function dirBytes(dir: string): number {
  return readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

const pct = (x: number): string => `${(100 * x).toFixed(2)} %`;
const f2 = (x: number): string => (x >= 1000 ? x.toFixed(0) : x.toFixed(2));

export async function run(argv: string[]): Promise<object> {
  const a = parse(argv);
  const modelRoot = join(ASSETS, 'models');
  const names = (a.models ?? readdirSync(modelRoot).filter((n) => statSync(join(modelRoot, n)).isDirectory()).sort());
  const work = mkdtempSync(join(tmpdir(), 'transmla-bench-'));
  const rows: Record<string, unknown>[] = [];
  const table: string[] = [
    '| model | KV kept | r + d_R | M | in-domain ppl: original → partial RoPE → MLA (Δ) | KL / top-1 | WikiText-2 ppl: original → partial RoPE → MLA | KL / top-1 | convert s (CPU s) | peak RSS |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  try {
    for (const name of names) {
      const dir = await hfFolderOf(join(modelRoot, name), work);
      const { calib, inDomain } = domainOf(name);
      for (const fraction of a.fractions) {
        const out = join(work, `${name}-${fraction}`);
        process.stderr.write(`bench transmla: ${name} at ${pct(fraction)} of the KV cache\n`);
        const { report, wallSeconds } = await runConvert([
          dir, '--out', out, '--kv-fraction', String(fraction), '--freqfold', a.freqFold, '--calib-order', a.calibOrder,
          '--calib', calib, '--calib-samples', String(a.calibSamples), '--calib-seqlen', String(a.calibSeqLen),
          '--eval-text', `${inDomain},lines:${WIKITEXT}`, '--eval-ctx', String(a.evalCtx), '--eval-chunks', String(a.evalChunks),
          '--search-chunks', String(a.searchChunks),
        ]);
        const outBytes = dirBytes(out);
        rmSync(out, { recursive: true, force: true });
        const [ind, wiki] = report.evaluations;
        const p = report.parameters;
        const row = {
          model: name,
          source: dir === join(modelRoot, name) ? dir : `${join(modelRoot, name)} (imported from llama2.c)`,
          kvFraction: p.kvFraction, kvLoraRank: p.kvLoraRank, qkRopeHeadDim: p.qkRopeHeadDim, freqFold: p.freqFold, search: report.search,
          kvBytesPerToken: { before: report.kvCache.bytesPerTokenBefore, after: report.kvCache.bytesPerTokenAfter, dtype: report.kvCache.dtype },
          inDomain: ind, wikitext: wiki,
          mlaPplIncrease: { inDomain: ind!.mla.ppl / ind!.original.ppl - 1, wikitext: wiki!.mla.ppl / wiki!.original.ppl - 1 },
          convertSeconds: report.seconds.convertTotal,
          processWallSeconds: wallSeconds,
          seconds: report.seconds,
          peakRssBytes: report.peakRssBytes,
          outputBytes: outBytes,
          calibration: report.calibration,
          evaluationTexts: report.evaluations.map((e) => ({ text: e.text, sha256: e.sha256, mode: e.mode })),
          layers: report.layers,
        };
        rows.push(row);
        table.push(`| ${name} | ${pct(p.kvFraction)} | ${p.kvLoraRank} + ${p.qkRopeHeadDim} | ${p.freqFold} | ` +
          `${f2(ind!.original.ppl)} → ${f2(ind!.partialRope.ppl)} → ${f2(ind!.mla.ppl)} (${ind!.mla.ppl >= ind!.original.ppl ? '+' : ''}${pct(row.mlaPplIncrease.inDomain)}) | ` +
          `${ind!.mla.kl.toFixed(3)} / ${pct(ind!.mla.top1)} | ` +
          `${f2(wiki!.original.ppl)} → ${f2(wiki!.partialRope.ppl)} → ${f2(wiki!.mla.ppl)} | ${wiki!.mla.kl.toFixed(3)} / ${pct(wiki!.mla.top1)} | ` +
          `${report.seconds.convertTotal.toFixed(1)} (${report.seconds.convertCpu.toFixed(1)}) | ${(report.peakRssBytes / 2 ** 20).toFixed(0)} MiB |`);
        process.stderr.write(table[table.length - 1] + '\n');
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  // The quality target: at 31.25 % of the cache, MLA perplexity within +25 % of the original.
  const target = rows.filter((r) => Math.abs((r.kvFraction as number) - 0.3125) < 1e-9).map((r) => {
    const inc = r.mlaPplIncrease as { inDomain: number; wikitext: number };
    return { model: r.model, inDomainIncrease: inc.inDomain, wikitextIncrease: inc.wikitext, met: inc.inDomain <= 0.25 && inc.wikitext <= 0.25 };
  });
  process.stderr.write(`\n${table.join('\n')}\n`);
  return {
    bench: 'transmla',
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memoryBytes: totalmem(), node: process.version },
    settings: {
      ...a,
      inDomainText: 'kjv-new-testament-eval.txt (kjv models, calibrated on kjv-old-testament-calib.txt); tinystories_val_sample.txt (stories models, calibrated on tinystories_train_lowercased_sample.txt)',
      wikitext: `${WIKITEXT}, lines joined with "\\n\\n" (HF datasets rows, as the papers read it)`,
      method: 'training-free TransMLA: RoRoPE + FreqFold (auto: held-out calibration documents) + BKV-PCA, no kv_a_layernorm',
    },
    quality31: target,
    table,
    rows,
  };
}
