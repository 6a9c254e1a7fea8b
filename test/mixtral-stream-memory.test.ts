// The streaming default convert holds one decoder layer: after each layer of the conversion sweep
// the live array buffers (after a full GC, in a child under --expose-gc) must not grow by the
// layers already converted. Before the fix the stock fit kept every layer's decoder layer — and
// with it the layer's experts — to the end of the sweep.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { assetPath } from './helpers/assets.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-stream-mem-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const vocab = assetPath('models/kjv-gqa'), calib = assetPath('text/kjv-old-testament-calib.txt');

test('streaming convert of a Mixtral: live memory does not grow with the layers converted', { skip: vocab && calib ? false : 'assets kjv-gqa / kjv calibration text missing' }, () => {
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', join(import.meta.dirname, 'helpers', 'stream-memory-child.ts'), tmp, vocab!, calib!], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const { live, layerExpertBytes } = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { live: number[]; layerExpertBytes: number };
  assert.equal(live.length, 6);
  const growth = live.at(-1)! - live[0]!;
  assert.ok(growth < layerExpertBytes, `live array buffers grew by ${(growth / 2 ** 20).toFixed(1)} MiB over 5 layers (one layer's experts: ${(layerExpertBytes / 2 ** 20).toFixed(1)} MiB): ${live.map((x) => (x / 2 ** 20).toFixed(1)).join(', ')} MiB`);
});
