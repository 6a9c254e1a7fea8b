// The report's charts: Vega-Lite specifications rendered to static SVG in Node (vega View with
// the 'none' renderer, toSVG). Data is always inline, so rendering never loads anything.
import type { TopLevelSpec } from 'vega-lite';
import { compile } from 'vega-lite';
import { parse, View } from 'vega';

type Row = Record<string, string | number | boolean | null>;
type Base = { title: string; data: { values: Row[] }; width: number; height: number };

const WIDTH = 560;
const HEIGHT = 260;
const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif';

const CONFIG = {
  font: FONT,
  background: 'white',
  view: { stroke: '#ddd' },
  // No practical limits: vega's defaults (180 px) cut file names and legend titles short with "…"
  // (and without a canvas in Node it estimates text widths generously, so it would cut early).
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#eee', labelLimit: 2000, titleLimit: 2000 },
  legend: { labelFontSize: 11, titleFontSize: 12, orient: 'right' as const, labelLimit: 2000, titleLimit: 2000 },
  header: { labelLimit: 2000, titleLimit: 2000 },
  title: { fontSize: 13, anchor: 'start' as const },
  range: { category: ['#4c78a8', '#f58518', '#54a24b', '#e45756', '#72b7b2', '#b279a2', '#ff9da6', '#9d755d', '#bab0ac', '#eeca3b'] },
};

let counter = 0;

/**
 * SVG markup of a Vega-Lite spec. Element ids (clip paths, gradients) get a unique prefix so
 * several charts can sit inline in one page without their url(#id) references colliding.
 */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const full = { ...spec, config: { ...CONFIG, ...(spec.config ?? {}) } } as TopLevelSpec;
  const view = new View(parse(compile(full).spec), { renderer: 'none' });
  try {
    const svg = await view.toSVG();
    const p = `c${++counter}-`;
    return svg
      .replace(/\bid="([^"]+)"/g, (_m, id: string) => `id="${p}${id}"`)
      .replace(/url\(#([^)]+)\)/g, (_m, id: string) => `url(#${p}${id})`)
      .replace(/href="#([^"]+)"/g, (_m, id: string) => `href="#${p}${id}"`);
  } finally {
    view.finalize();
  }
}

const base = (title: string, values: Row[], width = WIDTH, height = HEIGHT): Base => ({ title, data: { values }, width, height });

/** Horizontal bars with their value printed: rows {label, value, text}. */
export function barsChart(title: string, rows: { label: string; value: number; text: string }[], valueTitle: string): TopLevelSpec {
  return {
    ...base(title, rows, WIDTH, 34 * rows.length),
    encoding: {
      y: { field: 'label', type: 'nominal', sort: null, title: null },
      x: { field: 'value', type: 'quantitative', title: valueTitle },
    },
    layer: [
      { mark: { type: 'bar', color: '#4c78a8' } },
      { mark: { type: 'text', align: 'left', dx: 4 }, encoding: { text: { field: 'text' } } },
    ],
  } as TopLevelSpec;
}

/** Grouped bars: rows {group, series, value}; one bar per series inside each group. */
export function groupedBarsChart(title: string, rows: { group: string; series: string; value: number }[], valueTitle: string, seriesTitle: string, logScale = false): TopLevelSpec {
  return {
    ...base(title, rows),
    mark: { type: 'bar' },
    encoding: {
      x: { field: 'group', type: 'nominal', sort: null, title: null, axis: { labelAngle: 0, labelLimit: 180 } },
      xOffset: { field: 'series', type: 'nominal', sort: null },
      y: { field: 'value', type: 'quantitative', title: valueTitle, scale: logScale ? { type: 'log' } : { zero: true } },
      color: { field: 'series', type: 'nominal', sort: null, title: seriesTitle },
    },
  } as TopLevelSpec;
}

export interface LineOptions {
  xTitle: string;
  yTitle: string;
  seriesTitle: string;
  xLog?: boolean;
  yLog?: boolean;
  /** Show a point at every value (few points per series). */
  points?: boolean;
  /** Vertical rules (e.g. the chosen rank) with a label. */
  rules?: { x: number; label: string }[];
  /** Horizontal rules (e.g. a baseline) with a label. */
  hRules?: { y: number; label: string }[];
  /** Legend title of the rows' `style` field (solid for the first style value, dashed for the next). */
  styleTitle?: string;
  yDomain?: [number, number];
  /** Tick values of the x axis (e.g. the measured context lengths). */
  xValues?: number[];
  /** Rows' lo/hi drawn as a vertical range at each point (e.g. a measurement's spread). */
  ranges?: boolean;
  /** Rows' `note` printed next to their point (few points only). */
  notes?: boolean;
}

