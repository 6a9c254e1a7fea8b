// report.html of a converted folder, from its transmla.json (written by convert) and bench.json
// (written by `transmla bench`, when run): what was chosen, what it cost in perplexity, what it
// saves in cache bytes and what it gains in decode speed, as charts one can take in at a glance.
import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ConvertReport, StockExportReport, Mha2mlaReport } from '../schema/transmla-json.js';
import type { BenchReport } from '../schema/bench-json.js';
import { groupedBarsChart, heatmapChart, pointsChart, renderSvg, smallMultiplesChart } from './charts.js';
import { facts, page, table, type Section } from './html.js';
import { buildMha2mlaReportHtml } from './mha2mla-report.js';
import { benchOrHint, fmtBytes, kvCacheSection, pct, readJson, stagesSection } from './sections.js';

export { benchSection, fmtBytes } from './sections.js';

/** Per-layer fields newer conversions record (older transmla.json files lack them). */
type LayerStats = Omit<ConvertReport['layers'][number], 'kvSpectrum' | 'ropeInvFreq'> & { kvSpectrum?: number[]; ropeInvFreq?: number[] };

async function summarySection(r: ConvertReport): Promise<Section> {
  const p = r.parameters, c = r.calibration;
  return {
    title: 'Conversion',
    html: facts([
      ['method', r.method],
      ['source', `${r.source.path} (${r.source.modelType}, ${r.source.layers} layers, ${r.source.heads} heads / ${r.source.kvHeads} KV heads × ${r.source.headDim}, ${r.source.dtype})`],
      ['output', r.output ?? '(not saved)'],
      ['created', r.created],
      ['cache per token per layer', `kv_lora_rank ${p.kvLoraRank} + qk_rope_head_dim ${p.qkRopeHeadDim} = ${p.kvLoraRank + p.qkRopeHeadDim} values (was ${r.kvCache.elementsPerTokenPerLayerBefore}: ${pct(p.kvFraction, 2)})`],
      // Per-layer widths (--rank-alloc): the line above is their mean, the same total.
      ...(p.kvLoraRanks ? [['per-layer widths', `${p.rankAlloc?.method ?? 'allocated'}: (r + d_R) ${p.kvLoraRanks.map((x, l) => `${x}+${p.qkRopeHeadDims?.[l] ?? p.qkRopeHeadDim}`).join(', ')}; the same total`] as [string, string]] : []),
      ['FreqFold', `${p.freqFold} (requested ${p.freqFoldRequested}); collapse ${p.collapse}; RoPE dim requested ${p.ropeDimRequested}`],
      ['q_lora_rank', p.qLoraRank ?? 'none'],
      ['balance_kv_ratio / PCA damping', `${p.balanceKvRatio} / ${p.pcaDamp}`],
      ['calibration', `${c.samples} × ${c.seqLen} tokens (seed ${c.seed}) from ${c.file} (${c.documents} documents, ${c.heldOutDocuments} held out), order ${p.calibOrder}`],
      ['time', `conversion ${r.seconds.convertTotal.toFixed(1)} s, evaluation ${r.seconds.evaluation.toFixed(1)} s; peak RSS ${fmtBytes(r.peakRssBytes)}`],
    ]),
  };
}

