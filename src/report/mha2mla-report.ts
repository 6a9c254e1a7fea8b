// report.html of an MHA2MLA folder (`transmla convert --method mha2mla`), from its transmla.json
// and bench.json (when benchmarked): which RoPE pairs (frequencies) every KV head kept, how much
// of the NoPE-key/value energy the low-rank latent keeps at the chosen rank (the SVD spectra),
// perplexity per stage, and the KV bytes before and after.
import type { Mha2mlaReport } from '../schema/transmla-json.js';
import type { BenchReport } from '../schema/bench-json.js';
import { columnsChart, groupedBarsChart, pairMapChart, renderSvg, smallMultiplesChart } from './charts.js';
import { facts, page, table, type Section } from './html.js';
import { benchOrHint, fmtBytes, kvCacheSection, pct, stagesSection } from './sections.js';

const SELECTION: Record<string, string> = {
  high: 'S_high (the fastest-rotating pairs)',
  low: 'S_low (the slowest-rotating pairs)',
  uniform: 'S_uniform (evenly spaced pairs)',
  '2norm': 'S_2-norm (per layer and KV head, the pairs with the largest query·key norm product)',
};

function summarySection(r: Mha2mlaReport): Section {
  const p = r.parameters, c = r.calibration, s = r.source;
  return {
    title: 'Conversion',
    html: facts([
      ['method', r.methodDescription],
      ['source', `${s.path} (${s.modelType}, ${s.layers} layers, ${s.heads} heads / ${s.kvHeads} KV heads × ${s.headDim}, ${s.dtype})`],
      ['output', r.output ?? '(not saved)'],
      ['created', r.created],
      ['cache per token per layer', `${s.kvHeads} KV heads × 2·${p.ropePairsPerHead} RoPE key dims + latent ${p.kvLoraRank} = ${r.kvCache.elementsPerTokenPerLayerAfter} values (was ${r.kvCache.elementsPerTokenPerLayerBefore}: ${pct(p.kvFraction, 2)})`],
      ['RoPE pairs kept', `${p.ropePairsPerHead} of ${s.headDim / 2} per KV head, ${SELECTION[p.selection] ?? p.selection}${p.normStat ? `, ${p.normStat} pair norms` : ''}`],
      ['low-rank latent', `SVD_${p.lowRank} (${p.lowRank === 'joint' ? 'one factorisation of [W_k,nope ; W_v]' : 'W_k,nope and W_v factorised separately'}), ${p.weighting === 'weights' ? 'weight-only' : 'activation-aware (weighted by the calibration input second moment)'}`],
      ['softmax scale', p.softmaxScale],
      ['calibration', c.statistics.length > 0
        ? `${c.samples} × ${c.seqLen} tokens (seed ${c.seed}) from ${c.file} (${c.documents} documents, ${c.heldOutDocuments} held out): ${c.statistics.join(', ')}`
        : `none needed (${c.file}: ${c.heldOutDocuments} held-out documents)`],
      ['time', `conversion ${r.seconds.convertTotal.toFixed(1)} s, evaluation ${r.seconds.evaluation.toFixed(1)} s; peak RSS ${fmtBytes(r.peakRssBytes)}`],
    ]),
  };
}

/** Wavelength 2π/ω in tokens, readable. */
function wavelength(w: number): string {
  const l = (2 * Math.PI) / w;
  return l >= 1000 ? `${(l / 1000).toFixed(l >= 1e5 ? 0 : 1)}k` : l.toFixed(l >= 100 ? 0 : 1);
}

async function ropeSection(r: Mha2mlaReport): Promise<Section> {
  const p = r.parameters, half = r.source.headDim / 2, G = r.source.kvHeads;
  const inv = r.source.ropeInvFreq;
  const layers = r.layers;
  const scored = layers.length > 0 && layers.every((l) => Array.isArray(l.pairScores) && l.pairScores.length === G);
  const cells: { x: number; y: string; kept: boolean; score: number | null }[] = [];
  const counts = new Array<number>(half).fill(0);
  const trows: (string | number)[][] = [];
  p.ropePairs.forEach((heads, l) => heads.forEach((kept, g) => {
    const set = new Set(kept);
    const sc = scored ? layers[l]!.pairScores![g]! : null;
    const max = sc ? Math.max(...sc) : 0;
    for (let k = 0; k < half; k++) cells.push({ x: k, y: `layer ${l + 1} · KV head ${g + 1}`, kept: set.has(k), score: sc ? (max > 0 ? sc[k]! / max : 0) : null });
    for (const k of kept) counts[k]!++;
    trows.push([l + 1, g + 1, kept.join(', '), inv ? kept.map((k) => wavelength(inv[k]!)).join(', ') : '—']);
  }));
  const heads = p.ropePairs.length * G;
  const charts = [
    await renderSvg(pairMapChart(`RoPE pairs kept per layer and KV head${scored ? ' (dots), over their S_2-norm scores' : ''}`, cells,
      { xTitle: 'RoPE pair k (0 = highest frequency)', scoreTitle: 'score ÷ the head\'s best' })),
    await renderSvg(columnsChart(`How many of the ${heads} KV heads keep each pair`, counts.map((y, x) => ({ x, y })), { xTitle: 'RoPE pair k (0 = highest frequency)', yTitle: 'KV heads' })),
  ];
  const freqNote = inv
    ? ` Pair k rotates at the source frequency ω_k; its wavelength 2π/ω_k runs from ${wavelength(inv[0]!)} tokens (k = 0) to ${wavelength(inv[half - 1]!)} tokens (k = ${half - 1}).`
    : ' (The source frequencies were not recorded by the conversion that wrote this transmla.json.)';
  return {
    title: 'RoPE pairs per KV head',
    intro: `Each KV head keeps ${p.ropePairsPerHead} of its ${half} rotary pairs under RoPE, at their original frequencies (${SELECTION[p.selection] ?? p.selection}); ` +
      `the other dimensions of its keys go into the latent without position.${freqNote}` +
      (p.selection === '2norm' && !scored ? ' The S_2-norm scores were not recorded by the conversion that wrote this transmla.json.' : ''),
    charts,
    html: table(['layer', 'KV head', 'pairs kept (k)', 'wavelengths (tokens)'], trows, { numericFrom: 4 }),
  };
}

