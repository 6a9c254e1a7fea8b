// report.html of a converted folder, from its transmla.json (written by convert) and bench.json
// (written by `transmla bench`, when run): what was chosen, what it cost in perplexity, what it
// saves in cache bytes and what it gains in decode speed, as charts one can take in at a glance.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ConvertReport } from '../convert/convert.js';
import type { BenchReport } from '../eval/bench.js';
import { barsChart, groupedBarsChart, heatmapChart, linesChart, pointsChart, renderSvg } from './charts.js';
import { esc, facts, page, table, type Section } from './html.js';

/** Per-layer fields newer conversions record (older transmla.json files lack them). */
type LayerStats = Omit<ConvertReport['layers'][number], 'kvSpectrum' | 'ropeInvFreq'> & { kvSpectrum?: number[]; ropeInvFreq?: number[] };

function readJson<T>(path: string): T {
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

function pct(x: number, digits = 1): string {
  return `${(100 * x).toFixed(digits)} %`;
}

function shortText(name: string): string {
  const base = name.split('/').pop() ?? name;
  return base.length > 48 ? `${base.slice(0, 45)}…` : base;
}

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
      ['FreqFold', `${p.freqFold} (requested ${p.freqFoldRequested}); collapse ${p.collapse}; RoPE dim requested ${p.ropeDimRequested}`],
      ['q_lora_rank', p.qLoraRank ?? 'none'],
      ['balance_kv_ratio / PCA damping', `${p.balanceKvRatio} / ${p.pcaDamp}`],
      ['calibration', `${c.samples} × ${c.seqLen} tokens (seed ${c.seed}) from ${c.file} (${c.documents} documents, ${c.heldOutDocuments} held out), order ${p.calibOrder}`],
      ['time', `conversion ${r.seconds.convertTotal.toFixed(1)} s, evaluation ${r.seconds.evaluation.toFixed(1)} s; peak RSS ${fmtBytes(r.peakRssBytes)}`],
    ]),
  };
}

async function kvSection(r: ConvertReport): Promise<Section> {
  const k = r.kvCache;
  const rows = [
    { label: `source (${r.source.kvHeads === r.source.heads ? 'MHA' : 'GQA'})`, value: k.bytesPerTokenBefore, text: `${k.bytesPerTokenBefore.toLocaleString('en-US')} B` },
    { label: 'MLA latent', value: k.bytesPerTokenAfter, text: `${k.bytesPerTokenAfter.toLocaleString('en-US')} B (${pct(k.fraction)})` },
  ];
  return {
    title: 'KV cache',
    intro: `Bytes per token over all ${r.source.layers} layers at ${k.dtype}. At 4K tokens: ${fmtBytes(4096 * k.bytesPerTokenBefore)} → ${fmtBytes(4096 * k.bytesPerTokenAfter)}; ` +
      `at 32K: ${fmtBytes(32768 * k.bytesPerTokenBefore)} → ${fmtBytes(32768 * k.bytesPerTokenAfter)}.`,
    charts: [await renderSvg(barsChart('KV cache bytes per token', rows, `bytes per token (${k.dtype})`))],
  };
}

async function perplexitySection(r: ConvertReport): Promise<Section> {
  if (r.evaluations.length === 0) return { title: 'Perplexity per stage', html: '<p class="empty">No evaluation was recorded.</p>' };
  const rows: { group: string; series: string; value: number }[] = [];
  const trows: (string | number)[][] = [];
  for (const e of r.evaluations) {
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
    intro: `original → partial RoPE (RoRoPE + FreqFold) → MLA (BKV-PCA). ${r.evaluations[0]!.convention}. ` +
      `KL(original ‖ stage) and top-1 agreement with the original are on the same tokens.${log ? ' Log scale.' : ''}`,
    charts: [await renderSvg(groupedBarsChart('Perplexity by stage', rows, 'perplexity', 'stage', log))],
    html: table(['text', 'stage', 'perplexity', 'KL (nats/token)', 'top-1 agreement'], trows, { numericFrom: 2 }) +
      `<p class="intro">${r.evaluations.map((e) => `${esc(shortText(e.text))}: ${e.chunks} chunks × ${e.ctx} tokens (${e.predictions} predictions), sha256 ${esc(e.sha256.slice(0, 12))}…`).join('<br>')}</p>`,
  };
}

