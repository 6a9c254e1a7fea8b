// CLI basics (version, help, exit codes, usage errors) and Hub ids for every command that takes a
// <model>, through runCli in-process (the dispatcher main.ts runs), plus one real process.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { commands } from '../src/cli/commands.js';
import { runCli } from '../src/cli/run.js';
import { mustAsset, REPO_ROOT, skipUnlessAsset } from './helpers/assets.js';
import { capture } from './helpers/capture.js';
import { startFakeHub, type FakeHub } from './helpers/fake-hub.js';
import { randomLlama } from './helpers/random-llama.js';
import { writeCheckpoint } from '../src/io/checkpoint.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-cli-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** runCli in-process with `env` set, capturing stdout and stderr (console.* writes through them). */
async function cli(argv: string[], env: Record<string, string | undefined> = {}): Promise<{ code: number; out: string; err: string }> {
  const oldEnv: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(env)) {
    oldEnv[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    const r = await capture(() => runCli(argv));
    return { code: r.value, out: r.out, err: r.err };
  } finally {
    for (const [k, v] of Object.entries(oldEnv)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

test('--version prints package.json\'s version; the help lists every command with a description', async () => {
  const version = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  assert.deepEqual(await cli(['--version']), { code: 0, out: `${version}\n`, err: '' });
  const help = await cli(['--help']);
  assert.equal(help.code, 0);
  for (const name of Object.keys(commands)) assert.match(help.out, new RegExp(`^  ${name} +[a-zA-Z].{15,}$`, 'm'), `${name} has a one-line description`);
  // No command is a usage error: the help goes to stderr and the exit code is 2.
  const none = await cli([]);
  assert.equal(none.code, 2);
  assert.match(none.err, /^usage: transmla <command>/);
  assert.equal((await cli(['no-such-command'])).code, 2);
  const one = await cli(['help', 'ppl']);
  assert.equal(one.code, 0);
  assert.match(one.out, /^transmla ppl: perplexity .*\n\nusage: transmla ppl <model>/);
  assert.match(one.out, /HF_HUB_OFFLINE=1/);
});

describe('usage errors exit 2 with the command\'s usage; other failures exit 1 without it', { skip: skipUnlessAsset('models/TinyStories-656K') }, () => {
  let M: string, T: string;
  before(() => {
    M = mustAsset('models/TinyStories-656K');
    T = mustAsset('text/tinystories/tinystories_val_sample.txt');
  });

  test('an unknown flag, in every command', async () => {
    for (const name of Object.keys(commands)) {
      const r = await cli([name, M, '--no-such-flag']);
      assert.equal(r.code, 2, `${name}: ${r.err}`);
      assert.match(r.err, new RegExp(`^transmla ${name}: unknown option --no-such-flag\\nusage: transmla ${name} `), name);
    }
  });

  test('missing required flags and bad values', async () => {
    const O = join(tmp, 'out');
    const cases: [string[], RegExp][] = [
      [['convert', M, '--out', O, '--calib', T], /give --kv-lora-rank R or --kv-fraction F/],
      [['convert', M, '--out', O, '--calib', T, '--kv-fraction', '0.5', '--kv-lora-rank', '8'], /give either --kv-lora-rank or --kv-fraction, not both/],
      [['convert', M, '--out', O, '--calib', T, '--kv-fraction', '2'], /--kv-fraction must be a number in \(0, 1\], got "2"/],
      [['convert', M, '--out', O, '--kv-fraction', '0.5'], /--calib FILE is required/],
      [['convert', M, '--method', 'mha2mla', '--out', O, '--calib', T], /give --kv-rank R or --kv-fraction F/],
      [['convert', M, '--method', 'nope'], /--method must be transmla or mha2mla/],
      [['export', M, '--out', O], /--target is required/],
      [['export', M, '--out', O, '--target', 'onnx'], /--target must be deepseek-v3 or deepseek-v2 or gguf/],
      [['ppl', M], /--text FILE is required/],
      [['ppl', M, '--text', T, '--ctx', 'abc'], /--ctx must be an integer ≥ 2, got "abc"/],
      [['ppl', M, '--text', T, '--kv-quant', 'int3'], /--kv-quant must be none, int8 or int4/],
      [['inspect'], /expected exactly one model/],
      [['inspect', M, M], /expected exactly one model, got 2/],
      [['generate', M, '--top-p', '1.5'], /--top-p must be a number in \(0, 1\], got "1.5"/],
      [['finetune', M], /--text FILE or --tokens FILE is required/],
      [['finetune', M, '--text', T, '--kd-weight', '0.5'], /--kd-weight > 0 needs --teacher/],
      [['finetune', M, '--text', T, '--warmup', '2'], /--warmup must be a number in \[0, 1\]/],
      [['sweep', M, '--calib', T, '--out', O], /--kv-fractions needs a comma-separated list/],
      [['serve', M, '--port', '99999'], /--port must be ≤ 65535/],
      [['bench', M, '--contexts', 'x'], /--contexts must be positive integers/],
      [['validate', M, '--engines', 'tgi'], /--engines takes a comma-separated subset/],
      [['import-llama2c', 'x.bin', '--out', O], /--tokenizer is required/],
      [['export-llama2c', M], /--out is required/],
      [['report'], /expected exactly one folder/],
    ];
    for (const [argv, msg] of cases) {
      const r = await cli(argv);
      assert.equal(r.code, 2, `${argv.join(' ')}: ${r.err}`);
      assert.match(r.err, msg, argv.join(' '));
      assert.match(r.err, new RegExp(`\\nusage: transmla ${argv[0]} `), argv.join(' '));
    }
  });

  test('a value the library refuses for this model is a usage error too', async () => {
    // TinyStories-656K: 4 KV heads × head_dim 16 → at most 2·4·16 − d_R values.
    const r = await cli(['convert', M, '--no-save', '--calib', T, '--kv-lora-rank', '500', '--rope-dim', '8', '--freqfold', '1', '--calib-samples', '2', '--calib-seqlen', '16']);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, /--kv-lora-rank 500 is larger than the key\/value latent allows.*\nusage: transmla convert /);
  });

  test('failures that are not usage errors exit 1 with one line and no usage', async () => {
    for (const argv of [['inspect', join(tmp, 'absent')], ['ppl', M, '--text', join(tmp, 'absent.txt')], ['ppl', M, '--text', tmp]]) {
      const r = await cli(argv);
      assert.equal(r.code, 1, `${argv.join(' ')}: ${r.err}`);
      assert.equal(r.err.trim().split('\n').length, 1, r.err);
      assert.doesNotMatch(r.err, /usage:/);
    }
    assert.equal((await cli(['ppl', M, '--text', tmp])).err, `transmla ppl: ${tmp} is a folder; expected a text file (.txt, or .jsonl with "text" fields)\n`);
  });

  test('serve on a busy port names the port', async () => {
    const busy = createServer();
    await new Promise<void>((done) => busy.listen(0, '127.0.0.1', done));
    const port = (busy.address() as { port: number }).port;
    try {
      const r = await cli(['serve', M, '--port', String(port), '--quiet']);
      assert.equal(r.code, 1);
      assert.equal(r.err, `transmla serve: port ${port} is already in use on 127.0.0.1 (another server listens on 127.0.0.1:${port}); choose another --port, or --port 0 for a free one\n`);
    } finally {
      busy.close();
    }
  });

  test('a real process: exit codes through main.ts', () => {
    const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src/cli/main.ts'), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });
    const u = run(['convert', M, '--out', join(tmp, 'o'), '--calib', T]);
    assert.equal(u.status, 2, u.stderr);
    assert.match(u.stderr, /transmla convert: give --kv-lora-rank R or --kv-fraction F\nusage: transmla convert /);
    const v = run(['--version']);
    assert.equal(v.status, 0);
  });

  test('a real process: a --json report larger than a pipe buffer reaches the reader whole', { skip: skipUnlessAsset('models/kjv-gqa') }, async () => {
    // process.exit used to drop what a pipe had not taken yet: a deep model's report was cut at 64 KiB.
    const m = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, inter: 64, vocab: 32000, layers: 48 });
    const dir = join(tmp, 'deep');
    mkdirSync(dir);
    await writeCheckpoint(dir, [...m.src.map].map(([name, tensor]) => ({ name, tensor })));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(m.json));
    writeHfFolderExtras(mustAsset('models/kjv-gqa'), dir);
    // Through a shell pipe, as `transmla convert --json | jq` runs (a pipe(2) of 64 KiB, not Node's socket pair).
    const argv = [process.execPath, '--import', 'tsx', join(REPO_ROOT, 'src/cli/main.ts'), 'convert', dir, '--kv-fraction', '0.5', '--rope-dim', '8', '--freqfold', '1',
      '--calib', mustAsset('text/kjv-old-testament-calib.txt'), '--calib-samples', '4', '--calib-seqlen', '32', '--eval-chunks', '1', '--eval-ctx', '32', '--no-save', '--json'];
    const r = spawnSync('sh', ['-c', '"$@" | cat', 'sh', ...argv], { cwd: REPO_ROOT, encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.length > 65536, `the report is only ${r.stdout.length} bytes: the test needs one larger than a pipe buffer`);
    const j = JSON.parse(r.stdout) as { conversion: { layers: unknown[] } };
    assert.equal(j.conversion.layers.length, 48);
  });
});