async function lowRankSection(r: Mha2mlaReport): Promise<Section> {
  const p = r.parameters, layers = r.layers;
  const energy = layers.map((l, i) => ({ group: `layer ${i + 1}`, series: `energy kept at R = ${p.kvLoraRank}`, value: l.energy }));
  const charts = [await renderSvg(groupedBarsChart('Latent energy kept per layer', energy, 'share of [K_nope ; V] energy', 'kept'))];
  const recorded = layers.length > 0 && layers.every((l) => Array.isArray(l.spectra) && l.spectra.length > 0);
  let note = '';
  const trows: (string | number)[][] = [];
  if (recorded) {
    const parts = [...new Set(layers.flatMap((l) => l.spectra!.map((s) => s.part)))];
    for (const part of parts) {
      const share: { x: number; y: number; series: string }[] = [];
      const cum: { x: number; y: number; series: string }[] = [];
      const ranks = new Set<number>();
      layers.forEach((l, i) => {
        const s = l.spectra!.find((x) => x.part === part);
        if (!s) return;
        ranks.add(s.rank);
        let run = 0;
        s.shares.forEach((v, j) => {
          run += v;
          cum.push({ x: j + 1, y: Math.min(1, run), series: `layer ${i + 1}` });
          // Log axis: components with (numerically) no energy are left out.
          if (v > 1e-12) share.push({ x: j + 1, y: v, series: `layer ${i + 1}` });
        });
        trows.push([i + 1, part, s.rank, s.shares.length, pct(s.shares.slice(0, s.rank).reduce((a, b) => a + b, 0), 2)]);
      });
      const rules = [...ranks].map((x) => ({ x, label: `rank ${x}` }));
      charts.push(await renderSvg(smallMultiplesChart(`SVD spectrum of ${part}: energy share per component (grey: all layers)`, share, { xTitle: 'component', yTitle: 'share of energy', yLog: true, rules })));
      charts.push(await renderSvg(smallMultiplesChart(`Cumulative energy of ${part} (grey: all layers)`, cum, { xTitle: 'components kept', yTitle: 'energy kept', rules, yDomain: [0, 1] })));
    }
  } else {
    note = ' Per-component spectra were not recorded by the conversion that wrote this transmla.json.';
  }
  const weighted = p.weighting === 'activations' ? ' weighted by the calibration second moment of the layer input (‖W·C^½‖)' : '';
  return {
    title: 'Low-rank latent (SVD) per layer',
    intro: `The NoPE key dims and the values of each layer are compressed into a latent of R = ${p.kvLoraRank} values by truncated SVD_${p.lowRank}${weighted}` +
      `${p.lowRank === 'split' ? ' (keys and values each get their own share of R)' : ''}; the energy kept is the share of the squared singular values retained at that rank.${note}`,
    charts,
    html: recorded
      ? table(['layer', 'matrix', 'rank', 'components', 'energy kept'], trows, { numericFrom: 2 })
      : table(['layer', 'energy kept'], layers.map((l, i) => [i + 1, pct(l.energy, 2)])),
  };
}

function timingSection(r: Mha2mlaReport): Section {
  const s = r.seconds;
  return {
    title: 'Timings',
    html: table(['stage', 'seconds'], [
      ['load', s.load.toFixed(2)], ['calibration', s.calibration.toFixed(2)], ['partial RoPE + SVD', s.conversion.toFixed(2)],
      ['save', s.save.toFixed(2)], ['conversion total', s.convertTotal.toFixed(2)], ['evaluation', s.evaluation.toFixed(2)],
    ]),
  };
}

/** The report page of an MHA2MLA conversion (and its benchmark, when given). */
export async function buildMha2mlaReportHtml(r: Mha2mlaReport, bench: BenchReport | null): Promise<string> {
  const p = r.parameters;
  const sections: Section[] = [
    summarySection(r),
    await kvCacheSection(r.kvCache, r.source, `MHA2MLA (RoPE keys + latent)`),
    await stagesSection(r.evaluations,
      `original → partial RoPE (${p.ropePairsPerHead} pairs per KV head, S_${p.selection}) → MLA (SVD_${p.lowRank}, R = ${p.kvLoraRank}).`),
    await ropeSection(r),
    await lowRankSection(r),
    await benchOrHint(bench, r.output),
    timingSection(r),
  ];
  const src = r.source.path.split('/').pop() ?? r.source.path;
  return page({
    title: `${src} → MHA2MLA (${r.source.kvHeads}×2·${p.ropePairsPerHead} RoPE + ${p.kvLoraRank} latent values per layer, ${pct(r.kvCache.fraction)} of the KV cache)`,
    subtitle: r.methodDescription,
    sections,
    footer: `transmla report · ${r.output ?? ''} · built ${new Date().toISOString()}`,
  });
}
