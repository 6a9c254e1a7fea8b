// Pieces both conversion reports share (TransMLA's report.ts, MHA2MLA's mha2mla-report.ts):
// number formatting, the KV-cache bars, perplexity per stage, and the decode-speed section of a
// `transmla bench` run.
import { readFileSync } from 'node:fs';
import type { EvalReport } from '../schema/transmla-json.js';
import type { BenchReport } from '../schema/bench-json.js';
import { barsChart, groupedBarsChart, linesChart, renderSvg } from './charts.js';
import { esc, table, type Section } from './html.js';

export function readJson<T>(path: string): T {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch (e) {
    throw new Error(`cannot read ${path}: ${(e as Error).message}`);
  }
}

export function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const u = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${u[i]}`;
}

export function pct(x: number, digits = 1): string {
  return `${(100 * x).toFixed(digits)} %`;
}

export function shortText(name: string): string {
  const base = name.split('/').pop() ?? name;
  return base.length > 48 ? `${base.slice(0, 45)}…` : base;
}

/** The kvCache record both conversion reports write. */
export interface KvCacheFacts { dtype: string; bytesPerTokenBefore: number; bytesPerTokenAfter: number; fraction: number }

/** Bytes per token of the source's cache and the converted one, with 4K/32K totals. */
export async function kvCacheSection(k: KvCacheFacts, source: { layers: number; heads: number; kvHeads: number }, afterLabel: string): Promise<Section> {
  const rows = [
    { label: `source (${source.kvHeads === source.heads ? 'MHA' : 'GQA'})`, value: k.bytesPerTokenBefore, text: `${k.bytesPerTokenBefore.toLocaleString('en-US')} B` },
    { label: afterLabel, value: k.bytesPerTokenAfter, text: `${k.bytesPerTokenAfter.toLocaleString('en-US')} B (${pct(k.fraction)})` },
  ];
  return {
    title: 'KV cache',
    intro: `Bytes per token over all ${source.layers} layers at ${k.dtype}. At 4K tokens: ${fmtBytes(4096 * k.bytesPerTokenBefore)} → ${fmtBytes(4096 * k.bytesPerTokenAfter)}; ` +
      `at 32K: ${fmtBytes(32768 * k.bytesPerTokenBefore)} → ${fmtBytes(32768 * k.bytesPerTokenAfter)}.`,
    charts: [await renderSvg(barsChart('KV cache bytes per token', rows, `bytes per token (${k.dtype})`))],
  };
}

/** Perplexity (and KL, top-1) of original → partial RoPE → MLA on every evaluation text. */
export async function stagesSection(evaluations: EvalReport[], stagesIntro: string): Promise<Section> {
  if (evaluations.length === 0) return { title: 'Perplexity per stage', html: '<p class="empty">No evaluation was recorded.</p>' };
  const rows: { group: string; series: string; value: number }[] = [];
  const trows: (string | number)[][] = [];
  for (const e of evaluations) {
    const g = shortText(e.text);
    for (const [stage, s] of [['original', e.original], ['partial RoPE', e.partialRope], ['MLA', e.mla]] as const) {
      rows.push({ group: g, series: stage, value: s.ppl });
      trows.push([g, stage, s.ppl.toFixed(4), stage === 'original' ? '—' : s.kl.toFixed(4), stage === 'original' ? '—' : pct(s.top1, 2)]);
    }
  }
  const vals = rows.map((x) => x.value);
  const log = Math.max(...vals) / Math.min(...vals) > 20;
  return {
    title: 'Perplexity per stage',
    intro: `${stagesIntro} ${evaluations[0]!.convention}. ` +
      `KL(original ‖ stage) and top-1 agreement with the original are on the same tokens.${log ? ' Log scale.' : ''}`,
    charts: [await renderSvg(groupedBarsChart('Perplexity by stage', rows, 'perplexity', 'stage', log))],
    html: table(['text', 'stage', 'perplexity', 'KL (nats/token)', 'top-1 agreement'], trows, { numericFrom: 2 }) +
      `<p class="intro">${evaluations.map((e) => `${esc(shortText(e.text))}: ${e.chunks} chunks × ${e.ctx} tokens (${e.predictions} predictions), sha256 ${esc(e.sha256.slice(0, 12))}…`).join('<br>')}</p>`,
  };
}

/** Values spanning more than 20× read better on a log axis. */
function wide(rows: { y: number }[]): boolean {
  const ys = rows.map((r) => r.y).filter((y) => y > 0);
  return ys.length > 0 && Math.max(...ys) / Math.min(...ys) > 20;
}

function seriesName(run: BenchReport['runs'][number]): string {
  return `${run.engine} · ${run.attention} (${run.role === 'model' ? 'this model' : 'comparison'})`;
}

/** Decode speed charts and table of a bench report (also used on its own). */
export async function benchSection(b: BenchReport): Promise<Section> {
  const speed: { x: number; y: number; series: string }[] = [];
  const ms: { x: number; y: number; series: string; style: string }[] = [];
  for (const run of b.runs) {
    const name = seriesName(run);
    run.contexts.forEach((c, i) => {
      speed.push({ x: c.context, y: c.tokensPerSecond, series: name });
      ms.push({ x: c.context, y: c.msPerToken, series: name, style: 'measured' });
      ms.push({ x: c.context, y: run.roofline[i]!.minMsPerToken, series: name, style: 'memory roofline' });
    });
  }
  const rows: (string | number)[][] = [];
  for (const run of b.runs) {
    run.contexts.forEach((c, i) => rows.push([
      seriesName(run), c.context, c.tokensPerSecond.toFixed(1), c.msPerToken.toFixed(3), fmtBytes(c.cacheBytes),
      run.roofline[i]!.minMsPerToken.toFixed(3), pct(run.roofline[i]!.fractionOfRoofline, 0), fmtBytes(run.peakRssBytes),
    ]));
  }
  const ratioTable = b.ratios.length > 0
    ? table(['context', 'decode speed-up (this ÷ comparison)', 'cache bytes ratio'], b.ratios.map((x) => [x.context, `${x.decodeSpeedup.toFixed(2)}×`, x.cacheBytesRatio.toFixed(3)]))
    : '';
  const skipped = b.llamaCppSkipped.map((s) => `<p class="intro">llama.cpp not run on ${esc(s.model)}: ${esc(s.reason)}</p>`).join('');
  return {
    title: 'Decode speed vs context',
    intro: `Measured by transmla bench on ${b.created} (${b.machine.cpuModel}, ${b.machine.cpus} threads, ${b.machine.kernels} kernels). ` +
      `Memory bandwidth ${(b.bandwidth.bytesPerSecond / 1e9).toFixed(1)} GB/s (${b.bandwidth.method}). ${b.notes.join('. ')}.`,
    charts: [
      await renderSvg(linesChart(`Decode tokens per second${wide(speed) ? ' (log scale)' : ''}`, speed, { xTitle: 'context (cached tokens)', yTitle: 'tokens / s', seriesTitle: 'engine · attention', xLog: true, yLog: wide(speed), points: true, xValues: b.contexts })),
      await renderSvg(linesChart(`Milliseconds per token and the memory roofline (dashed)${wide(ms) ? ' (log scale)' : ''}`, ms, { xTitle: 'context (cached tokens)', yTitle: 'ms / token', seriesTitle: 'engine · attention', styleTitle: 'line', xLog: true, yLog: wide(ms), points: true, xValues: b.contexts })),
    ],
    html: table(['engine · attention', 'context', 'tok/s', 'ms/token', 'cache', 'roofline ms', 'of roofline', 'peak RSS'], rows) + ratioTable + skipped,
  };
}

/** The decode-speed section, or how to add it. */
export async function benchOrHint(bench: BenchReport | null, output: string | null): Promise<Section> {
  return bench
    ? benchSection(bench)
    : { title: 'Decode speed vs context', html: `<p class="empty">Not benchmarked yet: run <code>transmla bench ${esc(output ?? '<folder>')}</code> to add it.</p>` };
}
