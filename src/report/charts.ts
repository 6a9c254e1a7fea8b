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
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#eee' },
  legend: { labelFontSize: 11, titleFontSize: 12, orient: 'right' as const, labelLimit: 320 },
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
}

/** Lines: rows {x, y, series} coloured by series; with a `style` field, each style gets its own dash pattern. */
export function linesChart(title: string, rows: { x: number; y: number; series: string; style?: string }[], o: LineOptions): TopLevelSpec {
  const styles = [...new Set(rows.map((r) => r.style).filter((v): v is string => v !== undefined))];
  const layers: object[] = [{
    mark: { type: 'line', point: o.points ?? false, strokeWidth: 1.6 },
    encoding: {
      x: {
        field: 'x', type: 'quantitative', title: o.xTitle, scale: o.xLog ? { type: 'log', base: 2 } : { zero: false },
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
  for (const r of o.hRules ?? []) {
    layers.push({ data: { values: [r] }, mark: { type: 'rule', color: '#555', strokeDash: [4, 3] }, encoding: { y: { field: 'y', type: 'quantitative' } } });
    layers.push({ data: { values: [r] }, mark: { type: 'text', align: 'right', dy: -5, color: '#333' }, encoding: { y: { field: 'y', type: 'quantitative' }, x: { value: WIDTH - 4 }, text: { field: 'label' } } });
  }
  return { ...base(title, rows), layer: layers } as TopLevelSpec;
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
