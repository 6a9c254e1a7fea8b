// Model location: a local path (folder, .gguf, .bin) is used as is; a Hugging Face Hub id
// `owner/name` (optionally `owner/name@revision`) that is not a local path is fetched into the
// Hugging Face cache and the snapshot folder is returned. The cache has huggingface_hub's layout
// (models--owner--name/{blobs,snapshots/<commit>,refs/<revision>} under $HF_HUB_CACHE, or
// $HF_HOME/hub, or ~/.cache/huggingface/hub — @huggingface/hub's getHFHubCachePath), so models
// already downloaded by Python tools are reused and vice versa. Only the files a model needs are
// fetched: config, generation config, tokenizer and chat-template files, transmla.json (a
// converted folder's record, which decides how an MLA folder computes), and the safetensors
// weights the loader reads (model.safetensors, or the index and its shards) — no .bin/.pt/ONNX/
// GGUF duplicates. Conventions: HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE=1 (cache only).
import { copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { INDEX_FILE, SINGLE_FILE } from './checkpoint.js';
import { isHfExtraFile } from './hf-folder.js';
import { downloadBlob, HubError, isNetworkError, networkCause, partialBytes, type RemoteFile } from './hub-download.js';
import { createProgress } from './progress.js';

export { HubError } from './hub-download.js';

export interface ResolveModelOptions {
  /** Branch, tag or commit. Default: the `@revision` of the id, else "main". */
  revision?: string;
  /** Cache root. Default: @huggingface/hub's getHFHubCachePath() (HF_HUB_CACHE, HF_HOME, ~/.cache/huggingface/hub). */
  cacheDir?: string;
  /** Hub endpoint. Default $HF_ENDPOINT or https://huggingface.co. */
  hubUrl?: string;
  /** Access token for gated/private repos. Default $HF_TOKEN. */
  accessToken?: string;
  /** Use the cache only, never the network. Default: $HF_HUB_OFFLINE is 1/true/yes/on. */
  offline?: boolean;
  /** Called with the folder once config.json is there, before any weights are fetched; throws to refuse the model. */
  checkConfig?: (dir: string) => void;
  /** Progress lines (what is fetched, resumed, retried). */
  log?: (line: string) => void;
  /** A progress bar (bytes, rate) on stderr while weights download, or on `stream` after `delayMs`. Default false. */
  progress?: boolean | { stream: NodeJS.WriteStream; delayMs?: number };
}

export interface ResolvedModel {
  /** Absolute path of the local file or folder (a snapshot folder for Hub models). */
  dir: string;
  /** 'local': given path; 'cache': already in the cache; 'hub': downloaded (at least in part) now. */
  origin: 'local' | 'cache' | 'hub';
  /** The Hub id, the revision asked for and the commit it resolved to (null for local paths). */
  repo: string | null;
  revision: string | null;
  commit: string | null;
}

const DEFAULT_ENDPOINT = 'https://huggingface.co';
const HUB_ID = /^([A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@([^\s@]+))?$/;
const COMMIT = /^[0-9a-f]{40}$/;
const RECORD_FILE = 'transmla.json';

/** `owner/name[@revision]` → its parts; null when `spec` is not shaped like a Hub id. */
export function parseHubId(spec: string): { repo: string; revision: string | null } | null {
  const m = HUB_ID.exec(spec);
  if (!m || m[1]!.includes('..') || m[1]!.includes('--')) return null;
  const rev = m[2] ?? null;
  if (rev !== null && !validRevision(rev)) return null;
  return { repo: m[1]!, revision: rev };
}

/** A branch, tag or commit name that stays inside refs/ of the cache (refs/pr/1 is fine, ../x is not). */
function validRevision(rev: string): boolean {
  return rev !== '' && !rev.split('/').some((part) => part === '' || part === '.' || part === '..') && !/[\\\s:]/.test(rev);
}

function envTrue(v: string | undefined): boolean {
  return v !== undefined && ['1', 'ON', 'YES', 'TRUE'].includes(v.trim().toUpperCase());
}

/**
 * Whether a snapshot folder is complete: config.json and every weight file. Weights are fetched
 * last, so this also covers the small files, and needs no marker of our own in the shared cache.
 */
function snapshotComplete(dir: string): boolean {
  if (!existsSync(join(dir, 'config.json'))) return false;
  if (existsSync(join(dir, SINGLE_FILE))) return true;
  if (!existsSync(join(dir, INDEX_FILE))) return false;
  try {
    return shardsOfIndex(join(dir, INDEX_FILE), dir).every((s) => existsSync(join(dir, s)));
  } catch {
    return false;
  }
}

function readRef(storage: string, revision: string): string | null {
  const ref = join(storage, 'refs', revision);
  if (!existsSync(ref)) return null;
  const sha = readFileSync(ref, 'utf8').trim();
  return COMMIT.test(sha) ? sha : null;
}

/** Explains a failed Hub API call (an HTTP answer; network failures are handled by the caller). */
function apiFailure(repo: string, revision: string, hubUrl: string, token: boolean, what: string, err: unknown): HubError {
  const e = err as { statusCode?: number; message?: string; data?: { error?: string } };
  const status = e.statusCode;
  if (status === 401 || status === 403) {
    return new HubError(token
      ? `${hubUrl} refused the token in HF_TOKEN for ${repo} (HTTP ${status}): check that it is valid and has access to the repo (gated models: accept the terms on the model page first)`
      : `${hubUrl} refused access to ${repo} (HTTP ${status}): it does not exist, or it is private or gated — set HF_TOKEN to a token with access, or pass a local folder`);
  }
  if (status === 404) {
    const msg = `${e.data?.error ?? e.message ?? ''}`;
    if (/\brev\b|revision/i.test(msg)) return new HubError(`${repo} on ${hubUrl} has no revision "${revision}" (a branch, tag or commit)`);
    return new HubError(`no local file or folder ${repo}, and ${hubUrl} has no model ${repo} (HTTP 404)`);
  }
  return new HubError(`${hubUrl} answered HTTP ${status ?? '?'} for ${repo} (${what}): ${e.message ?? String(err)}`);
}

function unreachable(hubUrl: string, repo: string, err: unknown): HubError {
  return new HubError(`could not reach ${hubUrl} for ${repo} (${networkCause(err)}); pass a local folder or set HF_HUB_OFFLINE=1`);
}

/**
 * A local path as given (resolved), or the local snapshot folder of Hub model `owner/name`,
 * downloading the files it needs when they are not cached yet.
 */
export async function resolveModel(spec: string, options: ResolveModelOptions = {}): Promise<ResolvedModel> {
  const local = resolve(spec);
  if (existsSync(local)) return { dir: local, origin: 'local', repo: null, revision: null, commit: null };
  const id = parseHubId(spec);
  if (!id) throw new HubError(`model ${spec} does not exist (it is neither a local path nor a Hugging Face Hub id owner/name)`);
  const { repo } = id;
  if (options.revision !== undefined && id.revision !== null && options.revision !== id.revision) {
    throw new HubError(`${spec} names revision ${id.revision} but --revision says ${options.revision}; give one`);
  }
  const revision = options.revision ?? id.revision ?? 'main';
  if (!validRevision(revision)) throw new HubError(`revision ${JSON.stringify(revision)} is not a branch, tag or commit name`);
  const hubUrl = (options.hubUrl ?? (process.env.HF_ENDPOINT || DEFAULT_ENDPOINT)).replace(/\/+$/, '');
  const offline = options.offline ?? envTrue(process.env.HF_HUB_OFFLINE);
  const accessToken = (options.accessToken ?? process.env.HF_TOKEN) || undefined;
  const log = options.log ?? (() => {});
  const hub = await import('@huggingface/hub');
  const cacheRoot = resolve(options.cacheDir ?? hub.getHFHubCachePath());
  const storage = join(cacheRoot, hub.getRepoFolderName({ type: 'model', name: repo }));
  const found = (commit: string, origin: 'cache' | 'hub'): ResolvedModel => ({ dir: join(storage, 'snapshots', commit), origin, repo, revision, commit });

  const cachedCommit = COMMIT.test(revision) ? revision : readRef(storage, revision);
  const cachedComplete = cachedCommit !== null && snapshotComplete(join(storage, 'snapshots', cachedCommit));
  if (offline) {
    if (cachedComplete) return found(cachedCommit, 'cache');
    throw new HubError(`HF_HUB_OFFLINE is set and ${repo}@${revision} is not in the cache (${storage}${cachedCommit ? `, snapshot ${cachedCommit} incomplete` : ''}); ` +
      'download it once without HF_HUB_OFFLINE, or pass a local folder');
  }
  // A commit never changes: a complete snapshot of it needs no request.
  if (cachedComplete && COMMIT.test(revision)) return found(revision, 'cache');

  const common = { repo: { type: 'model' as const, name: repo }, hubUrl, ...(accessToken ? { accessToken } : {}) };
  let commit: string;
  try {
    commit = (await hub.modelInfo({ name: repo, hubUrl, revision, additionalFields: ['sha'], ...(accessToken ? { accessToken } : {}) })).sha;
  } catch (err) {
    if (!isNetworkError(err)) throw apiFailure(repo, revision, hubUrl, accessToken !== undefined, 'model info', err);
    if (cachedComplete) {
      // As huggingface_hub does: without the network, the cached snapshot of the ref is used.
      log(`could not reach ${hubUrl} (${networkCause(err)}); using the cached snapshot ${cachedCommit.slice(0, 12)} of ${repo}@${revision}`);
      return found(cachedCommit, 'cache');
    }
    throw unreachable(hubUrl, repo, err);
  }
  if (!COMMIT.test(commit)) throw new HubError(`${hubUrl} gave no commit id for ${repo}@${revision}`);
  if (revision !== commit) {
    mkdirSync(dirname(join(storage, 'refs', revision)), { recursive: true });
    writeFileSync(join(storage, 'refs', revision), commit);
  }
  const snapshot = join(storage, 'snapshots', commit);
  if (snapshotComplete(snapshot)) return found(commit, 'cache');

  let listing: Map<string, RemoteFile>;
  try {
    listing = new Map();
    for await (const f of hub.listFiles({ ...common, revision: commit })) {
      if (f.type !== 'file') continue;
      const size = f.lfs?.size ?? f.size;
      const etag = f.lfs?.oid ?? f.oid;
      // The blob's file name in the cache: only a hash is acceptable.
      if (!etag || !/^([0-9a-f]{40}|[0-9a-f]{64})$/.test(etag)) continue;
      listing.set(f.path, { path: f.path, size, etag, hash: f.lfs ? { algo: 'sha256', hex: f.lfs.oid } : { algo: 'git-sha1', hex: etag } });
    }
  } catch (err) {
    throw isNetworkError(err) ? unreachable(hubUrl, repo, err) : apiFailure(repo, revision, hubUrl, accessToken !== undefined, 'the file list', err);
  }
  if (!listing.has('config.json')) throw new HubError(`${repo}@${revision} on ${hubUrl} has no config.json; it is not a transformers model folder`);
  if (!listing.has(SINGLE_FILE) && !listing.has(INDEX_FILE)) {
    const others = [...listing.keys()].filter((p) => /\.(bin|pt|pth|gguf|onnx|safetensors|h5|msgpack)$/.test(p));
    throw new HubError(`${repo}@${revision} on ${hubUrl} has no ${SINGLE_FILE} or ${INDEX_FILE}${others.length ? ` (it has ${others.slice(0, 4).join(', ')}${others.length > 4 ? ', …' : ''})` : ''}; only safetensors checkpoints are supported`);
  }

  const fetchFiles = async (names: string[], bar: boolean): Promise<void> => {
    const files = names.map((n) => listing.get(n)!);
    const blob = (f: RemoteFile): string => join(storage, 'blobs', f.etag);
    const todo = files.filter((f) => !existsSync(blob(f)));
    const total = todo.reduce((s, f) => s + f.size, 0);
    const start = todo.reduce((s, f) => s + partialBytes(blob(f), f.size), 0);
    const p = options.progress;
    const progress = bar && p ? createProgress({ label: `downloading ${repo}`, total, unit: 'bytes', start, ...(typeof p === 'object' ? p : {}) }) : null;
    let done = start;
    mkdirSync(join(storage, 'blobs'), { recursive: true });
    mkdirSync(snapshot, { recursive: true });
    for (const f of files) {
      if (!existsSync(blob(f))) {
        let url: string;
        try {
          const info = await hub.fileDownloadInfo({ ...common, path: f.path, revision: commit });
          if (!info) throw new HubError(`${repo}@${revision} on ${hubUrl} lists ${f.path} but it cannot be downloaded`);
          if (info.size !== f.size) throw new HubError(`${repo}/${f.path}: the file list says ${f.size} bytes, the download ${info.size}`);
          url = info.url;
        } catch (err) {
          if (err instanceof HubError) throw err;
          throw isNetworkError(err) ? unreachable(hubUrl, repo, err) : apiFailure(repo, revision, hubUrl, accessToken !== undefined, f.path, err);
        }
        await downloadBlob(blob(f), f, {
          repo, url, accessToken, log,
          onBytes: (n) => { done += n; progress?.update(done); },
        });
      }
      linkIntoSnapshot(blob(f), join(snapshot, f.path));
    }
    progress?.finish();
  };

  const extras = [...listing.keys()].filter((p) => !p.includes('/') && isHfExtraFile(p));
  const weightBytes = (names: string[]): number => names.reduce((s, n) => s + listing.get(n)!.size, 0);
  // transmla.json (a converted folder's record) decides whether an MLA folder is the exact variant.
  await fetchFiles(['config.json', ...(listing.has(RECORD_FILE) ? [RECORD_FILE] : [])], false);
  // Refuse an unsupported model before downloading gigabytes of weights.
  options.checkConfig?.(snapshot);
  await fetchFiles(listing.has(SINGLE_FILE) ? extras : [...extras, INDEX_FILE], false);
  const weights = listing.has(SINGLE_FILE) ? [SINGLE_FILE] : shardsOfIndex(join(snapshot, INDEX_FILE), `${repo}/${INDEX_FILE}`);
  const missing = weights.filter((w) => !listing.has(w));
  if (missing.length > 0) throw new HubError(`${repo}/${INDEX_FILE} names shards the repo does not have: ${missing.slice(0, 3).join(', ')}`);
  log(`fetching ${repo}@${revision} (commit ${commit.slice(0, 12)}): ${weights.length} weight file${weights.length > 1 ? 's' : ''}, ${(weightBytes(weights) / 1e6).toFixed(1)} MB, into ${storage}`);
  await fetchFiles(weights, true);
  return found(commit, 'hub');
}

/** snapshots/<commit>/<file> → ../../blobs/<etag>, as huggingface_hub links them (a copy where symlinks are refused). */
function linkIntoSnapshot(blob: string, pointer: string): void {
  if (existsSync(pointer)) return;
  mkdirSync(dirname(pointer), { recursive: true });
  try {
    symlinkSync(relative(dirname(pointer), blob), pointer);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    copyFileSync(blob, pointer);
  }
}

/** Shard file names of an index; only plain top-level .safetensors names are accepted. */
function shardsOfIndex(indexPath: string, where: string): string[] {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (err) {
    throw new HubError(`${where}: not valid JSON: ${(err as Error).message}`);
  }
  const wm = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) throw new HubError(`${where}: no weight_map object`);
  const files = new Set<string>();
  for (const f of Object.values(wm)) {
    if (typeof f !== 'string' || f === '' || f.includes('/') || f.includes('\\') || f === '.' || f === '..' || !f.endsWith('.safetensors')) {
      throw new HubError(`${where} names shard ${JSON.stringify(f)}; expected a plain .safetensors file name`);
    }
    files.add(f);
  }
  return [...files];
}