async function pcaSection(r: ConvertReport): Promise<Section> {
  const layers = r.layers as LayerStats[];
  const rank = r.parameters.kvLoraRank;
  const energy: { group: string; series: string; value: number }[] = [];
  layers.forEach((l, i) => {
    energy.push({ group: `layer ${i + 1}`, series: `latent energy kept at r = ${rank}`, value: l.kvEnergy });
    energy.push({ group: `layer ${i + 1}`, series: `key energy in the ${r.parameters.qkRopeHeadDim} RoPE dims`, value: l.ropeEnergy });
  });
  const charts = [await renderSvg(groupedBarsChart('Energy kept per layer', energy, 'share of energy', 'kept'))];
  let note = '';
  if (layers.length > 0 && layers.every((l) => Array.isArray(l.kvSpectrum) && l.kvSpectrum.length > 0)) {
    const cum: { x: number; y: number; series: string }[] = [];
    const share: { x: number; y: number; series: string }[] = [];
    layers.forEach((l, i) => {
      let run = 0;
      l.kvSpectrum!.forEach((s, j) => {
        run += s;
        cum.push({ x: j + 1, y: Math.min(1, run), series: `layer ${i + 1}` });
        // Log axis: components with (numerically) no variance are left out.
        if (s > 1e-15) share.push({ x: j + 1, y: s, series: `layer ${i + 1}` });
      });
    });
    const rule = [{ x: rank, label: `r = ${rank}` }];
    charts.push(await renderSvg(smallMultiplesChart('BKV-PCA spectrum: variance share per component (grey: all layers)', share, { xTitle: 'component', yTitle: 'share of latent variance', yLog: true, rules: rule })));
    charts.push(await renderSvg(smallMultiplesChart('Cumulative latent energy (grey: all layers)', cum, { xTitle: 'components kept', yTitle: 'energy kept', rules: rule, yDomain: [0, 1] })));
  } else {
    note = ' Per-component spectra were not recorded by the conversion that wrote this transmla.json.';
  }
  return {
    title: 'PCA per layer',
    intro: `BKV-PCA compresses the NoPE keys (scaled by α) and the values of each layer into r = ${rank} latent dimensions; RoRoPE concentrates the keys' positional part into ${r.parameters.qkRopeHeadDim} RoPE dims.${note}`,
    charts,
    html: table(['layer', 'latent energy kept', 'RoPE energy kept', 'α (key/value balance)'], layers.map((l, i) => [i + 1, pct(l.kvEnergy, 2), pct(l.ropeEnergy, 2), l.alpha.toFixed(4)])),
  };
}

async function ropeSection(r: ConvertReport): Promise<Section> {
  const layers = r.layers as LayerStats[];
  if (!layers.every((l) => Array.isArray(l.ropeInvFreq) && l.ropeInvFreq.length > 0)) {
    return { title: 'RoPE frequencies', html: '<p class="empty">The chosen RoPE frequencies were not recorded by the conversion that wrote this transmla.json.</p>' };
  }
  const rows: { x: number; y: number; value: number }[] = [];
  layers.forEach((l, i) => l.ropeInvFreq!.forEach((w, j) => rows.push({ x: j, y: i + 1, value: (2 * Math.PI) / w })));
  const f0 = layers[0]!.ropeInvFreq!;
  const same = layers.every((l) => l.ropeInvFreq!.every((w, j) => w === f0[j]));
  return {
    title: 'RoPE frequencies per layer',
    intro: `The ${f0.length} rotary pairs kept in each layer, as wavelengths 2π/ω in tokens (${r.parameters.ropeLayout}).` +
      (same ? ' Every layer keeps the same frequencies.' : ''),
    charts: [await renderSvg(heatmapChart('Kept RoPE wavelength (tokens)', rows, { xTitle: 'RoPE pair', yTitle: 'layer', valueTitle: 'wavelength' }))],
  };
}

async function searchSection(r: ConvertReport): Promise<Section | null> {
  const t = r.search?.trace ?? [];
  if (t.length === 0) return null;
  const p = r.parameters;
  const rows = t.map((s) => ({
    label: `d_R ${s.ropeDim} · M ${s.freqFold} · r ${s.kvLoraRank}`, value: s.score ?? (s as { ppl?: number }).ppl ?? NaN,
    chosen: s.ropeDim === p.qkRopeHeadDim && s.freqFold === p.freqFold && s.kvLoraRank === p.kvLoraRank,
  }));
  return {
    title: 'Shape search',
    intro: `Candidates scored by ${r.search.scoredOn}.`,
    charts: [await renderSvg(pointsChart('Score per candidate (lower is better)', rows, /perplexity/.test(r.search.scoredOn) ? 'held-out perplexity' : 'attention-output error'))],
  };
}