async function pcaSection(r: ConvertReport): Promise<Section> {
  const layers = r.layers as LayerStats[];
  const rank = r.parameters.kvLoraRank;
  const energy: { group: string; series: string; value: number }[] = [];
  layers.forEach((l, i) => {
    energy.push({ group: `layer ${i}`, series: `latent energy kept at r = ${rank}`, value: l.kvEnergy });
    energy.push({ group: `layer ${i}`, series: `key energy in the ${r.parameters.qkRopeHeadDim} RoPE dims`, value: l.ropeEnergy });
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
        cum.push({ x: j + 1, y: Math.min(1, run), series: `layer ${i}` });
        // Log axis: components with (numerically) no variance are left out.
        if (s > 1e-15) share.push({ x: j + 1, y: s, series: `layer ${i}` });
      });
    });
    const rule = [{ x: rank, label: `r = ${rank}` }];
    charts.push(await renderSvg(linesChart('BKV-PCA spectrum: variance share per component', share, { xTitle: 'component', yTitle: 'share of latent variance', seriesTitle: 'layer', yLog: true, rules: rule })));
    charts.push(await renderSvg(linesChart('Cumulative latent energy', cum, { xTitle: 'components kept', yTitle: 'energy kept', seriesTitle: 'layer', rules: rule, yDomain: [0, 1] })));
  } else {
    note = ' Per-component spectra were not recorded by the conversion that wrote this transmla.json.';
  }
  return {
    title: 'PCA per layer',
    intro: `BKV-PCA compresses the NoPE keys (scaled by α) and the values of each layer into r = ${rank} latent dimensions; RoRoPE concentrates the keys' positional part into ${r.parameters.qkRopeHeadDim} RoPE dims.${note}`,
    charts,
    html: table(['layer', 'latent energy kept', 'RoPE energy kept', 'α (key/value balance)'], layers.map((l, i) => [i, pct(l.kvEnergy, 2), pct(l.ropeEnergy, 2), l.alpha.toFixed(4)])),
  };
}

async function ropeSection(r: ConvertReport): Promise<Section> {
  const layers = r.layers as LayerStats[];
  if (!layers.every((l) => Array.isArray(l.ropeInvFreq) && l.ropeInvFreq.length > 0)) {
    return { title: 'RoPE frequencies', html: '<p class="empty">The chosen RoPE frequencies were not recorded by the conversion that wrote this transmla.json.</p>' };
  }
  const rows: { x: number; y: number; value: number }[] = [];
  layers.forEach((l, i) => l.ropeInvFreq!.forEach((w, j) => rows.push({ x: j, y: i, value: (2 * Math.PI) / w })));
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
    label: `d_R ${s.ropeDim} · M ${s.freqFold} · r ${s.kvLoraRank}`, value: s.ppl,
    chosen: s.ropeDim === p.qkRopeHeadDim && s.freqFold === p.freqFold && s.kvLoraRank === p.kvLoraRank,
  }));
  return {
    title: 'Shape search',
    intro: `Candidates scored by ${r.search.scoredOn}.`,
    charts: [await renderSvg(pointsChart('Held-out perplexity per candidate', rows, 'held-out perplexity'))],
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

/** The report page of a conversion (and its benchmark, when given). */
export async function buildReportHtml(r: ConvertReport, bench: BenchReport | null): Promise<string> {
  const sections: Section[] = [
    await summarySection(r),
    await kvSection(r),
    await perplexitySection(r),
    await pcaSection(r),
    await ropeSection(r),
  ];
  const search = await searchSection(r);
  if (search) sections.push(search);
  sections.push(bench
    ? await benchSection(bench)
    : { title: 'Decode speed vs context', html: `<p class="empty">Not benchmarked yet: run <code>transmla bench ${esc(r.output ?? '<folder>')}</code> to add it.</p>` });
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
  const r = readJson<ConvertReport>(conv);
  if (r.tool !== 'transmla' || !r.parameters || !Array.isArray(r.layers)) throw new Error(`${conv} is not a transmla conversion report`);
  const benchFile = join(dir, 'bench.json');
  const bench = existsSync(benchFile) ? readJson<BenchReport>(benchFile) : null;
  const out = join(dir, 'report.html');
  writeFileSync(out, await buildReportHtml(r, bench));
  return out;
}
