// One Hub file into the cache's content-addressed store (blobs/<etag>), resumably. Bytes go to
// blobs/<etag>.incomplete — the name huggingface_hub uses, so either tool continues the other's
// partial file — and a later attempt (after a dropped connection, or in a later run after Ctrl-C)
// continues it with an HTTP Range request. The finished file is checked against the hash the
// repo lists (sha256 for LFS files, the git blob sha1 otherwise) before it is renamed into place,
// so a blob in the cache is always whole.
import { createHash, type Hash } from 'node:crypto';
import { closeSync, createReadStream, existsSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { throwIfInterrupted } from './interrupt.js';

export class HubError extends Error {
  override name = 'HubError';
}

/** A server-side hiccup (HTTP 429 or 5xx) worth another attempt. */
class TransientHttpError extends HubError {
  constructor(message: string, readonly status: number) {
    super(message);
  }
}

export interface RemoteFile {
  /** Path in the repo. */
  path: string;
  size: number;
  /** Blob name in the cache: the LFS sha256, or the git blob id for small files. */
  etag: string;
  hash: { algo: 'sha256' | 'git-sha1'; hex: string };
}

export interface DownloadContext {
  repo: string;
  /** Where the file can be fetched from (the Hub's resolve URL for a fixed commit). */
  url: string;
  accessToken?: string;
  /** Called with every chunk's byte count (progress). */
  onBytes(n: number): void;
  log(line: string): void;
  /** Attempts per file before giving up on a connection that keeps dropping. Default 5. */
  attempts?: number;
}

/** A network failure (the request could be retried), as opposed to an answer from the server. */
export function isNetworkError(err: unknown): boolean {
  return err instanceof TypeError && (err.message === 'fetch failed' || err.message === 'terminated' || /socket|network/i.test(err.message));
}

/** The innermost cause code or message of a fetch failure (ECONNREFUSED, ENOTFOUND, "other side closed"). */
export function networkCause(err: unknown): string {
  let c: unknown = err;
  while (c instanceof Error && c.cause instanceof Error) c = c.cause;
  const e = c as { code?: string; message?: string };
  return e.code ?? e.message ?? String(err);
}

function newHash(f: RemoteFile): Hash {
  if (f.hash.algo === 'sha256') return createHash('sha256');
  // git's object id: sha1 over "blob <size>\0" and the content.
  return createHash('sha1').update(`blob ${f.size}\0`);
}

async function hashPrefix(h: Hash, path: string): Promise<void> {
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A lock whose holder wrote nothing to the partial file for this long is taken over (its pid may have been reused). */
const STALL_MS = 120_000;

/**
 * An exclusive lock file holding our pid, so two processes do not append to the same partial
 * file. A lock whose process is gone (killed), or that stalled, is taken over; a live one is waited for.
 */
async function acquireLock(lock: string, partial: string, what: string, log: (line: string) => void): Promise<() => void> {
  let waited = false;
  for (;;) {
    try {
      const fd = openSync(lock, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(lock, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let pid = NaN;
    try {
      pid = Number(readFileSync(lock, 'utf8'));
    } catch {
      // Released between our two calls: try again.
      continue;
    }
    const touched = Math.max(statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? 0, statSync(partial, { throwIfNoEntry: false })?.mtimeMs ?? 0);
    if (!Number.isInteger(pid) || pid <= 0 || !pidAlive(pid) || Date.now() - touched > STALL_MS) {
      if (Number.isInteger(pid) && pid > 0 && pidAlive(pid)) log(`taking over ${what}: process ${pid} holds its lock but wrote nothing for ${STALL_MS / 1000} s`);
      rmSync(lock, { force: true });
      continue;
    }
    if (!waited) log(`waiting for another process (pid ${pid}) that is downloading ${what}`);
    waited = true;
    await new Promise((res) => setTimeout(res, 500));
    throwIfInterrupted();
  }
}

/** Makes blobPath hold file `f` (no-op when it already does). */
export async function downloadBlob(blobPath: string, f: RemoteFile, ctx: DownloadContext): Promise<void> {
  if (existsSync(blobPath)) return;
  const what = `${ctx.repo}/${f.path}`;
  const release = await acquireLock(`${blobPath}.lock`, `${blobPath}.incomplete`, what, ctx.log);
  try {
    // Another process may have finished it while we waited.
    if (existsSync(blobPath)) return;
    await fetchResumable(blobPath, f, what, ctx);
  } finally {
    release();
  }
}

/** Bytes of a `size`-byte blob a previous attempt left in its partial file (0 when none or unusable). */
export function partialBytes(blobPath: string, size = Infinity): number {
  const n = statSync(`${blobPath}.incomplete`, { throwIfNoEntry: false })?.size ?? 0;
  return n <= size ? n : 0;
}

async function fetchResumable(blobPath: string, f: RemoteFile, what: string, ctx: DownloadContext): Promise<void> {
  const partial = `${blobPath}.incomplete`;
  let have = partialBytes(blobPath);
  if (have > f.size) {
    // Not a prefix of this file (partialBytes callers count it as 0).
    rmSync(partial);
    have = 0;
  }
  const state = { have, hash: newHash(f) };
  if (have > 0) {
    ctx.log(`resuming ${what} at byte ${have} of ${f.size}`);
    await hashPrefix(state.hash, partial);
  }
  const attempts = ctx.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    let failure: string | null = null;
    try {
      await fetchFrom(partial, f, ctx, state);
      if (state.have === f.size) break;
      failure = `the connection closed after byte ${state.have} of ${f.size}`;
    } catch (err) {
      if (!isNetworkError(err) && !(err instanceof TransientHttpError)) throw err;
      failure = err instanceof TransientHttpError ? `HTTP ${err.status}` : networkCause(err);
    }
    if (attempt >= attempts) throw new HubError(`download of ${what} failed after ${attempt} attempts (${failure}); run again to resume from byte ${state.have}`);
    ctx.log(`download of ${what} interrupted (${failure}); resuming at byte ${state.have} (attempt ${attempt + 1} of ${attempts})`);
    await new Promise((res) => setTimeout(res, Math.min(8000, 250 * 2 ** attempt)));
    throwIfInterrupted();
  }
  const got = state.hash.digest('hex');
  if (got !== f.hash.hex) {
    rmSync(partial, { force: true });
    throw new HubError(`${what}: the downloaded file does not match its ${f.hash.algo} ${f.hash.hex} (got ${got}); the partial file was removed, run again`);
  }
  renameSync(partial, blobPath);
}

/** One request for the bytes from state.have on, appended to `partial` (state follows the bytes written). */
async function fetchFrom(partial: string, f: RemoteFile, ctx: DownloadContext, state: { have: number; hash: Hash }): Promise<void> {
  const headers: Record<string, string> = {};
  if (ctx.accessToken) headers.Authorization = `Bearer ${ctx.accessToken}`;
  if (state.have > 0) headers.Range = `bytes=${state.have}-`;
  const res = await fetch(ctx.url, { headers });
  if (!res.ok) {
    await res.body?.cancel();
    const msg = `${ctx.repo}/${f.path}: the Hub answered HTTP ${res.status} to the download request`;
    throw res.status === 429 || res.status >= 500 ? new TransientHttpError(msg, res.status) : new HubError(msg);
  }
  if (state.have > 0 && res.status !== 206) {
    // The server ignored the Range request: the body starts at byte 0 again.
    ctx.onBytes(-state.have);
    state.have = 0;
    state.hash = newHash(f);
  } else if (state.have > 0) {
    const start = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1];
    if (Number(start) !== state.have) {
      await res.body?.cancel();
      throw new HubError(`${ctx.repo}/${f.path}: asked for the bytes from ${state.have} on, the Hub sent ${res.headers.get('content-range') ?? 'no Content-Range'}`);
    }
  }
  const fh = await open(partial, state.have > 0 ? 'a' : 'w');
  try {
    if (!res.body) return;
    for await (const chunk of res.body) {
      const buf = chunk as Uint8Array;
      if (state.have + buf.length > f.size) throw new HubError(`${ctx.repo}/${f.path}: the Hub sent more than the ${f.size} bytes it lists`);
      await fh.write(buf);
      state.hash.update(buf);
      state.have += buf.length;
      ctx.onBytes(buf.length);
      throwIfInterrupted();
    }
  } finally {
    await fh.close();
  }
}
