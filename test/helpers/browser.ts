// Debian's Chromium, headless, through playwright-core: for tests that open generated pages. The
// browser runs without network services (no component updates, no sync, no background requests).
// Skipped with a message when /usr/bin/chromium is absent, except under CI=true (.ci/run installs it).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Why browser tests cannot run here (false: they can). */
export function browserSkipReason(): string | false {
  if (!existsSync(CHROMIUM)) {
    if (process.env.CI === 'true') throw new Error(`${CHROMIUM} is missing under CI=true (.ci/run installs Debian's chromium)`);
    return `${CHROMIUM} not installed (apt-get install chromium) — browser check skipped`;
  }
  return false;
}

/** Opens `path` in a fresh profile under `dir`, runs `fn` on the loaded page, closes the browser. */
export async function withPage<T>(dir: string, name: string, path: string, fn: (page: Page, url: string) => Promise<T>): Promise<T> {
  const { chromium } = await import('playwright-core');
  const context = await chromium.launchPersistentContext(join(dir, `profile-${name}`), { executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1280, height: 900 } });
  try {
    const page = await context.newPage();
    const url = pathToFileURL(path).href;
    return await fn(page, url);
  } finally {
    await context.close();
  }
}
