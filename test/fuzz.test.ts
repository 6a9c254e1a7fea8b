// A short, seeded run of the parser fuzzer (fuzz/): every mutated safetensors file, index.json,
// config.json, GGUF file, llama2.c checkpoint and tokenizer must load or fail with the parser's
// typed error naming the file, within the time limit and without length-driven allocations.
// The long runs go through `node --import tsx fuzz/main.ts --iterations N`.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { runFuzz } from '../fuzz/runner.js';
import { buildSeeds } from '../fuzz/seeds.js';
import { makeCase } from '../fuzz/targets.js';
import { TARGET_NAMES } from '../fuzz/types.js';

const ITERATIONS = 1800;

describe('parser fuzzing (short CI run)', () => {
  const seeds = buildSeeds();

  test('a case is reproducible from (seed, target, index) alone', async () => {
    const s = await seeds;
    for (const t of TARGET_NAMES) {
      for (const i of [0, 1, 977]) {
        const a = makeCase(s, 5, t, i);
        const b = makeCase(s, 5, t, i);
        assert.deepEqual(b, a);
      }
    }
  });

  test(`${ITERATIONS} seeded cases across all targets: no bad case, no hang`, { timeout: 240_000 }, async () => {
    const r = await runFuzz({ iterations: ITERATIONS, seed: 20_251_123, target: 'all', timeLimitMs: 2000, crashDir: null, seeds: await seeds });
    const problems = r.problems.map((p) => `${p.outcome} ${p.target} #${p.index} [${p.seedName}; ${p.ops.join(' ')}]: ${p.detail}`);
    assert.deepEqual(problems, [], `reproduce with: node --import tsx fuzz/main.ts --seed ${r.seed} --start <index> --iterations 1`);
    // Every target ran, and each both accepted and rejected inputs (mutations reach past the header checks).
    for (const t of TARGET_NAMES) {
      const s = r.stats[t];
      assert.ok(s && s.cases === ITERATIONS / TARGET_NAMES.length, `target ${t} ran ${s?.cases ?? 0} cases`);
      assert.ok(s.outcomes.ok > 0 && s.outcomes['typed-error'] > 0, `target ${t}: ${JSON.stringify(s.outcomes)}`);
    }
  });
});
