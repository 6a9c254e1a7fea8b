// Locates shared test assets (../shared/assets beside the repository checkout).
// Missing assets fail under CI=true and make the test skip, with a message, otherwise.
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (two levels above this file). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The shared assets folder. */
export const ASSETS_ROOT = resolve(REPO_ROOT, '..', 'shared', 'assets');

/**
 * Absolute path of an asset, given relative to the assets folder ('models/kjv-gqa') or to the
 * repository ('../shared/assets/models/kjv-gqa'). Returns null when it is missing, unless
 * CI=true, where a missing asset is an error.
 */
export function assetPath(rel: string): string | null {
  const p = rel.startsWith('../') ? resolve(REPO_ROOT, rel) : resolve(ASSETS_ROOT, rel);
  if (existsSync(p)) return p;
  if (process.env.CI === 'true') throw new Error(`test asset missing: ${p} (CI needs ../shared/assets beside the checkout)`);
  return null;
}

/** Value for node:test's `skip` option: false when the asset exists, else a message. */
export function skipUnlessAsset(rel: string): false | string {
  return assetPath(rel) === null ? `asset ${rel} not found under ${ASSETS_ROOT}` : false;
}

/** Absolute path of an asset known to exist (use after skipUnlessAsset). */
export function mustAsset(rel: string): string {
  const p = assetPath(rel);
  if (p === null) throw new Error(`test asset missing: ${rel}`);
  return p;
}

/** Names of the Hugging Face model folders (with config.json) under assets/models; [] when absent (error under CI). */
export function hfModelAssets(): string[] {
  const root = assetPath('models');
  if (root === null) return [];
  return readdirSync(root)
    .filter((n) => existsSync(join(root, n, 'config.json')))
    .sort();
}
