// Conversion reports, the decode benchmark and the sweep, end to end on the small TinyStories
// checkpoint: convert (writes report.html), bench against its source and llama.cpp (real runs,
// tiny contexts), rebuild the report with the speed charts, and a two-point sweep. The pages must
// be self-contained: inline SVG charts, no scripts, no external URL anywhere.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commands } from '../src/cli/commands.js';
import type { ConvertReport, Mha2mlaReport } from '../src/schema/transmla-json.js';
import { convertMha2mla } from '../src/convert/mha2mla.js';
import { runSweep, type SweepReport } from '../src/convert/sweep.js';
import type { BenchReport } from '../src/bench/bench.js';
import { measureBandwidth } from '../src/bench/bandwidth.js';
import { buildMha2mlaReportHtml } from '../src/report/mha2mla-report.js';
import { buildReportHtml } from '../src/report/report.js';
import { assetPath, mustAsset } from './helpers/assets.js';
import { buildMha2mlaFixture, buildReportFixture, FIXTURE_MODEL, tinyConvertOptions } from './helpers/report-fixture.js';

const skip = assetPath(FIXTURE_MODEL) && assetPath('text/tinystories/tinystories_val_sample.txt') ? false : `asset ${FIXTURE_MODEL} or the TinyStories texts missing`;

