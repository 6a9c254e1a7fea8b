// A loss curve as text, for the terminal and the report: one column per bucket of steps
// (the bucket's mean), rows spanning [min, max] of those means, labelled on the left.
export function lossCurve(values: readonly number[], opts: { width?: number; height?: number; label?: string } = {}): string {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return '(no steps)';
  const width = Math.min(opts.width ?? 60, values.length);
  const height = opts.height ?? 10;
  const cols: number[] = [];
  for (let c = 0; c < width; c++) {
    const a = Math.floor((c * values.length) / width), b = Math.floor(((c + 1) * values.length) / width);
    let s = 0, n = 0;
    for (let i = a; i < b; i++) if (Number.isFinite(values[i]!)) { s += values[i]!; n++; }
    cols.push(n > 0 ? s / n : NaN);
  }
  const lo = Math.min(...cols.filter(Number.isFinite)), hi = Math.max(...cols.filter(Number.isFinite));
  const span = hi - lo || 1;
  const rowOf = (v: number): number => Math.round(((hi - v) / span) * (height - 1));
  const grid = Array.from({ length: height }, () => Array<string>(width).fill(' '));
  cols.forEach((v, c) => { if (Number.isFinite(v)) grid[rowOf(v)]![c] = '*'; });
  const labelW = Math.max(hi.toFixed(3).length, lo.toFixed(3).length);
  const lines = grid.map((r, i) => {
    const tag = i === 0 ? hi.toFixed(3) : i === height - 1 ? lo.toFixed(3) : '';
    return `${tag.padStart(labelW)} |${r.join('')}`;
  });
  lines.push(`${' '.repeat(labelW)} +${'-'.repeat(width)}`);
  lines.push(`${' '.repeat(labelW)}  step 1${' '.repeat(Math.max(1, width - 7 - String(values.length).length))}${values.length}`);
  if (opts.label) lines.unshift(opts.label);
  return lines.join('\n');
}
