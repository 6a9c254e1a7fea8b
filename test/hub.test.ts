// resolveModel against a fake Hub on 127.0.0.1 (test/helpers/fake-hub.ts): the real
// @huggingface/hub client and our downloader over a real socket, into a real cache folder.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openCheckpoint, writeCheckpoint } from '../src/io/checkpoint.js';
import { HubError, parseHubId, resolveModel, type ResolveModelOptions } from '../src/io/hub.js';
import { readConfig } from '../src/arch/registry.js';

const checkModelConfig = (dir: string): void => { readConfig(dir); };
import { mustAsset, skipUnlessAsset } from './helpers/assets.js';
import { deadEndpoint, sha256, startFakeHub, type FakeHub } from './helpers/fake-hub.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-hub-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const commitId = (s: string): string => createHash('sha1').update(s).digest('hex');
const C1 = commitId('v1'), C2 = commitId('main'), CP = commitId('private');
const SRC = 'models/TinyStories-656K-bf16';
const FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];

let cacheN = 0;
const freshCache = (): string => join(tmp, `cache-${++cacheN}`);
const resourcePaths = (hub: FakeHub): string[] => hub.requests.filter((r) => !r.path.startsWith('/api/')).map((r) => r.path);

test('Hub ids and local paths are told apart', async () => {
  assert.deepEqual(parseHubId('owner/name'), { repo: 'owner/name', revision: null });
  assert.deepEqual(parseHubId('owner/name@v1.0'), { repo: 'owner/name', revision: 'v1.0' });
  for (const s of ['./x/y', '/abs/x', 'a/b/c', 'name', 'a/../b', 'a--b/c', 'owner/name@']) assert.equal(parseHubId(s), null, s);
  await assert.rejects(resolveModel('./no/such/folder'), /model \.\/no\/such\/folder does not exist \(it is neither a local path nor a Hugging Face Hub id owner\/name\)/);
  // Existing paths are returned as they are, whatever they contain (the loaders check them).
  writeFileSync(join(tmp, 'afile.gguf'), '');
  assert.deepEqual(await resolveModel(join(tmp, 'afile.gguf')), { dir: join(tmp, 'afile.gguf'), origin: 'local', repo: null, revision: null, commit: null });
});

test('an unreachable endpoint gives one clear line, fast, and leaves the cache alone', async () => {
  const dead = await deadEndpoint();
  const cacheDir = freshCache();
  const t0 = Date.now();
  await assert.rejects(resolveModel('someone/tiny-llama', { cacheDir, hubUrl: dead }), (e: unknown) => {
    assert.ok(e instanceof HubError, String(e));
    assert.equal(e.message, `could not reach ${dead} for someone/tiny-llama (ECONNREFUSED); pass a local folder or set HF_HUB_OFFLINE=1`);
    return true;
  });
  assert.ok(Date.now() - t0 < 5000, 'the error path must be fast');
  assert.equal(existsSync(cacheDir), false);
});