/** Every absolute URL in a page, once the SVG namespace declarations (identifiers, never fetched) are removed. */
function externalUrls(html: string): string[] {
  const stripped = html.replace(/xmlns(:\w+)?="http:\/\/www\.w3\.org\/[^"]*"/g, '');
  return stripped.match(/(https?:)?\/\/[a-z0-9.-]+\.[a-z]{2,}[^\s"'<>)]*/gi) ?? [];
}

function checkSelfContained(html: string): void {
  assert.deepEqual(externalUrls(html), []);
  assert.doesNotMatch(html, /<script|<link|<img|<iframe|@import|src=/i);
  assert.match(html, /Content-Security-Policy" content="default-src 'none'/);
}

describe('reports and benchmark', { skip }, () => {
  const dir = skip ? '' : mkdtempSync(join(tmpdir(), 'transmla-report-'));
  let folder: string;
  let html: string;
  before(async () => {
    const f = await buildReportFixture(dir, { llamaCpp: true });
    folder = f.folder;
    html = readFileSync(f.report, 'utf8');
  });
  after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

  it('convert records spectra and RoPE frequencies per layer', () => {
    const r = JSON.parse(readFileSync(join(folder, 'transmla.json'), 'utf8')) as ConvertReport;
    assert.equal(r.layers.length, 2);
    for (const l of r.layers) {
      assert.equal(l.ropeInvFreq.length, r.parameters.qkRopeHeadDim / 2);
      // 2·G·d − d_R components, descending shares summing to 1; the first r sum to the recorded energy.
      const sp = l.kvSpectrum, sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
      assert.equal(sp.length, 2 * r.source.kvHeads * r.source.headDim - r.parameters.qkRopeHeadDim);
      assert.ok(sp.every((x, j) => x >= 0 && (j === 0 || x <= sp[j - 1]! * (1 + 1e-3))));
      assert.ok(Math.abs(sum(sp) - 1) < 1e-3);
      assert.ok(Math.abs(sum(sp.slice(0, r.parameters.kvLoraRank)) - l.kvEnergy) < 1e-3);
    }
  });

  it('bench measures the MLA model, its source and llama.cpp, with roofline and ratios', () => {
    const b = JSON.parse(readFileSync(join(folder, 'bench.json'), 'utf8')) as BenchReport;
    assert.equal(b.compareSource, 'transmla.json source');
    assert.equal(b.compare, mustAsset(FIXTURE_MODEL));
    assert.ok(b.bandwidth.bytesPerSecond > 1e8, `bandwidth ${b.bandwidth.bytesPerSecond}`);
    const kinds = b.runs.map((r) => `${r.engine}/${r.role}/${r.attention}`);
    assert.deepEqual(kinds, ['transmla/model/MLA', 'transmla/compare/GQA', 'llama.cpp/compare/GQA']);
    for (const run of b.runs) {
      assert.deepEqual(run.contexts.map((c) => c.context), [32, 96]);
      for (const [i, c] of run.contexts.entries()) {
        assert.ok(c.tokensPerSecond > 0 && Math.abs(c.msPerToken * c.tokensPerSecond - 1000) < 1e-6);
        assert.equal(c.cacheBytes, c.context * run.cacheBytesPerToken);
        assert.equal(c.bytesPerStep, run.weightBytesPerStep + c.cacheBytes);
        const rf = run.roofline[i]!;
        assert.ok(Math.abs(rf.minMsPerToken - (c.bytesPerStep / rf.bandwidthBytesPerSecond) * 1000) < 1e-9);
        assert.ok(Math.abs(rf.fractionOfRoofline - rf.minMsPerToken / c.msPerToken) < 1e-12);
      }
      assert.ok(run.peakRssBytes > 0);
    }
    const mla = b.runs[0]!, src = b.runs[1]!;
    // Latent 24 + 8 per layer against 2·4·16 for the source: a quarter of the cache.
    assert.equal(mla.cacheElementsPerToken, 2 * (24 + 8));
    assert.equal(src.cacheElementsPerToken, 2 * 2 * 4 * 16);
    assert.equal(b.ratios.length, 2);
    for (const x of b.ratios) assert.equal(x.cacheBytesRatio, 0.25);
    assert.ok(b.runs[2]!.cacheDtype === 'f16' && b.runs[2]!.cacheBytesPerToken === src.cacheElementsPerToken * 2);
    assert.deepEqual(b.llamaCppSkipped.map((s) => s.model), [folder]);
    // Contexts here are inside the 512-position window: no speed-only note.
    assert.ok(!b.notes.some((n) => n.includes('trained window')));
  });

  it('report.html has every section, inline SVG charts, and nothing external', () => {
    checkSelfContained(html);
    for (const title of ['KV cache', 'Perplexity per stage', 'PCA per layer', 'RoPE frequencies per layer', 'Decode speed vs context', 'Timings']) {
      assert.ok(html.includes(`<h2>${title}</h2>`), `section ${title}`);
    }
    const svgs = html.match(/<svg[\s\S]*?<\/svg>/g) ?? [];
    // KV bars, perplexity, energy kept, spectrum, cumulative energy, RoPE heatmap, speed, ms/token.
    assert.ok(svgs.length >= 8, `${svgs.length} charts`);
    for (const s of svgs) assert.match(s, /<path[^>]* d="M/);
    // Chart element ids are unique across the page.
    const ids = [...html.matchAll(/\bid="([^"]+)"/g)].map((m) => m[1]);
    assert.equal(new Set(ids).size, ids.length);
  });

  it('`transmla report` rebuilds the page; older reports without spectra still render', async () => {
    rmSync(join(folder, 'report.html'));
    const cmd = await commands.report!();
    const log = console.log;
    console.log = () => {};
    try { await cmd.run([folder]); } finally { console.log = log; }
    assert.ok(existsSync(join(folder, 'report.html')));
    const r = JSON.parse(readFileSync(join(folder, 'transmla.json'), 'utf8')) as ConvertReport;
    const old = { ...r, layers: r.layers.map(({ ropeEnergy, alpha, kvEnergy }) => ({ ropeEnergy, alpha, kvEnergy })) } as unknown as ConvertReport;
    const page = await buildReportHtml(old, null);
    checkSelfContained(page);
    assert.match(page, /were not recorded/);
    assert.match(page, /Not benchmarked yet/);
  });

  it('MHA2MLA: convert writes report.html with RoPE pairs per KV head, SVD spectra, perplexity per stage and KV bytes', async () => {
    const m = await buildMha2mlaFixture(dir);
    assert.ok(existsSync(m.report), 'the converter wrote report.html');
    const r = JSON.parse(readFileSync(join(m.folder, 'transmla.json'), 'utf8')) as Mha2mlaReport;
    const G = r.source.kvHeads, half = r.source.headDim / 2;
    assert.equal(r.method, 'mha2mla');
    assert.equal(r.source.ropeInvFreq!.length, half);
    assert.ok(r.source.ropeInvFreq!.every((w, k) => w > 0 && (k === 0 || w < r.source.ropeInvFreq![k - 1]!)));
    for (const l of r.layers) {
      // S_2-norm: a score per pair and KV head, and the kept pairs are each head's best.
      assert.equal(l.pairScores!.length, G);
      l.pairScores!.forEach((sc, g) => {
        assert.equal(sc.length, half);
        const kept = r.parameters.ropePairs[r.layers.indexOf(l)]![g]!;
        const worstKept = Math.min(...kept.map((k) => sc[k]!));
        assert.ok(sc.every((x, k) => kept.includes(k) || x <= worstKept));
      });
      // SVD_joint: one spectrum of G·(2d − 2r) or D components (the smaller), descending shares summing to 1,
      // the first R of them summing to the recorded energy.
      assert.equal(l.spectra!.length, 1);
      const sp = l.spectra![0]!;
      assert.equal(sp.part, 'keys+values');
      assert.equal(sp.rank, r.parameters.kvLoraRank);
      assert.equal(sp.shares.length, Math.min(G * (2 * r.source.headDim - 2 * r.parameters.ropePairsPerHead), r.source.hidden));
      const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
      assert.ok(sp.shares.every((x, j) => x >= 0 && (j === 0 || x <= sp.shares[j - 1]! * (1 + 1e-5))));
      assert.ok(Math.abs(sum(sp.shares) - 1) < 1e-4);
      assert.ok(Math.abs(sum(sp.shares.slice(0, sp.rank)) - l.energy) < 1e-4);
    }
    const page = readFileSync(m.report, 'utf8');
    checkSelfContained(page);
    for (const title of ['Conversion', 'KV cache', 'Perplexity per stage', 'RoPE pairs per KV head', 'Low-rank latent (SVD) per layer', 'Decode speed vs context', 'Timings']) {
      assert.ok(page.includes(`<h2>${title}</h2>`), `section ${title}`);
    }
    assert.match(page, /Not benchmarked yet/);
    // KV bars, perplexity, pair map, pair counts, energy kept, spectrum, cumulative energy.
    const svgs = page.match(/<svg[\s\S]*?<\/svg>/g) ?? [];
    assert.ok(svgs.length >= 7, `${svgs.length} charts`);
    for (const s of svgs) assert.match(s, /<path[^>]* d="M/);
    const ids = [...page.matchAll(/\bid="([^"]+)"/g)].map((x) => x[1]);
    assert.equal(new Set(ids).size, ids.length);
    // The KV bytes before and after, and every (layer, KV head)'s kept pairs in the table.
    assert.ok(page.includes(`${r.kvCache.bytesPerTokenBefore.toLocaleString('en-US')} B`) && page.includes(`${r.kvCache.bytesPerTokenAfter.toLocaleString('en-US')} B`));
    assert.equal((page.match(/<tr><td>\d+<\/td><td>\d+<\/td><td>[\d, ]+<\/td>/g) ?? []).length, r.layers.length * G);

    // `transmla report` rebuilds it, with the decode-speed section once a bench.json is there.
    rmSync(m.report);
    copyFileSync(join(folder, 'bench.json'), join(m.folder, 'bench.json'));
    const cmd = await commands.report!();
    const log = console.log;
    console.log = () => {};
    try { await cmd.run([m.folder]); } finally { console.log = log; }
    const rebuilt = readFileSync(m.report, 'utf8');
    checkSelfContained(rebuilt);
    assert.doesNotMatch(rebuilt, /Not benchmarked yet/);
    assert.ok((rebuilt.match(/<svg/g) ?? []).length >= svgs.length + 2);

    // A transmla.json from before spectra, scores and frequencies were recorded still renders.
    const old = { ...r, source: { ...r.source, ropeInvFreq: undefined }, layers: r.layers.map(({ energy }) => ({ energy })) } as Mha2mlaReport;
    const oldPage = await buildMha2mlaReportHtml(old, null);
    checkSelfContained(oldPage);
    assert.match(oldPage, /spectra were not recorded/);
    assert.match(oldPage, /scores were not recorded/);
  });

  it('MHA2MLA report of SVD_split and a fixed selection: key and value spectra, pairs without scores', async () => {
    const t = tinyConvertOptions();
    const r = await convertMha2mla({
      model: mustAsset(FIXTURE_MODEL), out: null, kvRank: 12, ropePairs: 2, selection: 'uniform', init: 'split',
      calib: t.calib, evalTexts: [{ path: t.evalText, mode: 'file' }], evalCtx: 64, evalChunks: 1,
    });
    for (const l of r.layers) {
      assert.equal(l.pairScores, null);
      assert.deepEqual(l.spectra!.map((s) => [s.part, s.rank]), [['keys', 6], ['values', 6]]);
    }
    const page = await buildMha2mlaReportHtml(r, null);
    checkSelfContained(page);
    assert.match(page, /SVD spectrum of keys/);
    assert.match(page, /SVD spectrum of values/);
    assert.doesNotMatch(page, /were not recorded/);
    assert.ok((page.match(/<svg/g) ?? []).length >= 9);
  });

  it('the bandwidth figure is a measured positive rate', async () => {
    const bw = await measureBandwidth({ bytes: 16 * 2 ** 20, reps: 2, threads: 2 });
    assert.ok(bw.singleThreadBytesPerSecond > 0 && bw.parallelBytesPerSecond > 0);
    assert.equal(bw.bytesPerSecond, Math.max(bw.singleThreadBytesPerSecond, bw.parallelBytesPerSecond));
    await assert.rejects(measureBandwidth({ bytes: 1000 }), /at least 1 MiB/);
  });

  it('sweep converts at each fraction and charts perplexity vs KV fraction', async () => {
    const t = tinyConvertOptions();
    const out = join(dir, 'sweep');
    const s = await runSweep({
      model: mustAsset(FIXTURE_MODEL), fractions: [0.5, 0.25], methods: ['transmla', 'mha2mla'], out,
      convert: { calib: t.calib, calibSamples: 8, calibSeqLen: 64, freqFold: 2, ropeDim: 8, evalTexts: [{ path: t.evalText, mode: 'file' }], evalCtx: 128, evalChunks: 1 },
    });
    const saved = JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8')) as SweepReport;
    assert.deepEqual(saved.points.map((p) => [p.method, p.kvFractionRequested, p.kvFraction]),
      [['transmla', 0.5, 0.5], ['transmla', 0.25, 0.25], ['mha2mla', 0.5, 0.5], ['mha2mla', 0.25, 0.25]]);
    // TransMLA: r + d_R (8); MHA2MLA: latent + 4 KV heads × 2·1 RoPE pair (its default d/16 pairs).
    assert.deepEqual(s.points.map((p) => p.kvLoraRank), [56, 24, 56, 24]);
    for (const p of saved.points) assert.ok(p.evaluations[0]!.mla.ppl > 1 && p.evaluations[0]!.original.ppl === saved.points[0]!.evaluations[0]!.original.ppl);
    const page = readFileSync(join(out, 'sweep.html'), 'utf8');
    checkSelfContained(page);
    assert.ok((page.match(/<svg/g) ?? []).length >= 2);
    assert.match(page, /Perplexity vs KV fraction/);
    await assert.rejects(runSweep({ model: mustAsset(FIXTURE_MODEL), fractions: [0.5], methods: ['nope'], out, convert: { calib: t.calib, freqFold: 'auto' } }), /unknown conversion method "nope"/);
  });
});
