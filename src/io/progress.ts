// Progress for long jobs, on stderr. Silent for the first ~1.5 s, so quick runs print nothing.
// On a TTY: one bar redrawn in place with rate and ETA; otherwise: a plain line every ~10 s
// (logs and CI stay readable).

export interface Progress {
  /** Sets the amount done so far (in `unit`s), and optionally the total (when known only later). */
  update(done: number, total?: number): void;
  /** Finishes the bar (prints a final line only if something was shown). */
  finish(): void;
}

export interface ProgressOptions {
  label: string;
  total: number;
  /** What is counted; 'bytes' prints sizes and rates in kB/MB/GB. */
  unit?: string;
  /** Already done when the bar starts (a resumed download): shown, but not counted in the rate. */
  start?: number;
  stream?: NodeJS.WriteStream;
  /** Nothing is shown before this many ms (default 1500). */
  delayMs?: number;
  /** Between plain lines when not a TTY (default 10 000). */
  lineEveryMs?: number;
}

export function createProgress(opts: ProgressOptions): Progress {
  const stream = opts.stream ?? process.stderr;
  const tty = stream.isTTY === true;
  const unit = opts.unit ?? 'tokens';
  const delay = opts.delayMs ?? 1500;
  const every = tty ? 100 : opts.lineEveryMs ?? 10_000;
  const t0 = performance.now();
  const start = opts.start ?? 0;
  let shown = false, lastDraw = -Infinity, done = start, total = opts.total, drawnDone = -1;

  const line = (now: number): string => {
    const s = (now - t0) / 1000;
    const rate = (done - start) / Math.max(s, 1e-9);
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const eta = rate > 0 && done < total ? ` ETA ${fmtSecs((total - done) / rate)}` : '';
    const counts = unit === 'bytes'
      ? `${fmtBytes(done)}/${fmtBytes(total)} ${(100 * frac).toFixed(0)}% ${fmtBytes(rate)}/s`
      : `${done}/${total} ${unit} ${(100 * frac).toFixed(0)}% ${fmtRate(rate)} ${unit}/s`;
    if (!tty) return `${opts.label}: ${counts}, ${fmtSecs(s)}${eta}`;
    const width = 24, fill = Math.round(frac * width);
    return `${opts.label} [${'#'.repeat(fill)}${'-'.repeat(width - fill)}] ${counts}${eta}`;
  };

  const draw = (now: number): void => {
    shown = true;
    lastDraw = now;
    drawnDone = done;
    if (tty) stream.write(`\r${line(now)}\x1b[K`);
    else stream.write(`${line(now)}\n`);
  };

  return {
    update(n: number, t?: number): void {
      done = n;
      if (t !== undefined) total = t;
      const now = performance.now();
      if (now - t0 >= delay && now - lastDraw >= every) draw(now);
    },
    finish(): void {
      if (!shown) return;
      // A plain-line log already showing the final count gets no repeat of it.
      if (tty || drawnDone !== done) draw(performance.now());
      if (tty) stream.write('\n');
    },
  };
}

function fmtRate(r: number): string {
  return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2);
}

/** Decimal units, as download tools and the Hub print sizes. */
export function fmtBytes(n: number): string {
  if (n < 1e3) return `${n.toFixed(0)} B`;
  const [div, u] = n < 1e6 ? [1e3, 'kB'] : n < 1e9 ? [1e6, 'MB'] : [1e9, 'GB'];
  const x = n / div;
  return `${x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)} ${u}`;
}

function fmtSecs(s: number): string {
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${Math.round(s % 60)}s` : `${Math.floor(m / 60)}h${m % 60}m`;
}
