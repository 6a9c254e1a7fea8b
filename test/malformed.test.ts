// The malformed-file corpus (test/malformed/): every hand-made file must be refused with its
// parser's typed error and exactly the message recorded in test/malformed/cases.ts.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { TARGETS } from '../fuzz/targets.js';
import { MALFORMED_CASES, type Format } from './malformed/cases.js';
import { caseDir, corpusDiff } from './malformed/make.js';

describe('malformed-file corpus', () => {
  test('committed files match test/malformed/cases.ts (regenerate with test/malformed/make.ts)', () => {
    assert.deepEqual(corpusDiff(), []);
  });

  const names = new Set<string>();
  for (const c of MALFORMED_CASES) {
    test(`${c.format}/${c.name}: ${c.why}`, () => {
      const key = `${c.format}/${c.name}`;
      assert.ok(!names.has(key), `duplicate case ${key}`);
      names.add(key);
      const dir = caseDir(c);
      const entry = c.entry === '.' ? dir : join(dir, c.entry);
      // The same end-to-end load the fuzzer uses: open, validate, read every tensor.
      assert.throws(
        () => TARGETS[c.format satisfies Format].load(entry),
        (e: unknown) => {
          assert.ok(e instanceof Error, `expected an Error, got ${String(e)}`);
          assert.equal(e.constructor.name, c.error, `expected ${c.error}, got ${e.constructor.name}: ${e.message}`);
          const want = c.message(dir);
          if (typeof want === 'string') assert.equal(e.message, want);
          else assert.match(e.message, want);
          return true;
        },
      );
    });
  }
});
