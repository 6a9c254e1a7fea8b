// Generated reports opened in a real browser (Debian's Chromium, headless, through
// playwright-core): a TransMLA folder's and an MHA2MLA folder's. The charts must render (SVG with
// drawn marks, non-zero size), with no console error and no request other than the page itself.
// Screenshots are kept in test-artifacts/.
// Skipped with a message when /usr/bin/chromium is absent, except under CI=true (.ci/run installs it).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT, assetPath } from './helpers/assets.js';
import { buildMha2mlaFixture, buildReportFixture, FIXTURE_MODEL } from './helpers/report-fixture.js';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function skipReason(): string | false {
  if (!existsSync(CHROMIUM)) {
    if (process.env.CI === 'true') throw new Error(`${CHROMIUM} is missing under CI=true (.ci/run installs Debian's chromium)`);
    return `${CHROMIUM} not installed (apt-get install chromium) — browser check skipped`;
  }
  if (!assetPath(FIXTURE_MODEL)) return `asset ${FIXTURE_MODEL} missing`;
  return false;
}
const skip = skipReason();

describe('report in a browser', { skip }, () => {
  const dir = skip ? '' : mkdtempSync(join(tmpdir(), 'transmla-browser-'));
  let reportPath: string;
  let mha2mlaPath: string;
  before(async () => {
    const f = await buildReportFixture(dir, { llamaCpp: false });
    reportPath = f.report;
    mha2mlaPath = (await buildMha2mlaFixture(dir, { benchFrom: f.folder })).report;
  });
  after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

  /** Opens a page and checks every chart; returns the section titles. */
  const check = async (path: string, minCharts: number, screenshot: string): Promise<(string | null)[]> => {
    const { chromium } = await import('playwright-core');
    const profile = join(dir, `profile-${screenshot}`);
    const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1280, height: 900 } });
    try {
      const page = await context.newPage();
      const problems: string[] = [];
      const requests: string[] = [];
      page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`); });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('request', (r) => requests.push(r.url()));
      const url = pathToFileURL(path).href;
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
    } finally {
      await context.close();
    }
  };

  it('renders every chart with no console error and no network request', async () => {
    const titles = await check(reportPath, 8, 'report.png');
    assert.ok(titles.includes('Decode speed vs context'));
  });

  it('renders the MHA2MLA report the same way', async () => {
    // KV bars, perplexity, pair map, pair counts, energy, spectrum, cumulative energy, speed, ms/token.
    const titles = await check(mha2mlaPath, 9, 'report-mha2mla.png');
    for (const t of ['RoPE pairs per KV head', 'Low-rank latent (SVD) per layer', 'Decode speed vs context']) assert.ok(titles.includes(t), t);
  });
});
