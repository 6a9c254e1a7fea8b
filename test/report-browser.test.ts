// Generated reports opened in a real browser (Debian's Chromium, headless, through
// playwright-core): a TransMLA folder's and an MHA2MLA folder's. The charts must render (SVG with
// drawn marks, non-zero size), with no console error and no request other than the page itself.
// Screenshots are kept in test-artifacts/. Then what makes the charts readable, measured in the
// rendered page: no text cut short, layers numbered from 1 and each in its own panel, perplexity
// on an axis where a few percent show, the roofline on its own scale with every point above it
// explained, and a rule's label clear of the lines (on synthetic data that provokes each case).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, assetPath } from './helpers/assets.js';
import { browserSkipReason, withPage } from './helpers/browser.js';
import { buildMha2mlaFixture, buildReportFixture, FIXTURE_MODEL } from './helpers/report-fixture.js';
import type { EvalReport } from '../src/schema/transmla-json.js';
import type { SweepReport } from '../src/schema/sweep-json.js';
import type { BenchReport } from '../src/schema/bench-json.js';
import { page as htmlPage } from '../src/report/html.js';
import { stagesSection } from '../src/report/sections.js';
import { buildSweepHtml } from '../src/report/sweep-report.js';
import type { Page } from 'playwright-core';

const skip = browserSkipReason() || (assetPath(FIXTURE_MODEL) ? false : `asset ${FIXTURE_MODEL} missing`);

