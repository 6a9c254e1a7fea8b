import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { createServer, type AddressInfo } from 'node:net';
import { join, relative } from 'node:path';
import { after, describe, test } from 'node:test';
import { openCheckpoint, writeCheckpoint } from '../src/io/checkpoint.js';
import { HubError, resolveModel } from '../src/io/hub.js';
import { mustAsset, skipUnlessAsset } from './helpers/assets.js';
import { parseConfig } from '../src/arch/registry.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-hub-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
// A local port nobody listens on: connections are refused at once, so the error path is fast and
// offline. (Port 1 itself is on fetch's blocked-port list and fails with "bad port" instead.)
const DEAD_HUB = await new Promise<string>((done) => {
  const srv = createServer();
  srv.listen(0, '127.0.0.1', () => {
    const { port } = srv.address() as AddressInfo;
    srv.close(() => done(`http://127.0.0.1:${port}`));
  });
});

describe('resolveModel', () => {
  test('a local folder is used as is (absolute or relative)', { skip: skipUnlessAsset('models/kjv-mha') }, async () => {
    const dir = mustAsset('models/kjv-mha');
    assert.deepEqual(await resolveModel(dir, { hubUrl: DEAD_HUB }), { dir, origin: 'local', repo: null });
    assert.equal((await resolveModel(relative(process.cwd(), dir), { hubUrl: DEAD_HUB })).dir, dir);
  });

  test('bad local paths are named', async () => {
    await assert.rejects(resolveModel('./no/such/folder'), /model \.\/no\/such\/folder is neither an existing folder nor a Hugging Face Hub id/);
    const noConfig = join(tmp, 'noconfig');
    mkdirSync(noConfig);
    await assert.rejects(resolveModel(noConfig), new RegExp(`model folder ${noConfig} has no config\\.json`));
    writeFileSync(join(tmp, 'afile'), '');
    await assert.rejects(resolveModel(join(tmp, 'afile')), /is not a folder/);
    await assert.rejects(resolveModel('a/b/c', { hubUrl: DEAD_HUB }), /neither an existing folder nor a Hugging Face Hub id/);
  });

  test('an unreachable Hub gives a clear, fast error and leaves no cache folder', async () => {
    const cacheDir = join(tmp, 'cache');
    const t0 = Date.now();
    await assert.rejects(resolveModel('someone/tiny-llama', { cacheDir, hubUrl: DEAD_HUB }), (e: unknown) => {
      assert.ok(e instanceof HubError, String(e));
      assert.equal(e.message, `could not reach the Hugging Face Hub (${DEAD_HUB}) to download someone/tiny-llama: ECONNREFUSED; pass a local folder`);
      return true;
    });
    assert.ok(Date.now() - t0 < 5000, 'error path must be fast');
    assert.ok(!existsSync(join(cacheDir, 'someone--tiny-llama')));
    assert.deepEqual(existsSync(cacheDir) ? readdirSync(cacheDir) : [], []);
  });

  test('a completed earlier download is reused without the network', async () => {
    const cacheDir = join(tmp, 'cache2');
    const dir = join(cacheDir, 'someone--cached');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), '{}');
    writeFileSync(join(dir, '.transmla-download.json'), '{}');
    assert.deepEqual(await resolveModel('someone/cached', { cacheDir, hubUrl: DEAD_HUB }), { dir, origin: 'cache', repo: 'someone/cached' });
    // Another revision is a different cache folder, so it needs the (dead) Hub.
    await assert.rejects(resolveModel('someone/cached', { cacheDir, hubUrl: DEAD_HUB, revision: 'v2' }), /could not reach the Hugging Face Hub/);
  });
});

/**
 * A minimal offline stand-in for the Hub's two endpoints the client uses: the tree listing and
 * `resolve` downloads (with the Range probe). Repos map `owner/name` to a local folder; `private`
 * answers 401.
 */
async function fakeHub(repos: Record<string, string>): Promise<{ url: string; server: Server; requests: string[] }> {
  const requests: string[] = [];
  const server = createHttpServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    requests.push(u.pathname);
    const tree = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/main$/.exec(u.pathname);
    const file = /^\/([^/]+\/[^/]+)\/resolve\/main\/(.+)$/.exec(u.pathname);
    const repo = tree?.[1] ?? file?.[1];
    if (repo === 'someone/private') {
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'Invalid credentials' }));
      return;
    }
    const dir = repo ? repos[repo] : undefined;
    if (!dir) {
      res.writeHead(404, { 'content-type': 'application/json', 'x-error-code': 'RepoNotFound' }).end(JSON.stringify({ error: 'Repository not found' }));
      return;
    }
    if (tree) {
      const list = readdirSync(dir).map((f) => ({ type: 'file', path: f, size: statSync(join(dir, f)).size, oid: 'x' }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(list));
      return;
    }
    const path = join(dir, decodeURIComponent(file![2]!));
    if (!existsSync(path)) {
      res.writeHead(404, { 'x-error-code': 'EntryNotFound' }).end();
      return;
    }
    const body = readFileSync(path);
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (range) {
      const a = Number(range[1]);
      const b = Math.min(Number(range[2]), body.length - 1);
      res.writeHead(206, { etag: '"e"', 'content-range': `bytes ${a}-${b}/${body.length}` }).end(body.subarray(a, b + 1));
    } else {
      res.writeHead(200, { etag: '"e"', 'content-length': body.length }).end(body);
    }
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, requests };
}

