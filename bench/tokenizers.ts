// `npm run bench -- tokenizers [--max-chars N] [--reps 3]`
// @huggingface/tokenizers (JS) against the Rust `tokenizers` binding on the shared texts, with
// every distinct tokenizer.json of the shared models; checks that the ids are identical.
//
// For each (tokenizer, text) it times:
//  - the JS library alone, phase by phase as its Tokenizer.encode runs them for a text without
//    added tokens (normalizer, pre-tokenizer, BPE model, token → id), to show what dominates;
//  - our HfTokenizer.encode (the JS library plus our own pre/post-processing: BOS handling);
//  - the Rust binding alone (encode + getIds) and our HfTokenizer.encodeAsync on it.
// Texts are read as `transmla ppl` reads them (WikiText-2 both as is and with --lines).
// The JS path runs once per pair (it takes seconds per MB); Rust takes the best of --reps.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer as JsTokenizer } from '@huggingface/tokenizers';
import { readEvalText, type TextMode } from '../src/eval/perplexity.js';
import { loadHfTokenizer } from '../src/tokenizer/tokenizer.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ASSETS = resolve(REPO, '..', 'shared', 'assets');
const TEXTS: { name: string; path: string; mode: TextMode }[] = [
  { name: 'kjv-new-testament', path: 'text/kjv-new-testament-eval.txt', mode: 'file' },
  { name: 'kjv-old-testament', path: 'text/kjv-old-testament-calib.txt', mode: 'file' },
  { name: 'tinystories-val', path: 'text/tinystories/tinystories_val_sample.txt', mode: 'file' },
  { name: 'wikitext-2-test', path: 'text/wikitext-2-raw/wiki.test.raw', mode: 'file' },
  { name: 'wikitext-2-test-lines', path: 'text/wikitext-2-raw/wiki.test.raw', mode: 'lines' },
];

interface RustModule {
  Tokenizer: { fromString(json: string): { encode(t: string, p: null, o: { addSpecialTokens: boolean }): Promise<{ getIds(): number[] }> } };
}

interface JsInternals {
  normalizer: ((t: string) => string) | null;
  pre_tokenizer: ((t: string) => string[]) | null;
  model: ((tokens: string[]) => string[]) & { tokens_to_ids: Map<string, number>; unk_token_id: number };
}

function seconds(t0: number): number {
  return (performance.now() - t0) / 1000;
}

async function best<T>(reps: number, f: () => Promise<T>): Promise<{ s: number; value: T }> {
  let s = Infinity, value: T | undefined;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    value = await f();
    s = Math.min(s, seconds(t0));
  }
  return { s, value: value! };
}

function sameIds(a: readonly number[], b: readonly number[]): { identical: boolean; firstDifference: number | null } {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return { identical: false, firstDifference: i };
  return a.length === b.length ? { identical: true, firstDifference: null } : { identical: false, firstDifference: n };
}

/** Distinct tokenizer.json files of the shared models (by content), named by the first folder holding each. */
function sharedTokenizers(): { name: string; dir: string; sha256: string; bytes: number }[] {
  const seen = new Map<string, { name: string; dir: string; sha256: string; bytes: number }>();
  const root = join(ASSETS, 'models');
  for (const name of readdirSync(root).sort()) {
    const f = join(root, name, 'tokenizer.json');
    if (!existsSync(f)) continue;
    const body = readFileSync(f);
    const sha = createHash('sha256').update(body).digest('hex');
    if (!seen.has(sha)) seen.set(sha, { name, dir: join(root, name), sha256: sha, bytes: body.length });
  }
  return [...seen.values()];
}