describe('report in a browser', { skip }, () => {
  const dir = skip ? '' : mkdtempSync(join(tmpdir(), 'transmla-browser-'));
  let reportPath: string;
  let mha2mlaPath: string;
  let bench: BenchReport;
  before(async () => {
    const f = await buildReportFixture(dir, { llamaCpp: false });
    reportPath = f.report;
    bench = JSON.parse(readFileSync(join(f.folder, 'bench.json'), 'utf8')) as BenchReport;
    mha2mlaPath = (await buildMha2mlaFixture(dir, { benchFrom: f.folder })).report;
  });
  after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

  /** Opens a page and checks every chart; returns the section titles. */
  const check = (path: string, minCharts: number, screenshot: string): Promise<(string | null)[]> => withPage(dir, screenshot, path, async (page, url) => {
    const problems: string[] = [];
    const requests: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(url, { waitUntil: 'load' });
    const charts = await page.$$eval('.chart svg', (svgs) => svgs.map((s) => {
      const box = s.getBoundingClientRect();
      const marks = [...s.querySelectorAll('path, rect, line')].filter((e) => {
        const b = (e as SVGGraphicsElement).getBBox();
        return b.width > 0 || b.height > 0;
      }).length;
      return { width: box.width, height: box.height, marks, texts: s.querySelectorAll('text').length };
    }));
    assert.ok(charts.length >= minCharts, `${charts.length} charts rendered`);
    for (const c of charts) {
      assert.ok(c.width > 100 && c.height > 50, `chart of ${c.width}×${c.height}`);
      assert.ok(c.marks > 3, `chart with ${c.marks} drawn marks`);
      assert.ok(c.texts > 2, 'axis labels and titles');
    }
    const titles = await page.$$eval('section h2', (hs) => hs.map((h) => h.textContent));
    assert.deepEqual(problems, []);
    assert.deepEqual(requests, [url]);
    const out = join(REPO_ROOT, 'test-artifacts');
    mkdirSync(out, { recursive: true });
    await page.screenshot({ path: join(out, screenshot), fullPage: true });
    assert.ok(existsSync(join(out, screenshot)));
    return titles;
  });

  it('renders every chart with no console error and no network request', async () => {
    const titles = await check(reportPath, 9, 'report.png');
    assert.ok(titles.includes('Decode speed vs context'));
  });

  it('renders the MHA2MLA report the same way', async () => {
    // KV bars, perplexity, pair map, pair counts, energy, spectrum, cumulative energy, speed, ms/token, roofline share.
    const titles = await check(mha2mlaPath, 10, 'report-mha2mla.png');
    for (const t of ['RoPE pairs per KV head', 'Low-rank latent (SVD) per layer', 'Decode speed vs context']) assert.ok(titles.includes(t), t);
  });

  /** Every chart's text, and its own title (the first text in it). */
  const chartTexts = (page: Page): Promise<{ title: string; texts: string[] }[]> => page.$$eval('.chart svg', (svgs) => svgs.map((svg) => {
    const texts = [...svg.querySelectorAll('text')].map((t) => t.textContent ?? '');
    const title = svg.querySelector('.role-title-text text')?.textContent ?? '';
    return { title, texts };
  }));

  it('no chart text is cut short: file names, legend titles and labels are whole', async () => {
    for (const [path, whole] of [
      [reportPath, ['tinystories_val_sample.txt', 'MLA latent', 'source (GQA)']],
      [mha2mlaPath, ['tinystories_val_sample.txt', 'MHA2MLA (RoPE keys + latent)', 'score ÷ the head\'s best']],
    ] as const) {
      const charts = await withPage(dir, `texts-${whole[1]}`, path, async (page, url) => {
        await page.goto(url, { waitUntil: 'load' });
        return chartTexts(page);
      });
      const all = charts.flatMap((c) => c.texts);
      assert.deepEqual(all.filter((t) => t.includes('…')), [], 'truncated texts');
      for (const w of whole) assert.ok(all.includes(w), `"${w}" whole in a chart of ${path}`);
    }
  });

  it('layers are numbered from 1 everywhere, and per-layer lines each get their own panel', async () => {
    const r = await withPage(dir, 'layers', reportPath, async (page, url) => {
      await page.goto(url, { waitUntil: 'load' });
      const perLayer = await page.$$eval('.chart svg', (svgs) => svgs
        .filter((svg) => [...svg.querySelectorAll('.role-title-text text')].some((t) => /spectrum|Cumulative/.test(t.textContent ?? '')))
        .map((svg) => ({
          panels: [...svg.querySelectorAll('.role-title-text text')].map((t) => t.textContent).filter((t) => /^layer /.test(t ?? '')),
          linesPerPlot: [...svg.querySelectorAll('g.mark-line')].map((g) => g.querySelectorAll('path').length),
        })));
      const pcaLayers = await page.$$eval('section', (ss) => {
        const pca = ss.find((x) => x.querySelector('h2')?.textContent === 'PCA per layer');
        return [...(pca?.querySelectorAll('tbody tr td:first-child') ?? [])].map((td) => td.textContent);
      });
      return { perLayer, pcaLayers, text: await page.evaluate(() => document.body.innerText + [...document.querySelectorAll('svg text')].map((t) => t.textContent).join('\n')) };
    });
    assert.equal(r.perLayer.length, 2);
    for (const c of r.perLayer) {
      assert.deepEqual(c.panels, ['layer 1', 'layer 2']);
      assert.deepEqual(c.linesPerPlot, [1, 1], 'one line per plot');
    }
    assert.deepEqual(r.pcaLayers, ['1', '2']);
    assert.doesNotMatch(r.text, /\blayer 0\b|\bhead 0\b/);
    const m = await withPage(dir, 'layers-mha2mla', mha2mlaPath, async (page, url) => {
      await page.goto(url, { waitUntil: 'load' });
      return page.evaluate(() => document.body.innerText + [...document.querySelectorAll('svg text')].map((t) => t.textContent).join('\n'));
    });
    assert.match(m, /layer 1 · KV head 1/);
    assert.match(m, /layer 2 · KV head 4/);
    assert.doesNotMatch(m, /\blayer 0\b|\bhead 0\b/);
  });

  it('perplexity per stage: 103.9 → 108.4 → 108.5 is drawn on a zero-free axis where the change shows', async () => {
    const score = (ppl: number) => ({ ppl, nll: Math.log(ppl), kl: 0.1, top1: 0.9 });
    const e: EvalReport = {
      text: '/data/kjv-old-testament-calib.txt (last 93 documents, held out)', sha256: '0'.repeat(64), mode: 'held-out calibration documents',
      ctx: 1024, chunks: 4, predictions: 4092, convention: 'test convention', original: score(103.9), partialRope: score(108.4), mla: score(108.5),
    };
    const file = join(dir, 'stages.html');
    writeFileSync(file, htmlPage({ title: 't', subtitle: 's', sections: [await stagesSection([e], 'stages.')], footer: 'f' }));
    const g = await withPage(dir, 'stages', file, async (page, url) => {
      await page.goto(url, { waitUntil: 'load' });
      return page.$eval('.chart svg', (svg) => ({
        yAxis: svg.querySelector('g[aria-label^="Y-axis"]')?.getAttribute('aria-label') ?? '',
        plotHeight: (svg.querySelector('path.background') as SVGGraphicsElement).getBBox().height,
        points: [...svg.querySelectorAll('path[aria-roledescription="point"]')].map((p) => { const b = p.getBoundingClientRect(); return b.y + b.height / 2; }),
        texts: [...svg.querySelectorAll('text')].map((t) => t.textContent),
      }));
    });
    const dom = /values from ([\d.]+) to ([\d.]+)/.exec(g.yAxis);
    assert.ok(dom, g.yAxis);
    assert.ok(Number(dom[1]) > 0.5, `the y axis domain starts at ${dom[1]}; it must not start at zero`);
    assert.equal(g.points.length, 3);
    const [orig, partial, mla] = g.points as [number, number, number];
    assert.ok(orig - partial >= 0.4 * g.plotHeight, `original and partial RoPE ${orig - partial} px apart of ${g.plotHeight}`);
    assert.ok(Math.abs(partial - mla) >= 2, `108.4 and 108.5 ${Math.abs(partial - mla)} px apart`);
    for (const t of ['103.9', '108.4 (+4.3 %)', '108.5 (+4.4 %)', 'kjv-old-testament-calib.txt (last 93 documents, held out)']) assert.ok(g.texts.includes(t), t);
  });

  it('decode speed: the roofline has its own scale, and every point above it says why', async () => {
    const r = await withPage(dir, 'speed', reportPath, async (page, url) => {
      await page.goto(url, { waitUntil: 'load' });
      return page.$$eval('.chart svg', (svgs) => svgs.map((svg) => ({
        title: svg.querySelector('.role-title-text text')?.textContent ?? '',
        dashedLines: [...svg.querySelectorAll('path[aria-roledescription="line mark"]')].filter((p) => p.getAttribute('stroke-dasharray')).length,
        texts: [...svg.querySelectorAll('text')].map((t) => t.textContent ?? ''),
      })));
    });
    const ms = r.find((c) => c.title.startsWith('Milliseconds per token'))!;
    assert.equal(ms.dashedLines, 0, 'no roofline lines squeezed under the measured ones');
    const share = r.find((c) => c.title.startsWith('Share of the memory roofline'))!;
    assert.ok(share, r.map((c) => c.title).join(' | '));
    assert.ok(share.texts.includes('memory roofline'));
    const above = bench.runs.flatMap((run) => run.roofline.filter((p) => p.fractionOfRoofline > 1).map((p) => p.aboveRooflineKind));
    assert.deepEqual(share.texts.filter((t) => ['cache-resident', 'disturbed probe', 'faster than every probe'].includes(t)).sort(), above.sort());
  });

  it('sweep: the original model\'s label sits clear of every line and point', async () => {
    const point = (f: number, ppl: number, partial: number): SweepReport['points'][number] => ({
      method: 'transmla', kvFractionRequested: f, kvFraction: f, kvLoraRank: 8, shape: 's', bytesPerTokenBefore: 1024, bytesPerTokenAfter: 1024 * f,
      evaluations: [{ text: 'eval.txt', ctx: 128, chunks: 1, original: { ppl: 10, kl: 0, top1: 1 }, partialRope: { ppl: partial, kl: 0.01, top1: 0.99 }, mla: { ppl, kl: 0.02, top1: 0.98 } }],
      convertSeconds: 1, seconds: 2, output: null,
    });
    // At fraction 1 both stages end on the original's perplexity, at the rule's right end.
    const s: SweepReport = {
      tool: 'transmla sweep', created: '2026-01-01T00:00:00.000Z', model: '/m/model', methods: ['transmla'], fractions: [1, 0.5, 0.25], convention: 'c',
      points: [point(1, 10, 10), point(0.5, 10.6, 10.4), point(0.25, 13, 12)],
    };
    const file = join(dir, 'sweep.html');
    writeFileSync(file, await buildSweepHtml(s));
    const hits = await withPage(dir, 'sweep', file, async (page, url) => {
      await page.goto(url, { waitUntil: 'load' });
      // (No named helpers inside: the page function is serialised as written, without tsx's helpers.)
      return page.$eval('.chart svg', (svg) => {
        const label = [...svg.querySelectorAll('text')].find((t) => (t.textContent ?? '').startsWith('original '))!;
        const b = label.getBoundingClientRect();
        let n = 0;
        for (const p of svg.querySelectorAll<SVGPathElement>('path[aria-roledescription="line mark"]')) {
          const len = p.getTotalLength(), m = p.getScreenCTM()!;
          for (let i = 0; i <= 400; i++) {
            const q = p.getPointAtLength((len * i) / 400);
            const c = new DOMPoint(q.x, q.y).matrixTransform(m);
            if (c.x >= b.left - 1 && c.x <= b.right + 1 && c.y >= b.top - 1 && c.y <= b.bottom + 1) n++;
          }
        }
        for (const p of svg.querySelectorAll('path[aria-roledescription="point"]')) {
          const r = p.getBoundingClientRect();
          if (r.right >= b.left && r.left <= b.right && r.bottom >= b.top && r.top <= b.bottom) n++;
        }
        return { n, label: label.textContent };
      });
    });
    assert.equal(hits.label, 'original 10.00');
    assert.equal(hits.n, 0, 'line samples or points under the label');
  });
});