describe('resolveModel downloads from a (local, fake) Hub', { skip: skipUnlessAsset('models/TinyStories-656K-bf16') }, () => {
  test('sharded repo: downloads only the needed files, atomically, then reuses the cache', async () => {
    const src = mustAsset('models/TinyStories-656K-bf16');
    // A sharded copy of the model plus files that must not be fetched.
    const repoDir = join(tmp, 'repo');
    mkdirSync(repoDir);
    const ck = openCheckpoint(src);
    await writeCheckpoint(repoDir, ck.names().map((name) => ({ name, tensor: ck.get(name) })), { maxShardBytes: 600_000 });
    for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'README.md']) copyFileSync(join(src, f), join(repoDir, f));
    writeFileSync(join(repoDir, 'consolidated.safetensors'), 'not wanted');
    writeFileSync(join(repoDir, 'training_args.bin'), 'not wanted');

    const hub = await fakeHub({ 'someone/tiny': repoDir });
    try {
      const cacheDir = join(tmp, 'hubcache');
      const lines: string[] = [];
      const r = await resolveModel('someone/tiny', { cacheDir, hubUrl: hub.url, log: (l) => lines.push(l) });
      assert.deepEqual(r, { dir: join(cacheDir, 'someone--tiny'), origin: 'hub', repo: 'someone/tiny' });
      assert.deepEqual(readdirSync(cacheDir), ['someone--tiny'], 'no temp folders left');
      const got = readdirSync(r.dir).sort();
      assert.deepEqual(got, ['.transmla-download.json', 'config.json', 'generation_config.json', 'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors', 'model.safetensors.index.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
      for (const f of got.filter((f) => !f.startsWith('.'))) assert.ok(readFileSync(join(r.dir, f)).equals(readFileSync(join(repoDir, f))), f);
      assert.equal(lines.length, got.length - 1);
      const back = openCheckpoint(r.dir);
      for (const n of ck.names()) assert.ok(Buffer.from(back.getBytes(n)).equals(Buffer.from(ck.getBytes(n))), n);
      back.close();

      const before = hub.requests.length;
      assert.equal((await resolveModel('someone/tiny', { cacheDir, hubUrl: hub.url })).origin, 'cache');
      assert.equal(hub.requests.length, before, 'cache hit makes no request');
    } finally {
      ck.close();
      hub.server.close();
    }
  });

  test('refused, missing and unsupported repos are explained; nothing is cached', async () => {
    const bad = join(tmp, 'qwen3');
    mkdirSync(bad);
    writeFileSync(join(bad, 'config.json'), JSON.stringify({ model_type: 'qwen3', architectures: ['Qwen3ForCausalLM'] }));
    writeFileSync(join(bad, 'model.safetensors'), 'x'.repeat(100));
    const noWeights = join(tmp, 'noweights');
    mkdirSync(noWeights);
    writeFileSync(join(noWeights, 'config.json'), '{}');
    writeFileSync(join(noWeights, 'pytorch_model.bin'), '');
    const hub = await fakeHub({ 'someone/qwen3': bad, 'someone/bin': noWeights });
    const cacheDir = join(tmp, 'hubcache2');
    try {
      await assert.rejects(resolveModel('someone/private', { cacheDir, hubUrl: hub.url }), /refused access to someone\/private \(HTTP 401\).*HF_TOKEN/);
      await assert.rejects(resolveModel('someone/absent', { cacheDir, hubUrl: hub.url }), /someone\/absent was not found on the Hugging Face Hub/);
      await assert.rejects(resolveModel('someone/bin', { cacheDir, hubUrl: hub.url, checkConfig: parseConfig }), /has no model\.safetensors or model\.safetensors\.index\.json; only safetensors/);
      await assert.rejects(resolveModel('someone/qwen3', { cacheDir, hubUrl: hub.url, checkConfig: parseConfig }), /someone\/qwen3\/config\.json: architectures \["Qwen3ForCausalLM"\] is not supported/);
      assert.ok(!hub.requests.some((p) => p.endsWith('/model.safetensors') && p.includes('qwen3')), 'weights of an unsupported model are not downloaded');
      assert.deepEqual(existsSync(cacheDir) ? readdirSync(cacheDir) : [], []);
    } finally {
      hub.server.close();
    }
  });
});