export async function run(argv: string[]): Promise<object> {
  let maxChars = Infinity, reps = 3;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--max-chars') maxChars = Number(argv[++i]);
    else if (argv[i] === '--reps') reps = Number(argv[++i]);
    else throw new Error(`bench tokenizers: unknown option ${argv[i]}`);
  }
  if (!(maxChars > 0) || !(reps >= 1)) throw new Error('bench tokenizers: --max-chars and --reps must be positive');
  const rust = createRequire(import.meta.url)('tokenizers') as RustModule;
  const log = (s: string): void => { process.stderr.write(`bench tokenizers: ${s}\n`); };
  const loadStart = loadavg();
  const results: object[] = [];
  for (const t of sharedTokenizers()) {
    const json = readFileSync(join(t.dir, 'tokenizer.json'), 'utf8');
    let t0 = performance.now();
    const ours = loadHfTokenizer(t.dir);
    const jsLoad = seconds(t0);
    const lib = new JsTokenizer(JSON.parse(json), { clean_up_tokenization_spaces: false }) as unknown as JsInternals;
    t0 = performance.now();
    const rs = rust.Tokenizer.fromString(json);
    const rustLoad = seconds(t0);
    for (const x of TEXTS) {
      const path = join(ASSETS, x.path);
      if (!existsSync(path)) continue;
      const text = readEvalText(path, x.mode).text.slice(0, maxChars);
      log(`${t.name} × ${x.name} (${text.length} chars)`);
      // JS, phase by phase (what Tokenizer.encode does for a text without added tokens).
      t0 = performance.now();
      const normalized = lib.normalizer ? lib.normalizer(text) : text;
      const normalize = seconds(t0);
      t0 = performance.now();
      const pre = lib.pre_tokenizer ? lib.pre_tokenizer(normalized) : [normalized];
      const preTokenize = seconds(t0);
      t0 = performance.now();
      const pieces = lib.model(pre);
      const model = seconds(t0);
      t0 = performance.now();
      const phaseIds = pieces.map((p) => lib.model.tokens_to_ids.get(p) ?? lib.model.unk_token_id);
      const toIds = seconds(t0);
      const jsIds = phaseIds;
      const jsLib = normalize + preTokenize + model + toIds;
      t0 = performance.now();
      const jsOurs = ours.encode(text, { addBos: false });
      const jsOursS = seconds(t0);
      const rustLib = await best(reps, async () => (await rs.encode(text, null, { addSpecialTokens: false })).getIds());
      const rustOurs = await best(reps, () => ours.encodeAsync(text, { addBos: false }));
      const cmp = sameIds(jsIds, rustLib.value);
      const row = {
        tokenizer: t.name, text: x.name, mode: x.mode, chars: text.length, tokens: jsIds.length,
        idsIdentical: cmp.identical && sameIds(jsIds, jsOurs).identical && sameIds(jsIds, rustOurs.value).identical,
        firstDifference: cmp.firstDifference,
        seconds: {
          jsLibrary: jsLib, jsOurs: jsOursS, rustLibrary: rustLib.s, rustOurs: rustOurs.s,
          jsPhases: { normalize, preTokenize, bpeModel: model, tokenToId: toIds },
        },
        rustSpeedup: jsOursS / rustOurs.s,
        ourOverhead: { js: jsOursS - jsLib, rust: rustOurs.s - rustLib.s },
      };
      log(`  JS ${jsOursS.toFixed(2)} s (BPE ${model.toFixed(2)} s), Rust ${rustOurs.s.toFixed(3)} s, ×${row.rustSpeedup.toFixed(1)}, ids ${row.idsIdentical ? 'identical' : `differ at ${cmp.firstDifference}`}`);
      results.push(row);
    }
    results.push({ tokenizer: t.name, file: join(t.dir, 'tokenizer.json'), sha256: t.sha256, bytes: t.bytes, loadSeconds: { js: jsLoad, rust: rustLoad } });
  }
  const pkg = (name: string): string => (JSON.parse(readFileSync(join(REPO, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  return {
    bench: 'tokenizers',
    date: new Date().toISOString(),
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, node: process.version },
    // The machine is shared: the load average says how busy it was while this ran.
    loadavg: { start: loadStart, end: loadavg() },
    versions: { '@huggingface/tokenizers': pkg('@huggingface/tokenizers'), tokenizers: pkg('tokenizers') },
    options: { maxChars: Number.isFinite(maxChars) ? maxChars : null, rustReps: reps },
    results,
  };
}
