// A self-contained HTML page: inline CSS and inline SVG charts, no scripts, no external URLs.
// The Content-Security-Policy forbids every fetch, so even a stray reference could not load.

export function esc(s: string | number): string {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export interface Section {
  title: string;
  /** Plain text shown under the title (escaped). */
  intro?: string;
  /** Inline SVG charts. */
  charts?: string[];
  /** Trusted HTML (tables built with table()). */
  html?: string;
}

export function table(headers: string[], rows: (string | number)[][], opts: { numericFrom?: number } = {}): string {
  const from = opts.numericFrom ?? 1;
  const cls = (i: number): string => (i >= from ? ' class="num"' : '');
  return `<table><thead><tr>${headers.map((h, i) => `<th${cls(i)}>${esc(h)}</th>`).join('')}</tr></thead><tbody>` +
    rows.map((r) => `<tr>${r.map((c, i) => `<td${cls(i)}>${esc(c)}</td>`).join('')}</tr>`).join('') +
    '</tbody></table>';
}

/** Key/value pairs as a definition grid. */
export function facts(pairs: [string, string | number][]): string {
  return `<dl class="facts">${pairs.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('')}</dl>`;
}

const CSS = `
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1d1d1f; background: #f5f5f7; }
header { background: #1d2b3a; color: #fff; padding: 20px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header p { margin: 0; color: #c9d3de; }
main { max-width: 1240px; margin: 0 auto; padding: 16px 24px 40px; }
section { background: #fff; border-radius: 8px; padding: 16px 20px; margin: 16px 0; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
section h2 { margin: 0 0 6px; font-size: 17px; font-weight: 600; }
section p.intro { margin: 0 0 12px; color: #555; max-width: 900px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.chart { overflow-x: auto; max-width: 100%; }
.chart svg { display: block; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e5e5e5; text-align: left; vertical-align: top; }
th { background: #fafafa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.facts dt { color: #666; }
dl.facts dd { margin: 0; word-break: break-all; }
footer { color: #888; font-size: 12px; text-align: center; margin-top: 24px; }
.empty { color: #888; font-style: italic; }
`;

export function page(o: { title: string; subtitle: string; sections: Section[]; footer: string }): string {
  const body = o.sections.map((s) => [
    `<section><h2>${esc(s.title)}</h2>`,
    s.intro ? `<p class="intro">${esc(s.intro)}</p>` : '',
    s.html ?? '',
    s.charts && s.charts.length > 0 ? `<div class="charts">${s.charts.map((c) => `<div class="chart">${c}</div>`).join('')}</div>` : '',
    '</section>',
  ].join('\n')).join('\n');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>${esc(o.title)}</title>
<style>${CSS}</style>
</head>
<body>
<header><h1>${esc(o.title)}</h1><p>${esc(o.subtitle)}</p></header>
<main>
${body}
<footer>${esc(o.footer)}</footer>
</main>
</body>
</html>
`;
}
