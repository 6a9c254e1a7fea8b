// A local stand-in for the Hugging Face Hub, on 127.0.0.1, serving the endpoints @huggingface/hub
// calls (read from node_modules/@huggingface/hub/src/lib: model-info.ts, list-files.ts,
// file-download-info.ts) with the Hub's answers: model info with the commit sha, the tree
// listing (git blob ids, LFS sha256 and sizes for *.safetensors), and `resolve` downloads that
// redirect LFS files to a CDN path, honour Range requests and send ETag/X-Repo-Commit headers.
// Errors use the Hub's status codes, JSON bodies and X-Error-Code headers. Faults can be armed:
// drop the connection once mid-file, ignore Range, corrupt a file's bytes.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

export interface FakeRepo {
  /** Commit sha → folder whose top-level files are the repo at that commit. */
  commits: Record<string, string>;
  /** Branch/tag → commit sha. */
  refs: Record<string, string>;
  /** When set, requests must carry `Authorization: Bearer <token>`. */
  token?: string;
}

export interface FakeHubRequest {
  method: string;
  path: string;
  range: string | null;
  authorization: string | null;
}

export interface FakeHub {
  url: string;
  server: Server;
  requests: FakeHubRequest[];
  /** The next download of `file` sends `bytes` bytes, then the connection is cut. */
  dropOnce(file: string, bytes: number): void;
  /** The next download of `file` (not the size probe) answers this HTTP status. */
  failOnce(file: string, status: number): void;
  /** Downloads answer 200 with the whole file even when a Range is asked for (a proxy's quirk). */
  ignoreRange: boolean;
  /** Files whose content is served with one byte flipped (the listing keeps the true hash). */
  corrupt: Set<string>;
  close(): Promise<void>;
}

export function gitBlobId(content: Buffer): string {
  return createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');
}

export function sha256(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}

const isLfs = (path: string): boolean => path.endsWith('.safetensors') || path.endsWith('.bin') || path.endsWith('.gguf') || path.endsWith('.onnx');

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers }).end(JSON.stringify(body));
}

