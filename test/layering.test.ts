// The layering of src/ (.dependency-cruiser.cjs, docs/architecture.md) holds, and the checker
// really catches a back-import: a copy of src/ with io/ importing from convert/ is refused.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { REPO_ROOT } from './helpers/assets.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-layering-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function depcruise(root: string): { status: number | null; out: string } {
  const bin = join(REPO_ROOT, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');
  const r = spawnSync(process.execPath, [bin, 'src', '--config', '.dependency-cruiser.cjs', '--output-type', 'err'], { cwd: root, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test('src/ follows the layer order, without cycles', () => {
  const r = depcruise(REPO_ROOT);
  assert.equal(r.status, 0, r.out);
});

test('a back-import (io → convert) and a cycle are refused, naming the rule', () => {
  const copy = join(tmp, 'repo');
  cpSync(join(REPO_ROOT, 'src'), join(copy, 'src'), { recursive: true });
  for (const f of ['.dependency-cruiser.cjs', 'tsconfig.json', 'package.json']) cpSync(join(REPO_ROOT, f), join(copy, f));
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(copy, 'node_modules'));
  appendFileSync(join(copy, 'src', 'io', 'preview.ts'), "\nimport '../convert/transmla.js';\n");
  const r = depcruise(copy);
  assert.notEqual(r.status, 0);
  assert.match(r.out, /layer-io: src\/io\/preview\.ts → src\/convert\/transmla\.ts/);
  assert.match(r.out, /no-circular/);
});
