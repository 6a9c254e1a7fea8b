// The progress lines of long stages (io/progress.ts): silent before the delay, one line per
// interval on a pipe, one redrawn bar on a TTY, and no repeated final line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createProgress } from '../src/io/progress.js';

function sink(tty: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  let out = '';
  const stream = { isTTY: tty, write: (s: string) => { out += s; return true; } } as unknown as NodeJS.WriteStream;
  return { stream, text: () => out };
}

test('a pipe gets plain lines with counts, and the final count once', () => {
  const s = sink(false);
  const p = createProgress({ label: 'pass 1', total: 2, unit: 'layers', stream: s.stream, delayMs: 0, lineEveryMs: 0 });
  p.update(1);
  p.update(2);
  p.finish();
  const lines = s.text().trim().split('\n');
  assert.equal(lines.length, 2, s.text());
  assert.match(lines[0]!, /^pass 1: 1\/2 layers 50%/);
  assert.match(lines[1]!, /^pass 1: 2\/2 layers 100%/);
});

test('finish prints the final count when the last update was not shown', () => {
  const s = sink(false);
  const p = createProgress({ label: 'x', total: 3, stream: s.stream, delayMs: 0, lineEveryMs: 60_000 });
  p.update(1);
  p.update(3);
  p.finish();
  const lines = s.text().trim().split('\n');
  assert.deepEqual(lines.map((l) => /(\d+)\/3/.exec(l)![1]), ['1', '3']);
});

test('a TTY gets one bar redrawn in place, ended by a newline; quick runs print nothing', () => {
  const s = sink(true);
  const p = createProgress({ label: 'bar', total: 4, stream: s.stream, delayMs: 0 });
  p.update(4);
  p.finish();
  assert.ok(s.text().startsWith('\rbar ['), s.text());
  assert.ok(s.text().endsWith('\n'));
  const quiet = sink(false);
  const q = createProgress({ label: 'q', total: 1, stream: quiet.stream });
  q.update(1);
  q.finish();
  assert.equal(quiet.text(), '');
});
