// Pieces both conversion reports share (TransMLA's report.ts, MHA2MLA's mha2mla-report.ts):
// number formatting, the KV-cache bars, perplexity per stage, and the decode-speed section of a
// `transmla bench` run.
import { readFileSync } from 'node:fs';
import type { EvalReport } from '../schema/transmla-json.js';
import type { BenchReport } from '../schema/bench-json.js';
import { barsChart, linesChart, renderSvg, stagesChart } from './charts.js';
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

/** An evaluation text's name without its folder (whole: a cut name can no longer be told from another). */
export function shortText(name: string): string {
  return name.split('/').pop() ?? name;
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
  const rows: { text: string; stage: string; ppl: number }[] = [];
  const trows: (string | number)[][] = [];
  for (const e of evaluations) {
    const g = shortText(e.text);
    for (const [stage, s] of [['original', e.original], ['partial RoPE', e.partialRope], ['MLA', e.mla]] as const) {
      rows.push({ text: g, stage, ppl: s.ppl });
      trows.push([g, stage, s.ppl.toFixed(4), stage === 'original' ? '—' : s.kl.toFixed(4), stage === 'original' ? '—' : pct(s.top1, 2)]);
    }
  }
  return {
    title: 'Perplexity per stage',
    intro: `${stagesIntro} ${evaluations[0]!.convention}. ` +
      'KL(original ‖ stage) and top-1 agreement with the original are on the same tokens. ' +
      'The chart shows each stage\'s perplexity as a ratio to the original\'s on the same text (1 = no loss), on an axis that does not start at zero.',
    charts: [await renderSvg(stagesChart('Perplexity by stage, relative to the original', rows))],
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

type Roofline = BenchReport['runs'][number]['roofline'][number];

/** Why a point beat its roofline; bench.json files from before the readings next to the timings carry no reason. */
function aboveWhy(rf: Roofline): { kind: string; reason: string } | null {
  if (!(rf.fractionOfRoofline > 1)) return null;
  if (rf.aboveRoofline && rf.aboveRooflineKind) return { kind: rf.aboveRooflineKind, reason: rf.aboveRoofline };
  return { kind: 'up-front bandwidth only', reason: 'above the bandwidth measured before the runs (this bench.json predates the readings between timed repetitions; run transmla bench again)' };
}

const gbs = (n: number): string => (n / 1e9).toFixed(1);

/** Decode speed charts and table of a bench report (also used on its own). */
export async function benchSection(b: BenchReport): Promise<Section> {
  const speed: { x: number; y: number; series: string }[] = [];
  const ms: { x: number; y: number; series: string }[] = [];
  const share: { x: number; y: number; series: string; lo: number; hi: number; note: string | null }[] = [];
  for (const run of b.runs) {
    const name = seriesName(run);
    run.contexts.forEach((c, i) => {
      const rf = run.roofline[i]!;
      speed.push({ x: c.context, y: c.tokensPerSecond, series: name });
      ms.push({ x: c.context, y: c.msPerToken, series: name });
      const [lo, hi] = rf.fractionOfRooflineRange ?? [rf.fractionOfRoofline, rf.fractionOfRoofline];
      share.push({ x: c.context, y: 100 * rf.fractionOfRoofline, series: name, lo: 100 * lo, hi: 100 * hi, note: aboveWhy(rf)?.kind ?? null });
    });
  }
  const anyAbove = b.runs.some((r) => r.roofline.some((rf) => rf.fractionOfRoofline > 1));
  const rows: (string | number)[][] = [];
  for (const run of b.runs) {
    run.contexts.forEach((c, i) => {
      const rf = run.roofline[i]!;
      const range = rf.minMsPerTokenRange ? ` (${rf.minMsPerTokenRange[0].toFixed(3)}–${rf.minMsPerTokenRange[1].toFixed(3)})` : '';
      rows.push([
        seriesName(run), c.context, c.tokensPerSecond.toFixed(1), c.msPerToken.toFixed(3), fmtBytes(c.cacheBytes),
        gbs(rf.bandwidthBytesPerSecond ?? b.bandwidth.bytesPerSecond), `${rf.minMsPerToken.toFixed(3)}${range}`,
        `${pct(rf.fractionOfRoofline, 0)}${rf.fractionOfRoofline > 1 ? '*' : ''}`, ...(anyAbove ? [aboveWhy(rf)?.reason ?? ''] : []), fmtBytes(run.peakRssBytes),
      ]);
    });
  }
  const ratioTable = b.ratios.length > 0
    ? table(['context', 'decode speed-up (this ÷ comparison)', 'cache bytes ratio'], b.ratios.map((x) => [x.context, `${x.decodeSpeedup.toFixed(2)}×`, x.cacheBytesRatio.toFixed(3)]))
    : '';
  const skipped = b.llamaCppSkipped.map((s) => `<p class="intro">llama.cpp not run on ${esc(s.model)}: ${esc(s.reason)}</p>`).join('');
  const probes = b.bandwidthProbes && b.bandwidthProbes.count > 0
    ? `; ${gbs(b.bandwidthProbes.minBytesPerSecond)}–${gbs(b.bandwidthProbes.maxBytesPerSecond)} GB/s over ${b.bandwidthProbes.count} readings between timed repetitions, each context set against the readings next to its fastest repetition`
    : '';
  return {
    title: 'Decode speed vs context',
    intro: `Measured by transmla bench on ${b.created} (${b.machine.cpuModel}, ${b.machine.cpus} threads, ${b.machine.kernels} kernels). ` +
      `Memory bandwidth ${gbs(b.bandwidth.bytesPerSecond)} GB/s before the runs (${b.bandwidth.method})${probes}. ${b.notes.join('. ')}.`,
    charts: [
      await renderSvg(linesChart(`Decode tokens per second${wide(speed) ? ' (log scale)' : ''}`, speed, { xTitle: 'context (cached tokens)', yTitle: 'tokens / s', seriesTitle: 'engine · attention', xLog: true, yLog: wide(speed), points: true, xValues: b.contexts })),
      await renderSvg(linesChart(`Milliseconds per token${wide(ms) ? ' (log scale)' : ''}`, ms, { xTitle: 'context (cached tokens)', yTitle: 'ms / token', seriesTitle: 'engine · attention', xLog: true, yLog: wide(ms), points: true, xValues: b.contexts })),
      await renderSvg(linesChart('Share of the memory roofline reached (vertical bars: over the run\'s range of bandwidth readings)', share, {
        xTitle: 'context (cached tokens)', yTitle: '% of the roofline', seriesTitle: 'engine · attention', xLog: true, points: true, xValues: b.contexts,
        ranges: true, notes: true, hRules: [{ y: 100, label: 'memory roofline' }],
      })),
    ],
    html: table(['engine · attention', 'context', 'tok/s', 'ms/token', 'cache', 'GB/s next to it', 'roofline ms (range)', 'of roofline', ...(anyAbove ? ['* above the roofline because'] : []), 'peak RSS'], rows) +
      ratioTable + skipped,
  };
}

/** The decode-speed section, or how to add it. */
export async function benchOrHint(bench: BenchReport | null, output: string | null): Promise<Section> {
  return bench
    ? benchSection(bench)
    : { title: 'Decode speed vs context', html: `<p class="empty">Not benchmarked yet: run <code>transmla bench ${esc(output ?? '<folder>')}</code> to add it.</p>` };
}
