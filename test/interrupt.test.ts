// Interrupted conversions: a real `transmla convert` child process (TinyStories-656K, tiny
// calibration) is stopped with SIGINT, SIGTERM or SIGKILL early (calibration), in the middle
// (conversion pass) and late (writing the folder). Afterwards either no output exists or the
// previous output is byte-identical; SIGINT/SIGTERM leave no temp files, SIGKILL may leave
// clearly named ones (.out.tmp-<pid>-<hex> beside the output, transmla-calib-<pid>-* in TMPDIR)
// that the next run removes. Exact stages are reached with TRANSMLA_TEST_PAUSE_AT (the child
// announces "[test] paused at <point>" on stderr); one case only watches progress lines.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { cleanStaleSiblings } from '../src/io/atomic-dir.js';
import { mustAsset, REPO_ROOT, skipUnlessAsset } from './helpers/assets.js';

const skip = skipUnlessAsset('models/TinyStories-656K') || skipUnlessAsset('text/tinystories/tinystories_val_sample.txt');
const root = mkdtempSync(join(tmpdir(), 'transmla-interrupt-test-'));
after(() => rmSync(root, { recursive: true, force: true }));

function calibFile(): string {
  const p = join(root, 'calib.txt');
  writeFileSync(p, readFileSync(mustAsset('text/tinystories/tinystories_val_sample.txt'), 'utf8').slice(0, 60_000));
  return p;
}

interface Run { code: number | null; signal: NodeJS.Signals | null; stderr: string }

/**
 * Runs the conversion into dir/out with TMPDIR = dir/tmp; when `trigger` matches stderr, sends
 * `signal`. Resolves when the child exits.
 */
function runConvert(dir: string, opts: { pauseAt?: string; trigger?: RegExp; signal?: NodeJS.Signals; overwrite?: boolean; extra?: string[] }): Promise<Run> {
  const args = [
    '--import', 'tsx', join(REPO_ROOT, 'src/cli/main.ts'), 'convert', mustAsset('models/TinyStories-656K'), '--out', join(dir, 'out'),
    '--kv-fraction', '0.5', '--rope-dim', '8', '--freqfold', '2', '--calib', join(root, 'calib.txt'),
    '--calib-samples', '4', '--calib-seqlen', '32', ...(opts.extra ?? ['--eval-ctx', '32', '--eval-chunks', '1']), ...(opts.overwrite ? ['--overwrite'] : []),
  ];
  const env = { ...process.env, TMPDIR: join(dir, 'tmp'), TRANSMLA_TEST_PAUSE_AT: opts.pauseAt ?? '' };
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  let sent = false;
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s: string) => {
    stderr += s;
    if (!sent && opts.trigger && opts.signal && opts.trigger.test(stderr)) {
      sent = true;
      child.kill(opts.signal);
    }
  });
  return new Promise((res) => child.on('close', (code, signal) => res({ code, signal, stderr })));
}

function freshDir(name: string): string {
  const d = join(root, name);
  mkdirSync(join(d, 'tmp'), { recursive: true });
  return d;
}

