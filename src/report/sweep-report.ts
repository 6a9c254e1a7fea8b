// sweep.html: perplexity (and KL from the original) against the KV-cache fraction, one line
// per conversion method, one chart per evaluation text, the original model as a dashed rule.
import type { SweepReport } from '../schema/sweep-json.js';
import { linesChart, renderSvg } from './charts.js';
import { page, table, type Section } from './html.js';
import { shortText } from './sections.js';
import { textTable } from './text-table.js';


export async function buildSweepHtml(s: SweepReport): Promise<string> {
  const texts = [...new Set(s.points.flatMap((p) => p.evaluations.map((e) => e.text)))];
  const sections: Section[] = [];
  for (const text of texts) {
    const ppl: { x: number; y: number; series: string; style: string }[] = [];
    const kl: { x: number; y: number; series: string }[] = [];
    let original: number | null = null;
    for (const p of s.points) {
      const e = p.evaluations.find((x) => x.text === text);
      if (!e) continue;
      original = e.original.ppl;
      ppl.push({ x: p.kvFraction, y: e.mla.ppl, series: p.method, style: 'MLA' });
      ppl.push({ x: p.kvFraction, y: e.partialRope.ppl, series: p.method, style: 'partial RoPE' });
      kl.push({ x: p.kvFraction, y: e.mla.kl, series: p.method });
    }
    const vals = ppl.map((r) => r.y).concat(original ?? []);
    const log = Math.max(...vals) / Math.min(...vals) > 20;
    sections.push({
      title: shortText(text),
      intro: `Perplexity after conversion at each KV-cache fraction (cached values per token ÷ the source's), per method; the partial-RoPE stage dashed, the original model as the dashed rule.${log ? ' Log scale.' : ''}`,
      charts: [
        await renderSvg(linesChart('Perplexity vs KV fraction', ppl, {
          xTitle: 'KV cache fraction', yTitle: 'perplexity', seriesTitle: 'method', styleTitle: 'stage', points: true, yLog: log, xValues: s.fractions,
          hRules: original === null ? [] : [{ y: original, label: `original ${original.toFixed(2)}` }],
        })),
        await renderSvg(linesChart('KL(original ‖ MLA) vs KV fraction', kl, { xTitle: 'KV cache fraction', yTitle: 'KL, nats per token', seriesTitle: 'method', points: true, xValues: s.fractions })),
      ],
    });
  }
  sections.push({
    title: 'Points',
    intro: s.convention ?? undefined,
    html: table(
      ['method', 'KV fraction', 'cache layout', 'bytes/token', 'text', 'ppl original', 'ppl partial RoPE', 'ppl MLA', 'KL MLA', 'top-1 MLA', 'convert s', 'total s'],
      s.points.flatMap((p) => p.evaluations.map((e) => [
        p.method, p.kvFraction.toFixed(4), p.shape, `${p.bytesPerTokenBefore} → ${p.bytesPerTokenAfter}`, shortText(e.text),
        e.original.ppl.toFixed(3), e.partialRope.ppl.toFixed(3), e.mla.ppl.toFixed(3), e.mla.kl.toFixed(4), `${(100 * e.mla.top1).toFixed(2)} %`, p.convertSeconds.toFixed(1), p.seconds.toFixed(1),
      ])),
      { numericFrom: 5 },
    ),
  });
  const name = s.model.split('/').pop() ?? s.model;
  return page({
    title: `${name}: perplexity vs KV-cache budget`,
    subtitle: `methods ${s.methods.join(', ')}; fractions ${s.fractions.join(', ')}`,
    sections,
    footer: `transmla sweep · ${s.model} · ${s.created}`,
  });
}

/**
 * The terminal summary of a sweep (what `transmla sweep` prints on stdout): one row per point and
 * evaluation text, with the cache budget, the bytes per token, perplexity per stage, and the MLA
 * model's KL from and top-1 agreement with the original.
 */
export function formatSweepSummary(s: SweepReport): string {
  const texts = [...new Set(s.points.flatMap((p) => p.evaluations.map((e) => e.text)))];
  const many = texts.length > 1;
  const headers = ['method', ...(many ? ['text'] : []), 'KV fraction', 'bytes/token', 'ppl original', 'ppl partial RoPE', 'ppl MLA', 'KL MLA', 'top-1 MLA', 'convert s', 'total s'];
  const rows = s.points.flatMap((p) => (p.evaluations.length > 0 ? p.evaluations : [null]).map((e) => [
    p.method, ...(many ? [e ? shortText(e.text) : '—'] : []), p.kvFraction.toFixed(4), `${p.bytesPerTokenBefore} → ${p.bytesPerTokenAfter}`,
    e ? e.original.ppl.toFixed(3) : '—', e ? e.partialRope.ppl.toFixed(3) : '—', e ? e.mla.ppl.toFixed(3) : '—',
    e ? e.mla.kl.toFixed(4) : '—', e ? `${(100 * e.mla.top1).toFixed(2)} %` : '—', p.convertSeconds.toFixed(1), p.seconds.toFixed(1),
  ]));
  const name = s.model.split('/').pop() ?? s.model;
  const e0 = s.points[0]?.evaluations[0];
  const on = many ? `${texts.length} evaluation texts` : e0 ? `${shortText(e0.text)}, ${e0.chunks} chunks × ${e0.ctx} tokens` : 'no evaluation';
  return [
    `sweep of ${name}: ${s.points.length} point${s.points.length === 1 ? '' : 's'} (${s.methods.join(', ')} at KV fractions ${s.fractions.join(', ')}) on ${on}`,
    textTable(headers, rows, { numericFrom: many ? 2 : 1 }),
    ...(s.convention ? [s.convention] : []),
  ].join('\n');
}