function timingSection(r: ConvertReport): Section {
  const s = r.seconds;
  return {
    title: 'Timings',
    html: table(['stage', 'seconds'], [
      ['load', s.load.toFixed(2)], ['pass 1 (original-model statistics)', s.pass1.toFixed(2)], ['FreqFold / shape search', s.freqFoldSearch.toFixed(2)],
      ['RoRoPE + BKV-PCA', s.conversion.toFixed(2)], ['save', s.save.toFixed(2)], ['conversion total', s.convertTotal.toFixed(2)], ['evaluation', s.evaluation.toFixed(2)],
    ]),
  };
}

// A strict DeepSeek-V3 export: what the calibrated kv_a_layernorm costs against the exact model.
function stockSection(x: StockExportReport): Section {
  return {
    title: 'Strict DeepSeek-V3 export',
    intro: `${x.method}. Exported from ${x.source.exactFolder}; the sections below are that conversion's.`,
    html: table(['text', 'ctx × chunks', 'exact MLA ppl', 'stock-semantics ppl', 'gap', 'KL(exact ‖ stock)', 'top-1'],
      x.evaluations.map((e) => [e.text, `${e.ctx} × ${e.chunks}`, e.exact.ppl.toFixed(4), e.stock.ppl.toFixed(4),
        `${e.pplGapPercent >= 0 ? '+' : ''}${e.pplGapPercent.toFixed(2)} %`, e.stock.kl.toFixed(5), pct(e.stock.top1, 2)]), { numericFrom: 2 }),
  };
}

/** The report page of a conversion (and its benchmark, when given). */
export async function buildReportHtml(r: ConvertReport, bench: BenchReport | null, stock: StockExportReport | null = null): Promise<string> {
  const sections: Section[] = [
    ...(stock ? [stockSection(stock)] : []),
    await summarySection(r),
    await kvCacheSection(r.kvCache, r.source, 'MLA latent'),
    await stagesSection(r.evaluations, 'original → partial RoPE (RoRoPE + FreqFold) → MLA (BKV-PCA).'),
    await pcaSection(r),
    await ropeSection(r),
  ];
  const search = await searchSection(r);
  if (search) sections.push(search);
  sections.push(await benchOrHint(bench, r.output));
  sections.push(timingSection(r));
  const src = r.source.path.split('/').pop() ?? r.source.path;
  return page({
    title: `${src} → MLA (${r.parameters.kvLoraRank} + ${r.parameters.qkRopeHeadDim} cached values per layer, ${pct(r.kvCache.fraction)} of the KV cache)`,
    subtitle: r.method,
    sections,
    footer: `transmla report · ${r.output ?? ''} · built ${new Date().toISOString()}`,
  });
}

/** Writes `folder`/report.html from its transmla.json and bench.json (when present); returns the path. */
export async function writeReport(folder: string): Promise<string> {
  const dir = resolve(folder);
  const conv = join(dir, 'transmla.json');
  if (!existsSync(conv)) throw new Error(`${dir} has no transmla.json (it is written by \`transmla convert\`)`);
  let r = readJson<ConvertReport | Mha2mlaReport | StockExportReport>(conv);
  let stock: StockExportReport | null = null;
  if ((r as StockExportReport).variant === 'deepseek-v3') {
    // A strict export carries the conversion report of the folder it was exported from.
    stock = r as StockExportReport;
    if (!stock.conversion) throw new Error(`${conv} is a strict DeepSeek-V3 export whose source folder had no conversion report; nothing to draw`);
    r = stock.conversion as unknown as ConvertReport;
  }
  if (r.tool !== 'transmla' || !r.parameters || !Array.isArray(r.layers)) throw new Error(`${conv} is not a transmla conversion report`);
  const benchFile = join(dir, 'bench.json');
  const bench = existsSync(benchFile) ? readJson<BenchReport>(benchFile) : null;
  const out = join(dir, 'report.html');
  // MHA2MLA folders (model_type llama_mha2mla) record method "mha2mla"; every other report is TransMLA's.
  writeFileSync(out, r.method === 'mha2mla' ? await buildMha2mlaReportHtml(r as Mha2mlaReport, bench) : await buildReportHtml(r as ConvertReport, bench, stock));
  return out;
}