/** Lines: rows {x, y, series} coloured by series; with a `style` field, each style gets its own dash pattern. */
export function linesChart(title: string, rows: { x: number; y: number; series: string; style?: string }[], o: LineOptions): TopLevelSpec {
  const styles = [...new Set(rows.map((r) => r.style).filter((v): v is string => v !== undefined))];
  const layers: object[] = [{
    mark: { type: 'line', point: o.points ?? false, strokeWidth: 1.6 },
    encoding: {
      x: {
        // Padding keeps the end points (and their labels, ranges) off the plot's frame.
        field: 'x', type: 'quantitative', title: o.xTitle, scale: { ...(o.xLog ? { type: 'log', base: 2 } : { zero: false }), nice: false, padding: 12 },
        ...(o.xValues ? { axis: { values: o.xValues, format: o.xValues.every(Number.isInteger) ? ',d' : '.4~g' } } : {}),
      },
      y: {
        field: 'y', type: 'quantitative', title: o.yTitle,
        scale: { ...(o.yLog ? { type: 'log' } : { zero: false }), ...(o.yDomain ? { domain: o.yDomain } : {}) },
      },
      color: { field: 'series', type: 'nominal', sort: null, title: o.seriesTitle },
      ...(styles.length > 0
        ? { strokeDash: { field: 'style', type: 'nominal', title: o.styleTitle ?? 'style', legend: { symbolType: 'stroke', symbolStrokeWidth: 2, symbolSize: 300, encode: { symbols: { update: { stroke: { value: '#444' } } } } }, scale: { domain: styles, range: styles.map((_, i) => (i === 0 ? [1, 0] : i === 1 ? [5, 3] : [2, 2])) } } }
        : {}),
    },
  }];
  for (const r of o.rules ?? []) {
    layers.push({ data: { values: [r] }, mark: { type: 'rule', color: '#555', strokeDash: [4, 3] }, encoding: { x: { field: 'x', type: 'quantitative' } } });
    layers.push({ data: { values: [r] }, mark: { type: 'text', align: 'left', dx: 4, dy: -4, color: '#333' }, encoding: { x: { field: 'x', type: 'quantitative' }, y: { value: 8 }, text: { field: 'label' } } });
  }
  const xEnc = { field: 'x', type: 'quantitative' }, yEnc = { field: 'y', type: 'quantitative' };
  if (o.ranges) {
    // One layer per series, each a few pixels aside, so ranges at the same x do not hide each other.
    const series = [...new Set(rows.map((r) => r.series))];
    series.forEach((name, k) => layers.push({
      transform: [{ filter: { field: 'series', equal: name } }],
      mark: { type: 'rule', strokeWidth: 2, opacity: 0.6, xOffset: 4 * (k - (series.length - 1) / 2) },
      encoding: { x: xEnc, y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' }, color: { field: 'series', type: 'nominal', sort: null } },
    }));
  }
  if (o.notes) {
    // Right of the point, except at the right end (left of it there, inside the plot).
    const xMax = Math.max(...rows.map((r) => r.x));
    for (const end of [false, true]) {
      layers.push({
        transform: [{ filter: `datum.note && (datum.x ${end ? '>=' : '<'} ${xMax})` }],
        mark: { type: 'text', align: end ? 'right' : 'left', dx: end ? -7 : 7, dy: -7, fontSize: 10, color: '#333' },
        encoding: { x: xEnc, y: yEnc, text: { field: 'note' } },
      });
    }
  }
  for (const r of o.hRules ?? []) {
    const at = ruleLabelPlace(rows, r, o);
    layers.push({ data: { values: [r] }, mark: { type: 'rule', color: '#555', strokeDash: [4, 3] }, encoding: { y: yEnc } });
    layers.push({
      data: { values: [r] },
      mark: { type: 'text', align: at.side === 'right' ? 'right' : 'left', baseline: at.above ? 'bottom' : 'top', dy: at.above ? -4 : 4, color: '#333' },
      encoding: { y: yEnc, x: { value: at.side === 'right' ? WIDTH - 4 : 4 }, text: { field: 'label' } },
    });
  }
  return { ...base(title, rows), layer: layers } as TopLevelSpec;
}

/**
 * Where a horizontal rule's label goes so that it does not sit on a line: at the right or left
 * end of the rule, above or below it, the first of those four whose box (in data terms: the
 * label's share of the width from that edge, about a tenth of the height beside the rule) holds
 * no point of any series; with none free, the one holding fewest.
 */
export function ruleLabelPlace(rows: { x: number; y: number; series: string; style?: string }[], rule: { y: number; label: string }, o: Pick<LineOptions, 'xLog' | 'yLog'>): { side: 'left' | 'right'; above: boolean } {
  const fx = (v: number): number => (o.xLog ? Math.log2(v) : v), fy = (v: number): number => (o.yLog ? Math.log10(v) : v);
  const xs = rows.map((r) => fx(r.x)), ys = rows.map((r) => fy(r.y)).concat(fy(rule.y));
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const wx = (x1 - x0) || 1, wy = (y1 - y0) || 1;
  // Every line sampled along its segments (straight in the scales' space), as shares of the plot.
  const pts: [number, number][] = [];
  const lines = new Map<string, { x: number; y: number }[]>();
  for (const r of rows) {
    const k = `${r.series}\u0000${r.style ?? ''}`;
    if (!lines.has(k)) lines.set(k, []);
    lines.get(k)!.push({ x: (fx(r.x) - x0) / wx, y: (fy(r.y) - y0) / wy });
  }
  for (const l of lines.values()) {
    l.sort((a, b) => a.x - b.x);
    l.forEach((p, i) => {
      pts.push([p.x, p.y]);
      const q = l[i + 1];
      if (q) for (let t = 1; t < 32; t++) pts.push([p.x + ((q.x - p.x) * t) / 32, p.y + ((q.y - p.y) * t) / 32]);
    });
  }
  // ~6.5 px per character at 11 px, plus the 4 px inset; the text is ~14 px tall of HEIGHT.
  const share = Math.min(1, (rule.label.length * 6.5 + 12) / WIDTH), tall = 18 / HEIGHT;
  const ry = (fy(rule.y) - y0) / wy;
  let best = { side: 'right' as 'left' | 'right', above: true }, fewest = Infinity;
  for (const [side, above] of [['right', true], ['left', true], ['right', false], ['left', false]] as const) {
    const n = pts.filter(([px, py]) => {
      const inX = side === 'right' ? px >= 1 - share : px <= share;
      const inY = above ? py >= ry - 0.01 && py <= ry + tall : py <= ry + 0.01 && py >= ry - tall;
      return inX && inY;
    }).length;
    if (n < fewest) { fewest = n; best = { side, above }; }
    if (n === 0) break;
  }
  return best;
}

/** A heatmap: rows {x, y, value} on a log colour scale, with the value printed in each cell when cells are few. */
export function heatmapChart(title: string, rows: { x: number; y: number; value: number }[], o: { xTitle: string; yTitle: string; valueTitle: string }): TopLevelSpec {
  const xs = new Set(rows.map((r) => r.x)).size, ys = new Set(rows.map((r) => r.y)).size;
  const cell = Math.max(8, Math.min(40, Math.floor(WIDTH / Math.max(1, xs))));
  const layers: object[] = [{
    mark: { type: 'rect' },
    encoding: { color: { field: 'value', type: 'quantitative', title: o.valueTitle, scale: { type: 'log', scheme: 'viridis' }, legend: { format: '.3~s' } } },
  }];
  if (xs * ys <= 400 && cell >= 30) {
    layers.push({ mark: { type: 'text', fontSize: 9, color: 'white' }, encoding: { text: { field: 'value', type: 'quantitative', format: '.3~s' } } });
  }
  return {
    ...base(title, rows, cell * xs, Math.max(16, Math.min(28, Math.floor(320 / Math.max(1, ys)))) * ys),
    encoding: {
      x: { field: 'x', type: 'ordinal', title: o.xTitle },
      y: { field: 'y', type: 'ordinal', title: o.yTitle },
    },
    layer: layers,
  } as TopLevelSpec;
}

/** Points with labels: rows {label, value, chosen}; the chosen one is highlighted. */
export function pointsChart(title: string, rows: { label: string; value: number; chosen: boolean }[], valueTitle: string): TopLevelSpec {
  return {
    ...base(title, rows, Math.max(200, 48 * rows.length)),
    encoding: {
      x: { field: 'label', type: 'nominal', sort: null, title: null, axis: { labelAngle: -30 } },
      y: { field: 'value', type: 'quantitative', title: valueTitle, scale: { zero: false } },
    },
    layer: [
      { mark: { type: 'point', filled: true, size: 70 }, encoding: { color: { field: 'chosen', type: 'nominal', title: 'chosen', scale: { domain: [true, false], range: ['#e45756', '#4c78a8'] } } } },
      { mark: { type: 'text', dy: -10, fontSize: 10 }, encoding: { text: { field: 'value', type: 'quantitative', format: '.4~r' } } },
    ],
  } as TopLevelSpec;
}

/**
 * Which RoPE pairs each (layer, KV head) keeps: one row per head, one cell per pair. With scores
 * (rows' `score` in [0, 1]) the cells are shaded by score and the kept ones dotted; without, the
 * kept cells are filled.
 */
export function pairMapChart(title: string, rows: { x: number; y: string; kept: boolean; score: number | null }[], o: { xTitle: string; scoreTitle: string }): TopLevelSpec {
  const xs = new Set(rows.map((r) => r.x)).size, ys = new Set(rows.map((r) => r.y)).size;
  const cell = Math.max(6, Math.min(28, Math.floor(WIDTH / Math.max(1, xs))));
  const rowH = Math.max(5, Math.min(22, Math.floor(480 / Math.max(1, ys))));
  const step = Math.max(1, Math.ceil(xs / 16));
  const scored = rows.every((r) => r.score !== null);
  const values = rows.map((r) => ({ ...r, status: r.kept ? 'kept (RoPE)' : 'NoPE (latent)' }));
  const layers: object[] = [{
    mark: { type: 'rect', stroke: 'white', strokeWidth: cell >= 10 ? 0.5 : 0 },
    encoding: {
      color: scored
        ? { field: 'score', type: 'quantitative', title: o.scoreTitle, scale: { scheme: 'blues', domain: [0, 1] } }
        : { field: 'status', type: 'nominal', title: null, scale: { domain: ['kept (RoPE)', 'NoPE (latent)'], range: ['#e45756', '#e6e6e6'] } },
    },
  }];
  if (scored) {
    layers.push({
      transform: [{ filter: 'datum.kept' }],
      mark: { type: 'point', shape: 'circle', filled: true, color: '#e45756', opacity: 1, size: Math.max(6, Math.min(60, cell * rowH * 0.35)) },
    });
  }
  return {
    ...base(title, values, cell * xs, rowH * ys),
    encoding: {
      x: { field: 'x', type: 'ordinal', title: o.xTitle, axis: { labelAngle: 0, values: Array.from({ length: Math.ceil(xs / step) }, (_, i) => i * step) } },
      y: { field: 'y', type: 'ordinal', sort: null, title: null, axis: { labelOverlap: true } },
    },
    layer: layers,
  } as TopLevelSpec;
}

/** Vertical bars over an integer x: rows {x, y}. */
export function columnsChart(title: string, rows: { x: number; y: number }[], o: { xTitle: string; yTitle: string }): TopLevelSpec {
  const xs = new Set(rows.map((r) => r.x)).size;
  const step = Math.max(1, Math.ceil(xs / 16));
  return {
    ...base(title, rows, Math.max(200, Math.min(WIDTH, 14 * xs)), 180),
    mark: { type: 'bar', color: '#4c78a8' },
    encoding: {
      x: { field: 'x', type: 'ordinal', title: o.xTitle, axis: { labelAngle: 0, values: Array.from({ length: Math.ceil(xs / step) }, (_, i) => i * step) } },
      y: { field: 'y', type: 'quantitative', title: o.yTitle, axis: { tickMinStep: 1 } },
    },
  } as TopLevelSpec;
}

/**
 * One small panel per series ("layer 1", "layer 2", …): the series' line in its panel over a grey
 * band spanning all series, so each stays readable when the lines lie on top of each other, and
 * each can still be compared with the rest. Rows {x, y, series}; panels in the series' order.
 */
export function smallMultiplesChart(title: string, rows: { x: number; y: number; series: string }[], o: Pick<LineOptions, 'xTitle' | 'yTitle' | 'yLog' | 'yDomain' | 'rules'>): TopLevelSpec {
  const panels = [...new Set(rows.map((r) => r.series))];
  const n = panels.length;
  const columns = n <= 3 ? n : n === 4 ? 2 : n <= 9 ? 3 : 4;
  const width = columns === 1 ? WIDTH : columns === 2 ? 300 : columns === 3 ? 250 : 200;
  const byX = new Map<number, number[]>();
  for (const r of rows) {
    if (!byX.has(r.x)) byX.set(r.x, []);
    byX.get(r.x)!.push(r.y);
  }
  const band = [...byX].map(([x, ys]) => ({ x, lo: Math.min(...ys), hi: Math.max(...ys) }));
  const values: Row[] = [
    ...rows.map((r) => ({ kind: 'line', panel: r.series, x: r.x, y: r.y })),
    ...panels.flatMap((p) => band.map((b) => ({ kind: 'band', panel: p, x: b.x, lo: b.lo, hi: b.hi }))),
  ];
  const x = { field: 'x', type: 'quantitative', title: o.xTitle, scale: { zero: false } };
  const yScale = { ...(o.yLog ? { type: 'log' } : { zero: false }), ...(o.yDomain ? { domain: o.yDomain } : {}) };
  // Log axes over many decades read best in one notation (vega mixes 0.00001 and 1e-7).
  const tiny = o.yLog && Math.min(...rows.map((r) => r.y)) < 1e-3;
  // The y title would repeat on every row of panels (and not fit their height): it goes under the chart title.
  const y = { field: 'lo', type: 'quantitative', title: null, scale: yScale, ...(tiny ? { axis: { format: '.0e' } } : {}) };
  const height = 130;
  const layer: object[] = [
    { transform: [{ filter: "datum.kind === 'band'" }], mark: { type: 'area', color: '#d9d9d9', opacity: 0.7 }, encoding: { x, y, y2: { field: 'hi' } } },
    { transform: [{ filter: "datum.kind === 'line'" }], mark: { type: 'line', color: '#1f5f9e', strokeWidth: 1.8 }, encoding: { x, y: { field: 'y', type: 'quantitative' } } },
  ];
  for (const r of o.rules ?? []) {
    layer.push({ data: { values: [r] }, mark: { type: 'rule', color: '#555', strokeDash: [4, 3] }, encoding: { x: { field: 'x', type: 'quantitative' } } });
    // At the foot of the rule: spectra and cumulative curves both leave that corner free.
    layer.push({ data: { values: [r] }, mark: { type: 'text', align: 'left', baseline: 'bottom', dx: 4, dy: -3, fontSize: 10, color: '#333' }, encoding: { x: { field: 'x', type: 'quantitative' }, y: { value: height }, text: { field: 'label' } } });
  }
  return {
    title: { text: title, subtitle: `y: ${o.yTitle}${o.yLog ? ' (log scale)' : ''}`, subtitleColor: '#555', subtitlePadding: 4 }, data: { values },
    facet: { field: 'panel', type: 'nominal', sort: panels, title: null, header: { labelFontSize: 12, labelFontWeight: 600, labelColor: '#222', labelPadding: 4 } },
    columns,
    spec: { width, height, layer },
  } as unknown as TopLevelSpec;
}

/**
 * Perplexity through the conversion stages of each evaluation text, as a ratio to the original
 * (1 = no loss): a zero-free axis on which a few percent of difference is visible, with every
 * point labelled by its perplexity and its change. Rows {text, stage, ppl}; stages in order, the
 * first one the original.
 */
export function stagesChart(title: string, rows: { text: string; stage: string; ppl: number }[]): TopLevelSpec {
  const stages = [...new Set(rows.map((r) => r.stage))];
  const base0 = new Map(rows.filter((r) => r.stage === stages[0]).map((r) => [r.text, r.ppl]));
  const values = rows.map((r) => {
    const ratio = r.ppl / base0.get(r.text)!;
    const change = 100 * (ratio - 1);
    const ppl = r.ppl.toFixed(r.ppl >= 100 ? 1 : 2);
    return { ...r, ratio, label: r.stage === stages[0] ? ppl : `${ppl} (${change >= 0 ? '+' : '−'}${Math.abs(change).toFixed(1)} %)` };
  });
  const ratios = values.map((v) => v.ratio);
  const log = Math.max(...ratios) / Math.min(...ratios) > 20;
  return {
    ...base(title, values, Math.max(360, 170 * stages.length), 240),
    encoding: {
      x: { field: 'stage', type: 'ordinal', sort: stages, title: null, axis: { labelAngle: 0, labelFontSize: 12 }, scale: { padding: 0.6 } },
      y: { field: 'ratio', type: 'quantitative', title: `perplexity ÷ the original's${log ? ' (log scale)' : ''}`, scale: log ? { type: 'log' } : { zero: false }, axis: { format: '.3~f' } },
      color: { field: 'text', type: 'nominal', sort: null, title: 'evaluation text', legend: { orient: 'bottom', direction: 'vertical' } },
    },
    layer: [
      { mark: { type: 'line', strokeWidth: 2, point: { filled: true, size: 70 } } },
      { mark: { type: 'text', align: 'left', dx: 9, dy: -9, fontSize: 11 }, encoding: { text: { field: 'label' } } },
    ],
  } as TopLevelSpec;
}
