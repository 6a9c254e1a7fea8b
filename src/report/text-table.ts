// A plain-text table for the terminal: columns padded to their widest cell, numeric columns
// (from `numericFrom` on) right-aligned, two spaces between columns.

export function textTable(headers: string[], rows: (string | number)[][], opts: { numericFrom?: number } = {}): string {
  const from = opts.numericFrom ?? 1;
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => [...(r[i] ?? '')].length)));
  const pad = (s: string, i: number): string => {
    const fill = ' '.repeat(widths[i]! - [...s].length);
    return i >= from ? fill + s : s + fill;
  };
  return cells.map((r) => headers.map((_, i) => pad(r[i] ?? '', i)).join('  ').trimEnd()).join('\n');
}
