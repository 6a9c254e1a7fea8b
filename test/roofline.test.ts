// The memory roofline of `transmla bench` (src/bench/roofline.ts, formatBenchReport): each context
// is set against the bandwidth read right next to its fastest timed repetition, the roofline comes
// with the range over every reading of the run, and no share above 100 % is printed without its
// reason. Synthetic timings and readings, so every branch is reached on any machine.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lastLevelCacheBytes } from '../src/bench/bandwidth.js';
import { formatBenchReport, type BenchReport, type BenchRun } from '../src/bench/bench.js';
import type { DecodeAtContext } from '../src/bench/bench-decode.js';
import { rooflineOf, type ProbeAtBoundary } from '../src/bench/roofline.js';

const MiB = 2 ** 20;

function at(context: number, msPerToken: number, bytesPerStep: number): DecodeAtContext {
  return { context, beyondTrainedWindow: false, tokensPerSecond: 1000 / msPerToken, msPerToken, cacheBytes: 0, bytesPerStep, rssBytes: 1 };
}

/** Readings at the boundaries of `repMs.length` repetitions of one context, `gbs[k]` before repetition k. */
function probes(context: number, repMs: number[], gbs: number[], t0: number): ProbeAtBoundary[] {
  assert.equal(gbs.length, repMs.length + 1);
  return gbs.map((g, k) => ({
    at: t0 + 10 * k, bytesPerSecond: g * 1e9, singleThreadBytesPerSecond: g * 1e9, parallelBytesPerSecond: g * 0.9e9,
    context, beforeRep: k, previousMs: k === 0 ? null : repMs[k - 1]!,
  }));
}

