// `transmla sweep` as a user runs it (a child process, real stdout and stderr): progress on
// stderr only, the result on stdout only — a summary table, or with --json the sweep.json record.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SweepReport } from '../src/convert/sweep.js';
import { formatSweepSummary } from '../src/report/sweep-report.js';
import { REPO_ROOT, assetPath } from './helpers/assets.js';
import { FIXTURE_MODEL, tinyConvertOptions } from './helpers/report-fixture.js';

const skip = assetPath(FIXTURE_MODEL) && assetPath('text/tinystories/tinystories_val_sample.txt') ? false : `asset ${FIXTURE_MODEL} or the TinyStories texts missing`;

function sweep(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const t = tinyConvertOptions();
  const argv = ['--import', 'tsx', join(REPO_ROOT, 'src/cli/main.ts'), 'sweep', assetPath(FIXTURE_MODEL)!,
    '--calib', t.calib, '--calib-samples', '8', '--calib-seqlen', '64', '--freqfold', '2', '--eval-text', t.evalText, '--eval-ctx', '128', '--eval-chunks', '1', ...args];
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, argv, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.on('error', rej);
    child.on('close', (code) => res({ code, stdout, stderr }));
  });
}

describe('transmla sweep on the command line', { skip }, () => {
  const dir = skip ? '' : mkdtempSync(join(tmpdir(), 'transmla-sweep-cli-'));
  after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

  it('prints progress on stderr and the summary table on stdout', async () => {
    const out = join(dir, 'table');
    const r = await sweep(['--kv-fractions', '0.5,0.25', '--methods', 'transmla,mha2mla', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const saved = JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8')) as SweepReport;
    // stdout is exactly the summary of what was saved; none of it on stderr, no progress on stdout.
    assert.equal(r.stdout, `${formatSweepSummary(saved)}\n`);
    assert.doesNotMatch(r.stdout, /sweep: |pass \d|layer \d/);
    assert.match(r.stderr, /sweep: transmla at KV fraction 0\.5\n/);
    assert.match(r.stderr, /sweep: wrote .*sweep\.json and .*sweep\.html/);
    assert.doesNotMatch(r.stderr, /ppl partial RoPE/);
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^sweep of TinyStories-656K: 4 points \(transmla, mha2mla at KV fractions 0\.5, 0\.25\) on tinystories_val_sample\.txt, 1 chunks × 128 tokens$/);
    assert.match(lines[1]!, /^method\s+KV fraction\s+bytes\/token\s+ppl original\s+ppl partial RoPE\s+ppl MLA\s+KL MLA\s+top-1 MLA\s+convert s\s+total s$/);
    const rows = lines.slice(2, 6);
    assert.deepEqual(rows.map((l) => l.split(/\s{2,}/).slice(0, 2)), [['transmla', '0.5000'], ['transmla', '0.2500'], ['mha2mla', '0.5000'], ['mha2mla', '0.2500']]);
    saved.points.forEach((p, i) => {
      const e = p.evaluations[0]!;
      const cells = rows[i]!.split(/\s{2,}/);
      assert.deepEqual(cells.slice(2), [
        `${p.bytesPerTokenBefore} → ${p.bytesPerTokenAfter}`, e.original.ppl.toFixed(3), e.partialRope.ppl.toFixed(3), e.mla.ppl.toFixed(3),
        e.mla.kl.toFixed(4), `${(100 * e.mla.top1).toFixed(2)} %`, p.convertSeconds.toFixed(1), p.seconds.toFixed(1),
      ]);
      assert.ok(p.seconds >= p.convertSeconds && p.seconds > 0);
    });
    assert.equal(lines[6], saved.convention);
    assert.equal(lines.length, 7);
  });

  it('--json writes the sweep.json record to stdout and nothing else', async () => {
    const out = join(dir, 'json');
    const r = await sweep(['--kv-fractions', '0.5', '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const printed = JSON.parse(r.stdout) as SweepReport;
    assert.deepEqual(printed, JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8')));
    assert.equal(printed.tool, 'transmla sweep');
    assert.deepEqual(printed.points.map((p) => [p.method, p.kvFraction]), [['transmla', 0.5]]);
    assert.match(r.stderr, /sweep: transmla at KV fraction 0\.5/);
  });
});
