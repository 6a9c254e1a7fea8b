// Converts one model at several KV-cache fractions with one or more methods and records the
// perplexity (and KL, top-1 agreement) of each result on the same evaluation text, so
// perplexity can be drawn against the cache budget. sweep.json is rewritten after every point
// (a long sweep that stops keeps what it measured) and sweep.html is drawn at the end.
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { checkOutputDir } from '../io/atomic-dir.js';
import { setStage } from '../io/interrupt.js';
import { buildSweepHtml } from '../report/sweep-report.js';
import { convertMethod, type MethodOptions } from './methods.js';
import type { SweepReport, SweepScore } from '../schema/sweep-json.js';

export type { SweepPoint, SweepReport, SweepScore } from '../schema/sweep-json.js';

export type SweepConvertOptions = Omit<MethodOptions, 'model' | 'out' | 'overwrite' | 'kvFraction' | 'log'>;

export interface SweepOptions {
  model: string;
  fractions: number[];
  methods: string[];
  /** Folder for sweep.json, sweep.html and (with saveModels) the converted models. */
  out: string;
  /** Keep every converted model in out/<method>-kv<fraction> (default: measure only). */
  saveModels?: boolean;
  overwrite?: boolean;
  convert: SweepConvertOptions;
  log?: (line: string) => void;
}

export async function runSweep(o: SweepOptions): Promise<SweepReport> {
  const log = o.log ?? (() => {});
  if (o.fractions.length === 0) throw new Error('sweep: give at least one KV fraction');
  for (const f of o.fractions) if (!(f > 0 && f <= 1)) throw new Error(`sweep: KV fractions must be in (0, 1], got ${f}`);
  if (o.methods.length === 0) throw new Error('sweep: give at least one method');
  const methods = o.methods.map((m) => [m, convertMethod(m)] as const);
  const out = resolve(o.out);
  // The folder is written in place (sweep.json after every point), so check it up front: not a
  // file, not an input (model, calibration, evaluation texts), empty unless overwrite.
  checkOutputDir(out, { overwrite: o.overwrite, source: [o.model, o.convert.calib, ...(o.convert.evalTexts ?? []).map((t) => t.path)] });
  mkdirSync(out, { recursive: true });
  const report: SweepReport = {
    tool: 'transmla sweep', created: new Date().toISOString(), model: resolve(o.model),
    methods: o.methods, fractions: [...o.fractions].sort((a, b) => b - a), convention: null, points: [],
  };
  // Temp file + rename: a kill mid-write never leaves a truncated sweep.json.
  const writeAtomic = (name: string, text: string): void => {
    const tmp = join(out, `.${name}.tmp-${process.pid}`);
    writeFileSync(tmp, text);
    renameSync(tmp, join(out, name));
  };
  const save = (): void => writeAtomic('sweep.json', `${JSON.stringify(report, null, 2)}\n`);
  for (const [name, convert] of methods) {
    for (const f of report.fractions) {
      log(`sweep: ${name} at KV fraction ${f}`);
      setStage(`sweep: ${name} at KV fraction ${f}`);
      const dir = o.saveModels ? join(out, `${name}-kv${f}`) : null;
      const t0 = performance.now();
      const r = await convert({ ...o.convert, model: o.model, out: dir, overwrite: o.overwrite, kvFraction: f, log: (l) => log(`  ${l}`) });
      const score = (s: SweepScore): SweepScore => ({ ppl: s.ppl, kl: s.kl, top1: s.top1 });
      report.convention ??= r.evaluations[0]?.convention ?? null;
      report.points.push({
        method: name, kvFractionRequested: f, kvFraction: r.kvFraction, kvLoraRank: r.kvLoraRank, shape: r.shape,
        bytesPerTokenBefore: r.bytesPerTokenBefore, bytesPerTokenAfter: r.bytesPerTokenAfter,
        evaluations: r.evaluations.map((e) => ({ text: e.text, ctx: e.ctx, chunks: e.chunks, original: score(e.original), partialRope: score(e.partialRope), mla: score(e.mla) })),
        convertSeconds: r.convertSeconds, seconds: (performance.now() - t0) / 1000, output: r.output,
      });
      save();
    }
  }
  writeAtomic('sweep.html', await buildSweepHtml(report));
  log(`sweep: wrote ${join(out, 'sweep.json')} and ${join(out, 'sweep.html')}`);
  return report;
}