describe('resolveModel with a fake Hub', { skip: skipUnlessAsset(SRC) }, () => {
  let hub: FakeHub;
  const v1 = join(tmp, 'repo-v1'), v2 = join(tmp, 'repo-v2'), gpt2 = join(tmp, 'repo-gpt2'), binOnly = join(tmp, 'repo-bin');
  const opts = (o: ResolveModelOptions = {}): ResolveModelOptions => ({ hubUrl: hub.url, checkConfig: checkModelConfig, offline: false, accessToken: '', ...o });

  before(async () => {
    const src = mustAsset(SRC);
    // v1: the folder as is (one model.safetensors). main: the same weights in three shards, a
    // changed generation config, and files a model does not need, which must not be fetched.
    mkdirSync(v1);
    for (const f of [...FILES, 'model.safetensors']) copyFileSync(join(src, f), join(v1, f));
    mkdirSync(v2);
    const ck = openCheckpoint(src);
    await writeCheckpoint(v2, ck.names().map((name) => ({ name, tensor: ck.get(name) })), { maxShardBytes: 600_000 });
    ck.close();
    for (const f of FILES) copyFileSync(join(src, f), join(v2, f));
    writeFileSync(join(v2, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: 2, max_new_tokens: 7 }));
    for (const f of ['README.md', 'pytorch_model.bin', 'consolidated.safetensors', 'model.onnx', 'model-q4.gguf', 'training_args.bin']) writeFileSync(join(v2, f), `not wanted: ${f}`);
    mkdirSync(gpt2);
    writeFileSync(join(gpt2, 'config.json'), JSON.stringify({ model_type: 'gpt2', architectures: ['GPT2LMHeadModel'] }));
    writeFileSync(join(gpt2, 'model.safetensors'), 'x'.repeat(1000));
    mkdirSync(binOnly);
    copyFileSync(join(src, 'config.json'), join(binOnly, 'config.json'));
    writeFileSync(join(binOnly, 'pytorch_model.bin'), 'weights');
    hub = await startFakeHub({
      'someone/tiny': { commits: { [C1]: v1, [C2]: v2 }, refs: { main: C2, v1: C1 } },
      'someone/private': { commits: { [CP]: v1 }, refs: { main: CP }, token: 'hf_good' },
      'someone/gpt2': { commits: { [C1]: gpt2 }, refs: { main: C1 } },
      'someone/bin': { commits: { [C1]: binOnly }, refs: { main: C1 } },
    });
  });
  after(() => hub.close());

  test('download: only the needed files, in the Hugging Face cache layout; then a cache hit', async () => {
    const cacheDir = freshCache();
    const lines: string[] = [];
    const r = await resolveModel('someone/tiny', opts({ cacheDir, log: (l) => lines.push(l) }));
    const storage = join(cacheDir, 'models--someone--tiny');
    assert.deepEqual(r, { dir: join(storage, 'snapshots', C2), origin: 'hub', repo: 'someone/tiny', revision: 'main', commit: C2 });
    assert.equal(readFileSync(join(storage, 'refs', 'main'), 'utf8'), C2);
    const want = [...FILES, 'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors', 'model.safetensors.index.json'].sort();
    assert.deepEqual(readdirSync(r.dir).sort(), want);
    for (const f of want) {
      // Each file is a relative symlink to its content-addressed blob (sha256 for LFS files).
      assert.ok(lstatSync(join(r.dir, f)).isSymbolicLink(), f);
      assert.ok(readFileSync(join(r.dir, f)).equals(readFileSync(join(v2, f))), f);
    }
    assert.equal(readlinkSync(join(r.dir, 'model-00001-of-00003.safetensors')), join('..', '..', 'blobs', sha256(readFileSync(join(v2, 'model-00001-of-00003.safetensors')))));
    assert.ok(!readdirSync(join(storage, 'blobs')).some((b) => b.endsWith('.incomplete') || b.endsWith('.lock')), 'no partial or lock files left');
    const fetched = resourcePaths(hub);
    for (const f of ['README.md', 'pytorch_model.bin', 'consolidated.safetensors', 'model.onnx', 'model-q4.gguf', 'training_args.bin']) {
      assert.ok(!fetched.some((p) => p.endsWith(`/${f}`)), `${f} must not be downloaded`);
    }
    assert.ok(lines.some((l) => /fetching someone\/tiny@main \(commit [0-9a-f]{12}\): 3 weight files/.test(l)), lines.join('\n'));
    // The progress bar counts bytes and shows the rate (here drawn at once, as plain lines).
    const drawn: string[] = [];
    const stream = { isTTY: false, write: (s: string) => { drawn.push(s); return true; } } as unknown as NodeJS.WriteStream;
    await resolveModel('someone/tiny', opts({ cacheDir: freshCache(), progress: { stream, delayMs: 0 } }));
    assert.match(drawn.at(-1)!, /^downloading someone\/tiny: 1\.\d\d MB\/1\.\d\d MB 100% [\d.]+ [kMG]?B\/s, [\d.]+s\n$/);
    const back = openCheckpoint(r.dir);
    assert.equal(back.names().length, openCheckpoint(mustAsset(SRC)).names().length);
    back.close();

    const before = hub.requests.length;
    const again = await resolveModel('someone/tiny', opts({ cacheDir }));
    assert.equal(again.origin, 'cache');
    assert.equal(again.dir, r.dir);
    assert.deepEqual(hub.requests.slice(before).map((q) => q.path), [`/api/models/someone/tiny/revision/main`], 'a cache hit asks only which commit main is');
  });

  test('--revision pins a tag or a commit; a cached commit needs no request at all', async () => {
    const cacheDir = freshCache();
    const r = await resolveModel('someone/tiny', opts({ cacheDir, revision: 'v1' }));
    assert.equal(r.commit, C1);
    assert.deepEqual(readdirSync(r.dir).sort(), [...FILES, 'model.safetensors'].sort());
    assert.ok(readFileSync(join(r.dir, 'generation_config.json')).equals(readFileSync(join(v1, 'generation_config.json'))));
    const before = hub.requests.length;
    const pinned = await resolveModel(`someone/tiny@${C1}`, opts({ cacheDir }));
    assert.deepEqual([pinned.dir, pinned.origin], [r.dir, 'cache']);
    assert.equal(hub.requests.length, before, 'a cached commit is immutable: no request');
    await assert.rejects(resolveModel('someone/tiny@v1', opts({ cacheDir, revision: 'main' })), /names revision v1 but --revision says main/);
    await assert.rejects(resolveModel('someone/tiny', opts({ cacheDir, revision: '../../escape' })), /revision "\.\.\/\.\.\/escape" is not a branch, tag or commit name/);
    await assert.rejects(resolveModel('someone/tiny', opts({ cacheDir, revision: 'v9' })), /someone\/tiny on http:\/\/127\.0\.0\.1:\d+ has no revision "v9"/);
  });

  test('offline (HF_HUB_OFFLINE): the cache only, and a clear error when the model is not cached', async () => {
    const cacheDir = freshCache();
    await resolveModel('someone/tiny', opts({ cacheDir }));
    const before = hub.requests.length;
    const dead = await deadEndpoint();
    const r = await resolveModel('someone/tiny', opts({ cacheDir, offline: true, hubUrl: dead }));
    assert.deepEqual([r.origin, r.commit], ['cache', C2]);
    assert.equal(hub.requests.length, before);
    await assert.rejects(resolveModel('someone/tiny', opts({ cacheDir, offline: true, revision: 'v1' })),
      new RegExp(`^HubError: HF_HUB_OFFLINE is set and someone/tiny@v1 is not in the cache \\(${cacheDir}/models--someone--tiny\\); download it once without HF_HUB_OFFLINE, or pass a local folder$`));
    // Without the network but not offline: the cached snapshot of the ref is used, with a note.
    const notes: string[] = [];
    const fallback = await resolveModel('someone/tiny', opts({ cacheDir, hubUrl: dead, log: (l) => notes.push(l) }));
    assert.equal(fallback.commit, C2);
    assert.match(notes.join('\n'), /could not reach .* \(ECONNREFUSED\); using the cached snapshot [0-9a-f]{12} of someone\/tiny@main/);
  });

  test('a dropped connection is resumed with a Range request; so is a partial file from an earlier run', async () => {
    const cacheDir = freshCache();
    const shard = 'model-00002-of-00003.safetensors';
    const body = readFileSync(join(v2, shard));
    hub.dropOnce(shard, 100_000);
    const start = hub.requests.length;
    const lines: string[] = [];
    const r = await resolveModel('someone/tiny', opts({ cacheDir, log: (l) => lines.push(l) }));
    assert.ok(readFileSync(join(r.dir, shard)).equals(body));
    assert.match(lines.join('\n'), new RegExp(`download of someone/tiny/${shard} interrupted \\(.*\\); resuming at byte 100000 \\(attempt 2 of 5\\)`));
    const cdn = hub.requests.slice(start).filter((q) => q.path === `/cdn/${sha256(body)}` && q.range !== 'bytes=0-0');
    assert.deepEqual(cdn.map((q) => q.range), [null, 'bytes=100000-']);

    // An earlier run stopped (Ctrl-C) 1234 bytes into a blob: the next run continues it.
    const cache2 = freshCache();
    const blobs = join(cache2, 'models--someone--tiny', 'blobs');
    mkdirSync(blobs, { recursive: true });
    writeFileSync(join(blobs, `${sha256(body)}.incomplete`), body.subarray(0, 1234));
    const n = hub.requests.length;
    const r2 = await resolveModel('someone/tiny', opts({ cacheDir: cache2, log: (l) => lines.push(l) }));
    assert.ok(readFileSync(join(r2.dir, shard)).equals(body));
    assert.deepEqual(hub.requests.slice(n).filter((q) => q.path === `/cdn/${sha256(body)}` && q.range !== 'bytes=0-0').map((q) => q.range), ['bytes=1234-']);
    assert.match(lines.join('\n'), new RegExp(`resuming someone/tiny/${shard} at byte 1234 of ${body.length}`));

    // A 503 from the CDN is retried; a lock left by a process that is gone is taken over.
    const cache4 = freshCache();
    const blobs4 = join(cache4, 'models--someone--tiny', 'blobs');
    mkdirSync(blobs4, { recursive: true });
    const gone = spawnSync(process.execPath, ['-e', '']).pid!;
    writeFileSync(join(blobs4, `${sha256(body)}.lock`), String(gone));
    hub.failOnce(shard, 503);
    const notes: string[] = [];
    const r4 = await resolveModel('someone/tiny', opts({ cacheDir: cache4, log: (l) => notes.push(l) }));
    assert.ok(readFileSync(join(r4.dir, shard)).equals(body));
    assert.match(notes.join('\n'), new RegExp(`download of someone/tiny/${shard} interrupted \\(HTTP 503\\); resuming at byte 0 \\(attempt 2 of 5\\)`));
    assert.ok(!existsSync(join(blobs4, `${sha256(body)}.lock`)));

    // A server that ignores Range: the partial file is restarted, not appended to.
    const cache3 = freshCache();
    mkdirSync(join(cache3, 'models--someone--tiny', 'blobs'), { recursive: true });
    writeFileSync(join(cache3, 'models--someone--tiny', 'blobs', `${sha256(body)}.incomplete`), body.subarray(0, 999));
    hub.ignoreRange = true;
    try {
      const r3 = await resolveModel('someone/tiny', opts({ cacheDir: cache3 }));
      assert.ok(readFileSync(join(r3.dir, shard)).equals(body));
    } finally {
      hub.ignoreRange = false;
    }
  });

  test('a corrupted download fails its hash check and leaves nothing behind', async () => {
    const cacheDir = freshCache();
    const shard = 'model-00001-of-00003.safetensors';
    hub.corrupt.add(shard);
    try {
      await assert.rejects(resolveModel('someone/tiny', opts({ cacheDir })), new RegExp(`someone/tiny/${shard}: the downloaded file does not match its sha256 [0-9a-f]{64} \\(got [0-9a-f]{64}\\); the partial file was removed, run again`));
    } finally {
      hub.corrupt.clear();
    }
    const blobs = readdirSync(join(cacheDir, 'models--someone--tiny', 'blobs'));
    assert.ok(!blobs.includes(sha256(readFileSync(join(v2, shard)))));
    assert.ok(!blobs.some((b) => b.endsWith('.incomplete') || b.endsWith('.lock')));
    // The next run starts that file again and completes.
    assert.equal((await resolveModel('someone/tiny', opts({ cacheDir }))).origin, 'hub');
  });

  test('401: without a token, with a refused token, and with a good one', async () => {
    const cacheDir = freshCache();
    await assert.rejects(resolveModel('someone/private', opts({ cacheDir })),
      /refused access to someone\/private \(HTTP 401\): it does not exist, or it is private or gated — set HF_TOKEN to a token with access, or pass a local folder/);
    await assert.rejects(resolveModel('someone/private', opts({ cacheDir, accessToken: 'hf_bad' })),
      /refused the token in HF_TOKEN for someone\/private \(HTTP 401\): check that it is valid and has access/);
    const n = hub.requests.length;
    const r = await resolveModel('someone/private', opts({ cacheDir, accessToken: 'hf_good' }));
    assert.equal(r.commit, CP);
    assert.ok(hub.requests.slice(n).every((q) => q.authorization === 'Bearer hf_good'), 'every request carries the token');
    await assert.rejects(resolveModel('someone/absent', opts({ cacheDir, accessToken: 'hf_good' })), /no local file or folder someone\/absent, and http:\/\/127\.0\.0\.1:\d+ has no model someone\/absent \(HTTP 404\)/);
  });

  test('unsupported models are refused before their weights are fetched', async () => {
    const cacheDir = freshCache();
    await assert.rejects(resolveModel('someone/gpt2', opts({ cacheDir })), /config\.json: .*GPT2LMHeadModel|gpt2/);
    assert.ok(!resourcePaths(hub).some((p) => p.includes('someone/gpt2') && p.endsWith('model.safetensors')));
    await assert.rejects(resolveModel('someone/bin', opts({ cacheDir })), /someone\/bin@main on .* has no model\.safetensors or model\.safetensors\.index\.json \(it has pytorch_model\.bin\); only safetensors checkpoints are supported/);
  });

  test('a local path always wins over a Hub id of the same name', async () => {
    const cwd = process.cwd();
    const work = join(tmp, 'cwd');
    mkdirSync(join(work, 'someone', 'tiny'), { recursive: true });
    process.chdir(work);
    try {
      const n = hub.requests.length;
      const r = await resolveModel('someone/tiny', opts({ cacheDir: freshCache() }));
      assert.deepEqual([r.origin, r.dir], ['local', join(work, 'someone', 'tiny')]);
      assert.equal(hub.requests.length, n);
    } finally {
      process.chdir(cwd);
    }
  });
});
