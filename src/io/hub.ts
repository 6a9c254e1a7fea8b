// Model location: a local Hugging Face folder is used as is; an `owner/name` id that is not a
// local path is downloaded once from the Hub into a cache folder (config, safetensors weights,
// index, tokenizer and generation files only) and reused from there afterwards.
import { createWriteStream, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { withAtomicDir } from './atomic-dir.js';
import { INDEX_FILE, SINGLE_FILE } from './checkpoint.js';
import { isHfExtraFile } from './hf-folder.js';

export class HubError extends Error {
  override name = 'HubError';
}

export interface ResolveModelOptions {
  /** Root of the download cache. Default ~/.cache/transmla/hub. */
  cacheDir?: string;
  /** Hub endpoint. Default $HF_ENDPOINT or https://huggingface.co. */
  hubUrl?: string;
  /** Branch, tag or commit. Default "main". */
  revision?: string;
  /** Access token for gated/private repos. Default $HF_TOKEN. */
  accessToken?: string;
  /** Progress lines (one per file downloaded). */
  log?: (line: string) => void;
  /**
   * Checks config.json before any weight is downloaded (throws to refuse: an unsupported model
   * costs no gigabytes). The model families (arch/registry.ts parseConfig) are the usual check.
   */
  checkConfig?: (json: unknown, file: string) => void;
}

export interface ResolvedModel {
  /** Absolute path of the model folder. */
  dir: string;
  /** 'local': given folder; 'cache': earlier download; 'hub': downloaded now. */
  origin: 'local' | 'cache' | 'hub';
  /** The Hub id when the model came from the Hub. */
  repo: string | null;
}

const MARKER = '.transmla-download.json';
const HUB_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function defaultCacheDir(): string {
  return join(homedir(), '.cache', 'transmla', 'hub');
}

function looksLikePath(s: string): boolean {
  return s.startsWith('.') || s.startsWith('/') || s.startsWith('~') || s.includes('\\') || s.split('/').length !== 2;
}

function checkLocalFolder(dir: string, given: string): void {
  const st = statSync(dir, { throwIfNoEntry: false });
  if (!st) throw new HubError(`model folder ${given} does not exist`);
  if (!st.isDirectory()) throw new HubError(`model path ${given} is not a folder (expected a Hugging Face model folder with config.json)`);
  if (!existsSync(join(dir, 'config.json'))) throw new HubError(`model folder ${given} has no config.json`);
}

/** Explains a failed Hub call: unreachable network, access refused, or missing repo/file. */
function hubFailure(repo: string, hubUrl: string, what: string, err: unknown): HubError {
  const e = err as { statusCode?: number; message?: string; cause?: { code?: string; message?: string } };
  if (typeof e.statusCode === 'number') {
    if (e.statusCode === 401 || e.statusCode === 403) {
      return new HubError(`the Hugging Face Hub refused access to ${repo} (HTTP ${e.statusCode}) while fetching ${what}: gated or private repos need an access token (HF_TOKEN) with access granted; or pass a local folder`);
    }
    if (e.statusCode === 404) return new HubError(`${repo} was not found on the Hugging Face Hub (${hubUrl}) while fetching ${what}; check the id and revision, or pass a local folder`);
    return new HubError(`the Hugging Face Hub answered HTTP ${e.statusCode} for ${repo} (${what}): ${e.message ?? ''}`);
  }
  const cause = e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
  return new HubError(`could not reach the Hugging Face Hub (${hubUrl}) to download ${repo}: ${cause}; pass a local folder`);
}

/**
 * Returns a local folder for `idOrPath`: an existing folder (must contain config.json), or the
 * cached / freshly downloaded copy of Hub repo `owner/name`.
 */
export async function resolveModel(idOrPath: string, options: ResolveModelOptions = {}): Promise<ResolvedModel> {
  const local = resolve(idOrPath);
  if (existsSync(local)) {
    checkLocalFolder(local, idOrPath);
    return { dir: local, origin: 'local', repo: null };
  }
  if (looksLikePath(idOrPath) || !HUB_ID.test(idOrPath) || idOrPath.includes('..')) {
    throw new HubError(`model ${idOrPath} is neither an existing folder nor a Hugging Face Hub id (owner/name)`);
  }
  const repo = idOrPath;
  const revision = options.revision ?? 'main';
  const hubUrl = (options.hubUrl ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  const cacheRoot = resolve(options.cacheDir ?? defaultCacheDir());
  const folderName = repo.replace('/', '--') + (revision === 'main' ? '' : `--${revision.replace(/[^A-Za-z0-9._-]/g, '_')}`);
  const dir = join(cacheRoot, folderName);
  // The folder is only ever created complete (atomic rename), so its marker means a finished download.
  if (existsSync(join(dir, MARKER)) && existsSync(join(dir, 'config.json'))) return { dir, origin: 'cache', repo };

  const accessToken = options.accessToken ?? process.env.HF_TOKEN;
  const log = options.log ?? (() => {});
  const hub = await import('@huggingface/hub');
  const common = { repo: { type: 'model' as const, name: repo }, revision, hubUrl, ...(accessToken ? { accessToken } : {}) };

  let listing: { path: string; size: number }[];
  try {
    listing = [];
    for await (const f of hub.listFiles({ ...common })) {
      if (f.type === 'file') listing.push({ path: f.path, size: f.lfs?.size ?? f.size });
    }
  } catch (err) {
    throw hubFailure(repo, hubUrl, 'the file list', err);
  }
  const sizes = new Map(listing.map((f) => [f.path, f.size]));
  if (!sizes.has('config.json')) throw new HubError(`${repo} on the Hub has no config.json; it is not a transformers model folder`);
  if (!sizes.has(SINGLE_FILE) && !sizes.has(INDEX_FILE)) {
    throw new HubError(`${repo} on the Hub has no ${SINGLE_FILE} or ${INDEX_FILE}; only safetensors checkpoints are supported`);
  }

  const fetchTo = async (tmp: string, name: string): Promise<void> => {
    let blob: Blob | null;
    try {
      blob = await hub.downloadFile({ ...common, path: name });
      if (!blob) throw new HubError(`${repo} on the Hub lists ${name} but it could not be downloaded`);
      log(`downloading ${repo}/${name} (${(blob.size / 1e6).toFixed(1)} MB)`);
      await pipeline(Readable.fromWeb(blob.stream() as unknown as NodeReadableStream), createWriteStream(join(tmp, name)));
    } catch (err) {
      if (err instanceof HubError) throw err;
      throw hubFailure(repo, hubUrl, name, err);
    }
    const want = sizes.get(name);
    const got = statSync(join(tmp, name)).size;
    if (want !== undefined && got !== want) throw new HubError(`download of ${repo}/${name} is incomplete: ${got} of ${want} bytes`);
  };

  await withAtomicDir(dir, { overwrite: true }, async (tmp) => {
    await fetchTo(tmp, 'config.json');
    // Refuse unsupported models before downloading gigabytes of weights.
    let configJson: unknown;
    try {
      configJson = JSON.parse(readFileSync(join(tmp, 'config.json'), 'utf8'));
    } catch (err) {
      throw new HubError(`${repo}/config.json is not valid JSON: ${(err as Error).message}`);
    }
    options.checkConfig?.(configJson, `${repo}/config.json`);
    const weights: string[] = [];
    if (sizes.has(SINGLE_FILE)) {
      weights.push(SINGLE_FILE);
    } else {
      await fetchTo(tmp, INDEX_FILE);
      weights.push(...shardsOfIndex(join(tmp, INDEX_FILE), repo));
    }
    const extras = listing.map((f) => f.path).filter((p) => !p.includes('/') && isHfExtraFile(p));
    for (const name of [...extras, ...weights]) await fetchTo(tmp, name);
    writeFileSync(join(tmp, MARKER), JSON.stringify({ repo, revision, hubUrl, files: ['config.json', ...(sizes.has(SINGLE_FILE) ? [] : [INDEX_FILE]), ...extras, ...weights], downloadedAt: new Date().toISOString() }, null, 2) + '\n');
  });
  return { dir, origin: 'hub', repo };
}

/** Shard file names of a downloaded index; only plain top-level names are accepted. */
function shardsOfIndex(indexPath: string, repo: string): string[] {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (err) {
    throw new HubError(`${repo}: ${INDEX_FILE} is not valid JSON: ${(err as Error).message}`);
  }
  const wm = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) throw new HubError(`${repo}: ${INDEX_FILE} has no weight_map object`);
  const files = new Set<string>();
  for (const f of Object.values(wm)) {
    if (typeof f !== 'string' || f === '' || f.includes('/') || f.includes('\\') || f === '.' || f === '..' || !f.endsWith('.safetensors')) {
      throw new HubError(`${repo}: ${INDEX_FILE} names shard ${JSON.stringify(f)}; expected a plain .safetensors file name`);
    }
    files.add(f);
  }
  return [...files];
}