describe('memory roofline', () => {
  it('uses the better of the two readings next to the fastest repetition, with the range over the run', () => {
    // Context 64: repetition 1 is the fastest (8 ms); the readings around it are 6 and 9 GB/s.
    // Context 256: no readings at all (an older child): the up-front figure, 20 GB/s.
    const bytes = 100 * MiB;
    const c64 = at(64, 20, bytes), c256 = at(256, 30, bytes);
    const ps = probes(64, [10, 8, 12], [4, 6, 9, 5], 1000);
    const [a, b] = rooflineOf([c64, c256], ps, 20e9, 32 * MiB);
    assert.equal(a!.bandwidthSource, 'adjacent probes');
    assert.equal(a!.adjacent!.before.at, 1010);
    assert.equal(a!.adjacent!.after.at, 1020);
    assert.equal(a!.bandwidthBytesPerSecond, 9e9);
    assert.ok(Math.abs(a!.minMsPerToken - (bytes / 9e9) * 1000) < 1e-12);
    assert.ok(Math.abs(a!.fractionOfRoofline - a!.minMsPerToken / c64.msPerToken) < 1e-12);
    // Range: slowest reading (4 GB/s) to the up-front figure (20 GB/s).
    assert.deepEqual(a!.bandwidthRange, [4e9, 20e9]);
    assert.ok(Math.abs(a!.minMsPerTokenRange[0] - (bytes / 20e9) * 1000) < 1e-12 && Math.abs(a!.minMsPerTokenRange[1] - (bytes / 4e9) * 1000) < 1e-12);
    assert.equal(a!.aboveRoofline, null);
    assert.equal(a!.aboveRooflineKind, null);
    assert.equal(b!.bandwidthSource, 'up-front measurement');
    assert.equal(b!.adjacent, null);
    assert.equal(b!.bandwidthBytesPerSecond, 20e9);
  });

  it('a step faster than its roofline always carries the reason', () => {
    // Cache-resident: 8 MiB a step, 32 MiB last-level cache.
    const small = rooflineOf([at(16, 0.1, 8 * MiB)], probes(16, [0.4], [10, 10], 0), 10e9, 32 * MiB)[0]!;
    assert.ok(small.fractionOfRoofline > 1);
    assert.equal(small.aboveRooflineKind, 'cache-resident');
    assert.match(small.aboveRoofline ?? '', /^above the measured bandwidth: cache-resident weights \(a step reads 8\.0 MiB; the last-level cache holds 32 MiB\)/);
    // Disturbed: 100 MiB in 10 ms = 10.5 GB/s, readings next to it 8 GB/s, the best of the run 17 GB/s.
    const busy = rooflineOf([at(16, 10, 100 * MiB)], probes(16, [10, 11], [7, 8, 17], 0), 12e9, 32 * MiB)[0]!;
    assert.ok(busy.fractionOfRoofline > 1);
    assert.equal(busy.aboveRooflineKind, 'disturbed probe');
    assert.match(busy.aboveRoofline ?? '', /^bandwidth probe disturbed by load: the probes next to this timing read 8\.0 GB\/s, the best of the run 17\.0 GB\/s, against which this step is at 62 % of the roofline/);
    // Faster than any reading, too big for the cache.
    const fast = rooflineOf([at(16, 1, 100 * MiB)], probes(16, [1], [8, 8], 0), 9e9, null)[0]!;
    assert.equal(fast.aboveRooflineKind, 'faster than every probe');
    assert.match(fast.aboveRoofline ?? '', /^faster than every bandwidth probe of the run \(best 9\.0 GB\/s\)/);
  });

  it('the bench table prints no share above 100 % without its reason, and the roofline as a range', () => {
    const bytes = 100 * MiB;
    const contexts = [at(128, 10, bytes), at(512, 12, bytes)];
    const ps = [...probes(128, [40, 40], [7, 8, 8], 0), ...probes(512, [48, 48], [16, 17, 17], 100)];
    const run = {
      engine: 'transmla', model: '/m', attention: 'MLA', weightDtype: 'bf16', params: 2e7, vocab: 32000, trainedContext: 1024,
      cacheElementsPerToken: 384, cacheBytesPerToken: 1536, cacheBytesPerTokenAtModelDtype: 768, cacheDtype: 'f32', weightBytesPerStep: bytes,
      decodeTokens: 4, reps: 2, threads: 2, prefillSeconds: 0.1, contexts, peakRssBytes: 200 * MiB,
      role: 'model', roofline: rooflineOf(contexts, ps, 17.5e9, 32 * MiB), bandwidthProbes: ps,
    } satisfies BenchRun;
    const report: BenchReport = {
      tool: 'transmla bench', created: '2026-01-01T00:00:00.000Z',
      machine: { cpuModel: 'x', cpus: 2, totalMemoryBytes: 1, kernels: 'native', node: 'v20', loadAverageBefore: 3, loadAverageAfter: 3, lastLevelCacheBytes: 32 * MiB },
      bandwidth: { bytesPerSecond: 17.5e9, singleThreadBytesPerSecond: 12e9, parallelBytesPerSecond: 17.5e9, threads: 2, bufferBytes: 512 * MiB, reps: 5, method: 'm' },
      bandwidthProbes: { count: ps.length, minBytesPerSecond: 7e9, maxBytesPerSecond: 17e9 },
      model: '/m', compare: null, compareSource: 'none', contexts: [128, 512], runs: [run], ratios: [], llamaCppSkipped: [], notes: [],
    };
    const text = formatBenchReport(report);
    assert.match(text, /memory bandwidth 17\.5 GB\/s before the runs \(m\); 7\.0–17\.0 GB\/s over 6 readings between timed repetitions/);
    // 100 MiB in 10 ms is 10.5 GB/s: 131 % of the 8 GB/s read next to it, a disturbed reading.
    const rows = text.split('\n').filter((l) => /^\s+\d+\s+\d/.test(l));
    assert.equal(rows.length, 2);
    assert.match(rows[0]!, /^\s+128\s.*\s8\.0\s+13\.107 \(5\.992–14\.980\)\s+131 %\*$/);
    assert.match(rows[1]!, /^\s+512\s.*\s17\.0\s+6\.168 \(5\.992–14\.980\)\s+51 %$/);
    for (const m of text.matchAll(/(\d+) %(\*?)/g)) {
      if (Number(m[1]) <= 100) continue;
      assert.equal(m[2], '*', `${m[0]} without its footnote`);
    }
    assert.match(text, /\n {2}\* 128: bandwidth probe disturbed by load: the probes next to this timing read 8\.0 GB\/s, the best of the run 17\.5 GB\/s/);
  });

  it('the last-level cache size comes from sysfs (largest level, data or unified), or null', () => {
    const dir = mkdtempSync(join(tmpdir(), 'transmla-llc-'));
    try {
      const entry = (name: string, level: string, type: string, size: string): void => {
        mkdirSync(join(dir, name));
        writeFileSync(join(dir, name, 'level'), `${level}\n`);
        writeFileSync(join(dir, name, 'type'), `${type}\n`);
        writeFileSync(join(dir, name, 'size'), `${size}\n`);
      };
      entry('index0', '1', 'Data', '32K');
      entry('index1', '1', 'Instruction', '32K');
      entry('index2', '2', 'Unified', '1024K');
      assert.equal(lastLevelCacheBytes(dir), 1024 * 1024);
      entry('index3', '3', 'Unified', '32768K');
      mkdirSync(join(dir, 'index4'));
      assert.equal(lastLevelCacheBytes(dir), 32 * MiB);
      assert.equal(lastLevelCacheBytes(join(dir, 'absent')), null);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