/** Every file under `dir` with its bytes, for byte-identity checks. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string, rel: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name), `${rel}${e.name}/`);
      else out.set(`${rel}${e.name}`, readFileSync(join(d, e.name)).toString('base64'));
    }
  };
  walk(dir, '');
  return out;
}

const siblings = (dir: string): string[] => readdirSync(dir).filter((n) => n !== 'out' && n !== 'tmp');
const calibTemps = (dir: string): string[] => readdirSync(join(dir, 'tmp')).filter((n) => n.startsWith('transmla-calib-'));

const STAGE: Record<string, RegExp> = {
  calibration: /calibration pass 1 \(original model\), layer 1\/2/,
  conversion: /conversion pass 2 \(RoRoPE \+ BKV-PCA\), layer 1\/2/,
  write: /writing .*out/,
};

function checkExit(r: Run, signal: NodeJS.Signals, point: string): void {
  if (signal === 'SIGKILL') {
    assert.equal(r.signal, 'SIGKILL', r.stderr);
    return;
  }
  assert.equal(r.code, signal === 'SIGINT' ? 130 : 143, r.stderr);
  const m = new RegExp(`interrupted by ${signal} during (.*); temporary output removed`).exec(r.stderr);
  assert.ok(m, `no interruption message in:\n${r.stderr}`);
  assert.match(m[1]!, STAGE[point]!);
}

describe('interrupted conversion (child process)', { skip }, () => {
  test('setup', () => { calibFile(); });

  for (const signal of ['SIGINT', 'SIGTERM', 'SIGKILL'] as const) {
    for (const point of ['calibration', 'conversion', 'write'] as const) {
      test(`${signal} during ${point}: no output folder, no stray temp files`, async () => {
        const dir = freshDir(`${signal}-${point}`);
        const r = await runConvert(dir, { pauseAt: point, trigger: new RegExp(`\\[test\\] paused at ${point}`), signal });
        checkExit(r, signal, point);
        assert.ok(!readdirSync(dir).includes('out'), 'no output folder');
        if (signal === 'SIGKILL') {
          // Allowed leftovers, clearly temporary and owned by the dead pid.
          for (const n of siblings(dir)) assert.match(n, /^\.out\.tmp-\d+-[0-9a-f]{8}$/);
          for (const n of calibTemps(dir)) assert.match(n, /^transmla-calib-\d+-/);
          if (point === 'write') assert.equal(siblings(dir).length, 1, 'the unfinished folder is left as .out.tmp-…');
          if (point !== 'write') assert.equal(calibTemps(dir).length, 1, 'the calibration file of the killed run is left');
        } else {
          assert.deepEqual(siblings(dir), []);
          assert.deepEqual(calibTemps(dir), []);
        }
      });
    }
  }

  for (const signal of ['SIGINT', 'SIGTERM', 'SIGKILL'] as const) {
    test(`${signal} while writing over an existing folder with --overwrite: the old folder is byte-identical`, async () => {
      const dir = freshDir(`${signal}-overwrite`);
      mkdirSync(join(dir, 'out', 'sub'), { recursive: true });
      writeFileSync(join(dir, 'out', 'model.safetensors'), 'previous weights');
      writeFileSync(join(dir, 'out', 'sub', 'note.txt'), 'previous note');
      const before = snapshot(join(dir, 'out'));
      const r = await runConvert(dir, { pauseAt: 'write', trigger: /\[test\] paused at write/, signal, overwrite: true });
      checkExit(r, signal, 'write');
      assert.deepEqual(snapshot(join(dir, 'out')), before);
      if (signal !== 'SIGKILL') assert.deepEqual(siblings(dir), []);
    });
  }

  for (const point of ['conversion', 'write'] as const) {
    test(`streaming conversion (--no-eval): SIGTERM during ${point} leaves nothing`, async () => {
      const dir = freshDir(`stream-${point}`);
      const r = await runConvert(dir, { pauseAt: point, trigger: new RegExp(`\\[test\\] paused at ${point}`), signal: 'SIGTERM', extra: ['--no-eval'] });
      checkExit(r, 'SIGTERM', point);
      assert.deepEqual(readdirSync(dir).sort(), ['tmp']);
      assert.deepEqual(calibTemps(dir), []);
    });
  }

  test('SIGINT on the first progress line (no pause hook): exits 130 naming a stage, leaves nothing', async () => {
    const dir = freshDir('watch');
    const r = await runConvert(dir, { trigger: /pass 1 \(original model\) layer 1\/2/, signal: 'SIGINT' });
    // The whole run is short: accept the rare case where it finished first, but then completely.
    if (r.code === 0) {
      assert.ok(readdirSync(join(dir, 'out')).includes('model.safetensors'));
      return;
    }
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /SIGINT received during .+/);
    assert.match(r.stderr, /interrupted by SIGINT during (calibration|freqfold|conversion|evaluation|writing)/);
    assert.ok(!readdirSync(dir).includes('out'));
    assert.deepEqual(siblings(dir), []);
    assert.deepEqual(calibTemps(dir), []);
  });

  test('after SIGKILL leftovers, the next run cleans them and completes', async () => {
    const dir = join(root, 'SIGKILL-write');
    // Make the SIGKILL-during-calibration leftover visible to this run too.
    for (const n of calibTemps(join(root, 'SIGKILL-calibration'))) {
      mkdirSync(join(dir, 'tmp', n), { recursive: true });
    }
    assert.equal(siblings(dir).length, 1);
    assert.ok(calibTemps(dir).length >= 1);
    const r = await runConvert(dir, {});
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(siblings(dir), [], 'the stale .out.tmp-… folder was removed');
    assert.deepEqual(calibTemps(dir), [], 'stale calibration folders were removed');
    assert.ok(readdirSync(join(dir, 'out')).includes('transmla.json'));
  });
});

describe('cleanStaleSiblings', () => {
  // A pid that certainly exited.
  const deadPid = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout.trim();

  test('puts back a moved-aside old folder when the output is missing, removes unfinished ones', () => {
    const dir = join(root, 'stale');
    mkdirSync(join(dir, `.out.old-${deadPid}-0123abcd`), { recursive: true });
    writeFileSync(join(dir, `.out.old-${deadPid}-0123abcd`, 'f'), 'old');
    mkdirSync(join(dir, `.out.tmp-${deadPid}-89abcdef`));
    mkdirSync(join(dir, `.out.tmp-${process.pid}-89abcdef`)); // our own: untouched
    mkdirSync(join(dir, `.other.tmp-${deadPid}-89abcdef`)); // another output's: untouched
    cleanStaleSiblings(join(dir, 'out'));
    assert.deepEqual(readdirSync(dir).sort(), [`.other.tmp-${deadPid}-89abcdef`, `.out.tmp-${process.pid}-89abcdef`, 'out'].sort());
    assert.equal(readFileSync(join(dir, 'out', 'f'), 'utf8'), 'old');
  });

  test('removes a stale old folder when the output exists', () => {
    const dir = join(root, 'stale2');
    mkdirSync(join(dir, 'out'), { recursive: true });
    mkdirSync(join(dir, `.out.old-${deadPid}-0123abcd`));
    cleanStaleSiblings(join(dir, 'out'));
    assert.deepEqual(readdirSync(dir), ['out']);
  });
});
