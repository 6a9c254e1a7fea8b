// Chart helpers without a browser (report-browser.test.ts measures the rendered pages): where a
// rule's label goes, the terminal table, the stage chart's scale, and the speed section of a
// bench.json written before bandwidth was read between timed repetitions.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ruleLabelPlace, smallMultiplesChart, stagesChart } from '../src/report/charts.js';
import { benchSection } from '../src/report/sections.js';
import { textTable } from '../src/report/text-table.js';
import type { BenchReport } from '../src/bench/bench.js';

describe('chart helpers', () => {
  it('a rule label goes where no line runs: right end unless a line ends on the rule there', () => {
    const falling = [{ x: 0.25, y: 13, series: 'a' }, { x: 0.5, y: 10.6, series: 'a' }, { x: 1, y: 10, series: 'a' }];
    assert.deepEqual(ruleLabelPlace(falling, { y: 10, label: 'original 10.00' }, {}), { side: 'left', above: true });
    const high = [{ x: 0.25, y: 13, series: 'a' }, { x: 1, y: 12, series: 'a' }];
    assert.deepEqual(ruleLabelPlace(high, { y: 10, label: 'original 10.00' }, {}), { side: 'right', above: true });
    // Lines just above the rule at both ends: the label goes under the rule.
    const dip = [{ x: 0, y: 20, series: 'a' }, { x: 0.95, y: 10.2, series: 'a' }, { x: 1, y: 20, series: 'a' }, { x: 0, y: 10.3, series: 'b' }, { x: 0.2, y: 20, series: 'b' }];
    assert.deepEqual(ruleLabelPlace(dip, { y: 10, label: 'original' }, {}), { side: 'right', above: false });
  });

  it('the stage chart plots the ratio to the original on a zero-free scale', () => {
    const spec = stagesChart('t', [
      { text: 'a.txt', stage: 'original', ppl: 103.9 }, { text: 'a.txt', stage: 'partial RoPE', ppl: 108.4 }, { text: 'a.txt', stage: 'MLA', ppl: 108.5 },
    ]) as unknown as { data: { values: { ratio: number; label: string }[] }; encoding: { y: { field: string; scale: { zero?: boolean } } } };
    assert.equal(spec.encoding.y.field, 'ratio');
    assert.equal(spec.encoding.y.scale.zero, false);
    assert.deepEqual(spec.data.values.map((v) => v.label), ['103.9', '108.4 (+4.3 %)', '108.5 (+4.4 %)']);
    assert.equal(spec.data.values[0]!.ratio, 1);
  });

  it('small multiples: one panel per series in order, over the min–max band of all of them', () => {
    const rows = [1, 2, 3].flatMap((l) => [1, 2].map((x) => ({ x, y: l * x, series: `layer ${l}` })));
    const spec = smallMultiplesChart('t', rows, { xTitle: 'x', yTitle: 'y' }) as unknown as { columns: number; facet: { sort: string[] }; data: { values: { kind: string; panel: string; x: number; lo?: number; hi?: number }[] } };
    assert.deepEqual(spec.facet.sort, ['layer 1', 'layer 2', 'layer 3']);
    assert.equal(spec.columns, 3);
    const band = spec.data.values.filter((v) => v.kind === 'band' && v.panel === 'layer 2');
    assert.deepEqual(band.map((b) => [b.x, b.lo, b.hi]), [[1, 1, 3], [2, 2, 6]]);
  });

  it('textTable pads columns and right-aligns the numeric ones', () => {
    assert.equal(textTable(['name', 'n'], [['a', 1], ['bbb', 22.5]]), 'name     n\na        1\nbbb   22.5');
  });

  it('a bench.json from before the readings between repetitions still renders, and a share above 100 % says why', async () => {
    const old = {
      tool: 'transmla bench', created: '2026-01-01', machine: { cpuModel: 'x', cpus: 2, totalMemoryBytes: 1, kernels: 'ts', node: 'v20', loadAverageBefore: 0, loadAverageAfter: 0 },
      bandwidth: { bytesPerSecond: 8e9, singleThreadBytesPerSecond: 8e9, parallelBytesPerSecond: 8e9, threads: 2, bufferBytes: 1, reps: 5, method: 'm' },
      model: '/m', compare: null, compareSource: 'none', contexts: [16], ratios: [], llamaCppSkipped: [], notes: ['n'],
      runs: [{
        engine: 'transmla', model: '/m', attention: 'MLA', role: 'model', peakRssBytes: 1,
        contexts: [{ context: 16, beyondTrainedWindow: false, tokensPerSecond: 100, msPerToken: 10, cacheBytes: 1, bytesPerStep: 1 }],
        roofline: [{ context: 16, minMsPerToken: 10.7, fractionOfRoofline: 1.07, achievedBytesPerSecond: 1 }],
      }],
    } as unknown as BenchReport;
    const s = await benchSection(old);
    assert.match(s.html!, /107 %\*/);
    assert.match(s.html!, /predates the readings between timed repetitions/);
    assert.equal(s.charts!.length, 3);
  });
});