describe('every <model> argument takes a Hub id', { skip: skipUnlessAsset('models/TinyStories-656K') }, () => {
  let hub: FakeHub, M: string, T: string, env: Record<string, string | undefined>;
  const C = 'c'.repeat(40), CV1 = '1'.repeat(40);
  before(async () => {
    M = mustAsset('models/TinyStories-656K');
    T = join(tmp, 'stories.txt');
    writeFileSync(T, readFileSync(mustAsset('text/tinystories/tinystories_val_sample.txt'), 'utf8').slice(0, 20_000));
    // v1: the same model with a config that says 256 trained positions (so ppl's default --ctx shows which was loaded).
    const v1 = join(tmp, 'tiny-v1');
    mkdirSync(v1);
    for (const f of ['config.json', 'generation_config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']) {
      writeFileSync(join(v1, f), readFileSync(join(M, f)));
    }
    const cfg = JSON.parse(readFileSync(join(M, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(v1, 'config.json'), JSON.stringify({ ...cfg, max_position_embeddings: 256 }));
    hub = await startFakeHub({ 'someone/tiny': { commits: { [C]: M, [CV1]: v1 }, refs: { main: C, v1: CV1 } }, 'someone/gated': { commits: { [C]: M }, refs: { main: C }, token: 'hf_ok' } });
    env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(tmp, 'hf-cache'), HF_TOKEN: undefined, HF_HUB_OFFLINE: undefined };
  });
  after(() => hub.close());

  test('inspect, ppl and generate run on a Hub id; --revision picks the commit; HF_TOKEN is sent', async () => {
    const i = await cli(['inspect', 'someone/tiny'], env);
    assert.equal(i.code, 0, i.err);
    assert.match(i.out, /656\.0 K/);
    assert.match(i.err, /someone\/tiny@main \(commit cccccccccccc\) is in .*hf-cache\/models--someone--tiny\/snapshots\/c{40}/);
    const p = await cli(['ppl', 'someone/tiny', '--text', T, '--max-chunks', '1', '--json'], env);
    assert.equal(p.code, 0, p.err);
    assert.equal((JSON.parse(p.out) as { ctx: number }).ctx, 512);
    const p1 = await cli(['ppl', 'someone/tiny', '--revision', 'v1', '--text', T, '--max-chunks', '1', '--json'], env);
    assert.equal(p1.code, 0, p1.err);
    assert.equal((JSON.parse(p1.out) as { ctx: number }).ctx, 256);
    const g = await cli(['generate', `someone/tiny@${CV1}`, '--prompt', 'Once', '--max-tokens', '3', '--temperature', '0', '--quiet'], env);
    assert.equal(g.code, 0, g.err);
    const noToken = await cli(['inspect', 'someone/gated'], env);
    assert.equal(noToken.code, 1);
    assert.match(noToken.err, /^transmla inspect: .* refused access to someone\/gated \(HTTP 401\).*set HF_TOKEN/);
    assert.equal((await cli(['inspect', 'someone/gated'], { ...env, HF_TOKEN: 'hf_ok' })).code, 0);
    const local = await cli(['inspect', M, '--revision', 'v1'], env);
    assert.equal(local.code, 2);
    assert.match(local.err, /--revision pins a Hub model; .* is a local path/);
  });

  test('HF_HUB_OFFLINE=1: every command resolves its models through the cache (here: not cached)', async () => {
    const off = { ...env, HF_HUB_OFFLINE: '1' };
    const O = join(tmp, 'o2');
    const cases: string[][] = [
      ['inspect', 'someone/absent'],
      ['ppl', 'someone/absent', '--text', T],
      ['generate', 'someone/absent', '--prompt', 'x'],
      ['convert', 'someone/absent', '--out', O, '--kv-fraction', '0.5', '--calib', T],
      ['convert', 'someone/absent', '--method', 'mha2mla', '--out', O, '--kv-fraction', '0.5', '--calib', T],
      ['export', 'someone/absent', '--target', 'gguf', '--out', O],
      ['validate', 'someone/absent'],
      ['bench', 'someone/absent'],
      ['bench', M, '--compare', 'someone/absent'],
      ['sweep', 'someone/absent', '--kv-fractions', '0.5', '--calib', T, '--out', O],
      ['serve', 'someone/absent'],
      ['finetune', 'someone/absent', '--text', T],
      ['finetune', M, '--text', T, '--teacher', 'someone/absent'],
      ['export-llama2c', 'someone/absent', '--out', join(tmp, 'x.bin')],
    ];
    for (const argv of cases) {
      const r = await cli(argv, off);
      assert.equal(r.code, 1, `${argv.join(' ')}: ${r.err}`);
      assert.match(r.err, new RegExp(`^transmla ${argv[0]}: HF_HUB_OFFLINE is set and someone/absent@main is not in the cache \\(.*models--someone--absent\\); download it once without HF_HUB_OFFLINE, or pass a local folder\\n$`), argv.join(' '));
    }
    // What was downloaded earlier stays usable offline.
    const cached = await cli(['inspect', 'someone/tiny'], off);
    assert.equal(cached.code, 0, cached.err);
  });
});