export async function startFakeHub(repos: Record<string, FakeRepo>): Promise<FakeHub> {
  const requests: FakeHubRequest[] = [];
  const drops = new Map<string, number>();
  const failures = new Map<string, number>();
  const blobs = new Map<string, Buffer>();
  const hub: FakeHub = {
    url: '', server: null as unknown as Server, requests, ignoreRange: false, corrupt: new Set(),
    dropOnce: (file, bytes) => { drops.set(file, bytes); },
    failOnce: (file, status) => { failures.set(file, status); },
    close: () => new Promise((res) => { hub.server.closeAllConnections(); hub.server.close(() => res()); }),
  };

  const serveBytes = (req: IncomingMessage, res: ServerResponse, file: string, body: Buffer, headers: Record<string, string>): void => {
    if (hub.corrupt.has(file)) {
      body = Buffer.from(body);
      body[body.length >> 1] ^= 0xff;
    }
    const fail = failures.get(file);
    if (fail !== undefined && req.headers.range !== 'bytes=0-0') {
      failures.delete(file);
      return json(res, fail, { error: 'Service Unavailable' });
    }
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let status = 200, start = 0, end = body.length - 1;
    // (The client's one-byte size probe is always answered: it cannot work without it.)
    if (m && (!hub.ignoreRange || req.headers.range === 'bytes=0-0')) {
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), body.length - 1) : body.length - 1;
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${body.length}`;
    }
    const part = body.subarray(start, end + 1);
    res.writeHead(status, { 'accept-ranges': 'bytes', 'content-length': String(part.length), 'content-type': 'application/octet-stream', ...headers });
    const drop = drops.get(file);
    if (drop !== undefined && part.length > drop) {
      drops.delete(file);
      // Part of the body, then the socket goes: the client sees the connection end early.
      res.write(part.subarray(0, drop), () => res.socket?.destroy());
      return;
    }
    res.end(part);
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const u = new URL(req.url ?? '/', 'http://x');
    const path = decodeURIComponent(u.pathname);
    requests.push({ method: req.method ?? 'GET', path, range: req.headers.range ?? null, authorization: req.headers.authorization ?? null });

    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(path);
    if (cdn) {
      const body = blobs.get(cdn[1]!);
      if (!body) return json(res, 404, { error: 'not found' });
      return serveBytes(req, res, u.searchParams.get('file') ?? '', body, { etag: `"${cdn[1]}"` });
    }
    const info = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(path);
    const tree = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)$/.exec(path);
    const file = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    const name = info?.[1] ?? tree?.[1] ?? file?.[1];
    const repo = name ? repos[name] : undefined;
    if (!repo || (repo.token && req.headers.authorization !== `Bearer ${repo.token}`)) {
      // The Hub answers 401 for private repos and for missing ones alike when the caller is anonymous.
      if (!repo && !req.headers.authorization) {
        return json(res, 401, { error: 'Invalid username or password.' }, { 'x-error-code': 'RepoNotFound' });
      }
      if (!repo) return json(res, 404, { error: 'Repository not found' }, { 'x-error-code': 'RepoNotFound' });
      return json(res, 401, { error: 'Invalid credentials in Authorization header' });
    }
    const rev = info?.[2] ?? tree?.[2] ?? file?.[2] ?? 'main';
    const sha = repo.commits[rev] ? rev : repo.refs[rev];
    if (!sha) return json(res, 404, { error: `Invalid rev id: ${rev}` }, { 'x-error-code': 'RevisionNotFound' });
    const dir = repo.commits[sha]!;
    if (info) {
      return json(res, 200, { _id: `id-${name}`, id: name, sha, private: repo.token !== undefined, gated: false, downloads: 0, likes: 0, lastModified: '2026-01-01T00:00:00.000Z', pipeline_tag: 'text-generation' });
    }
    if (tree) {
      const entries = readdirSync(dir).filter((f) => statSync(join(dir, f)).isFile()).sort().map((f) => {
        const body = readFileSync(join(dir, f));
        if (!isLfs(f)) return { type: 'file', oid: gitBlobId(body), size: body.length, path: f };
        const oid = sha256(body);
        const pointer = Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize ${body.length}\n`);
        return { type: 'file', oid: gitBlobId(pointer), size: body.length, path: f, lfs: { oid, size: body.length, pointerSize: pointer.length } };
      });
      return json(res, 200, entries);
    }
    const rel = file![3]!;
    let body: Buffer;
    try {
      body = readFileSync(join(dir, rel));
    } catch {
      return json(res, 404, { error: 'Entry not found' }, { 'x-error-code': 'EntryNotFound' });
    }
    if (isLfs(rel)) {
      // LFS files live on a CDN: the Hub redirects there (same origin here, so the token may follow).
      const oid = sha256(body);
      blobs.set(oid, body);
      res.writeHead(302, { location: `/cdn/${oid}?file=${encodeURIComponent(rel)}`, 'x-linked-etag': `"${oid}"`, 'x-linked-size': String(body.length), 'x-repo-commit': sha }).end();
      return;
    }
    serveBytes(req, res, rel, body, { etag: `"${gitBlobId(body)}"`, 'x-repo-commit': sha });
  };

  hub.server = createServer(handle);
  await new Promise<void>((done) => hub.server.listen(0, '127.0.0.1', done));
  hub.url = `http://127.0.0.1:${(hub.server.address() as AddressInfo).port}`;
  return hub;
}

/** A free local port with nothing listening: connections are refused at once. */
export async function deadEndpoint(): Promise<string> {
  const srv = createServer();
  await new Promise<void>((done) => srv.listen(0, '127.0.0.1', done));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((done) => srv.close(() => done()));
  return `http://127.0.0.1:${port}`;
}
