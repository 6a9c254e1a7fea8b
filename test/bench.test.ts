// `transmla bench <model> --compare <other> --contexts …` (src/bench/bench.ts) on the small
// TinyStories checkpoints: both models measured in the same run with the ratio, per-context decode
// speed and cache bytes, the roofline, peak RSS taken from each engine child's own /proc VmHWM (not
// the parent's), and the statement for contexts past the trained window. No timing is asserted:
// only how the figures relate to each other.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatBenchReport, runBench } from '../src/bench/bench.js';
import { ggufExportUnsupported } from '../src/export/gguf.js';
import { peakRssBytes } from '../src/eval/memory.js';
import { writeCheckpoint } from '../src/io/checkpoint.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';
import { assetPath } from './helpers/assets.js';
import { randomDeepseek } from './helpers/random-deepseek.js';

const model = assetPath('models/TinyStories-656K');
const other = assetPath('models/TinyStories-656K-bf16');
const skip = model && other ? false : 'assets models/TinyStories-656K(-bf16) missing';

function vmHwm(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

describe('bench', { skip }, () => {
  it('peakRssBytes is this process\'s VmHWM from /proc', { skip: process.platform === 'linux' ? false : 'Linux only' }, () => {
    const a = vmHwm(), p = peakRssBytes(), b = vmHwm();
    assert.ok(a <= p && p <= b, `${a} ≤ ${p} ≤ ${b}`);
  });

  it('--compare: both models in one run, ratios, roofline, children\'s own peak RSS, past-window statement', async () => {
    // The parent holds (and has touched) far more memory than a tiny model's engine needs: a peak
    // RSS inherited from or read in the parent would show it.
    const ballast = Buffer.alloc(384 * 2 ** 20, 1);
    const parentPeak = peakRssBytes();
    assert.ok(parentPeak > ballast.length);
    const lines: string[] = [];
    const b = await runBench({
      model: model!, compare: other!, contexts: [520, 16], decodeTokens: 2, reps: 2, llamaCpp: false, threads: 1,
      bandwidthBytes: 8 * 2 ** 20, log: (l) => lines.push(l),
    });
    assert.equal(ballast[ballast.length - 1], 1);
    assert.equal(b.compareSource, 'given');
    assert.equal(b.compare, other);
    assert.deepEqual(b.runs.map((r) => [r.engine, r.role, r.model]), [['transmla', 'model', model], ['transmla', 'compare', other]]);
    assert.deepEqual(b.contexts, [16, 520]);
    for (const run of b.runs) {
      assert.deepEqual(run.contexts.map((c) => [c.context, c.beyondTrainedWindow]), [[16, false], [520, true]]);
      assert.equal(run.trainedContext, 512);
      for (const [i, c] of run.contexts.entries()) {
        assert.ok(c.tokensPerSecond > 0 && Math.abs(c.msPerToken * c.tokensPerSecond - 1000) < 1e-6);
        assert.equal(c.cacheBytes, c.context * run.cacheBytesPerToken);
        assert.equal(c.bytesPerStep, run.weightBytesPerStep + c.cacheBytes);
        const rf = run.roofline[i]!;
        // The bandwidth was read right before and right after the fastest repetition (the one whose
        // time is the reported figure), and the better of the two readings sets the roofline.
        const mine = run.bandwidthProbes.filter((p) => p.context === c.context);
        const times = mine.slice(1).map((p) => p.previousMs!);
        const best = times.indexOf(Math.min(...times));
        assert.ok(Math.abs(times[best]! / 2 - c.msPerToken) < 1e-9 * c.msPerToken, `${times} vs ${c.msPerToken} ms/token`);
        assert.equal(rf.bandwidthSource, 'adjacent probes');
        assert.deepEqual(rf.adjacent!.before.at, mine[best]!.at);
        assert.deepEqual(rf.adjacent!.after.at, mine[best + 1]!.at);
        assert.ok(rf.adjacent!.after.at - rf.adjacent!.before.at >= times[best]!, 'the repetition lies between its two readings');
        assert.equal(rf.bandwidthBytesPerSecond, Math.max(mine[best]!.bytesPerSecond, mine[best + 1]!.bytesPerSecond));
        assert.ok(Math.abs(rf.minMsPerToken - (c.bytesPerStep / rf.bandwidthBytesPerSecond) * 1000) < 1e-9);
        assert.ok(Math.abs(rf.fractionOfRoofline - rf.minMsPerToken / c.msPerToken) < 1e-12);
        assert.ok(rf.bandwidthRange[0] <= rf.bandwidthBytesPerSecond && rf.bandwidthBytesPerSecond <= rf.bandwidthRange[1]);
        assert.equal(rf.aboveRoofline === null, rf.fractionOfRoofline <= 1, `${rf.fractionOfRoofline}: ${rf.aboveRoofline}`);
        assert.ok(c.rssBytes > 0 && c.rssBytes <= run.peakRssBytes);
      }
      // One reading at every boundary (before each repetition and after the last), in time order.
      assert.deepEqual(run.bandwidthProbes.map((p) => [p.context, p.beforeRep]), [[16, 0], [16, 1], [16, 2], [520, 0], [520, 1], [520, 2]]);
      assert.ok(run.bandwidthProbes.every((p, k, ps) => p.bytesPerSecond > 0 && (k === 0 || p.at > ps[k - 1]!.at)));
      assert.ok(run.peakRssBytes > 0 && run.peakRssBytes < ballast.length, `engine child's peak RSS ${run.peakRssBytes} vs the parent's ${parentPeak}`);
    }
    // Same architecture, f32 and bf16 weights: equal cache bytes, the speed ratio from the same run.
    const [m, c] = b.runs;
    assert.deepEqual(b.ratios.map((x) => x.context), [16, 520]);
    b.ratios.forEach((x, i) => {
      assert.equal(x.cacheBytesRatio, 1);
      assert.equal(x.decodeSpeedup, m!.contexts[i]!.tokensPerSecond / c!.contexts[i]!.tokensPerSecond);
    });
    assert.ok(m!.weightBytesPerStep > c!.weightBytesPerStep);
    assert.ok(b.notes.some((n) => n.includes('past a model\'s trained window (512 positions)') && n.includes('speed only')), b.notes.join('\n'));
    assert.ok(b.notes.some((n) => n.startsWith('roofline:')));
    assert.equal(b.bandwidthProbes.count, 12);
    const text = formatBenchReport(b);
    assert.match(text, /GB\/s over 12 readings between timed repetitions/);
    assert.match(text, /\(past trained window\)/);
    assert.match(text, /model ÷ comparison/);
    assert.match(text, /peak RSS/);
    assert.ok(lines.some((l) => l.includes('GB/s')));
  });
});

describe('bench: llama.cpp on MLA folders', { skip }, () => {
  it('a stock DeepSeek-V3 folder runs in llama.cpp as deepseek2, on the same weights; the exact variant and MHA2MLA say why not', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'transmla-bench-ds2-'));
    try {
      const m = randomDeepseek({ hidden: 64, heads: 4, nope: 16, rope: 8, v: 16, kvLoraRank: 24, qLoraRank: null, inter: 96, vocab: 2048, layers: 2, seed: 5, maxPositionEmbeddings: 256 });
      const stock = join(dir, 'stock');
      mkdirSync(stock);
      await writeCheckpoint(stock, [...m.src.map].map(([name, tensor]) => ({ name, tensor })));
      writeFileSync(join(stock, 'config.json'), JSON.stringify(m.json));
      writeHfFolderExtras(model!, stock);
      assert.equal(ggufExportUnsupported(stock), null);
      const b = await runBench({ model: stock, compare: null, contexts: [8, 24], decodeTokens: 2, reps: 1, threads: 1, bandwidthBytes: 4 * 2 ** 20 });
      assert.deepEqual(b.llamaCppSkipped, []);
      assert.deepEqual(b.runs.map((r) => [r.engine, r.attention]), [['transmla', 'MLA'], ['llama.cpp', 'MLA']]);
      const [ours, cpp] = b.runs;
      // One latent row of kv_lora_rank + qk_rope_head_dim values per token and layer in both; llama.cpp's in f16.
      assert.equal(ours!.cacheElementsPerToken, 2 * (24 + 8));
      assert.equal(cpp!.cacheElementsPerToken, ours!.cacheElementsPerToken);
      assert.equal(cpp!.cacheBytesPerToken, 2 * ours!.cacheElementsPerToken);
      assert.equal(cpp!.weightBytesPerStep, ours!.weightBytesPerStep);
      assert.ok(cpp!.contexts.every((c) => c.tokensPerSecond > 0));

      // The exact variant (transmla.json without the strict export's variant) is refused with the way out.
      writeFileSync(join(stock, 'transmla.json'), JSON.stringify({ tool: 'transmla' }));
      assert.match(ggufExportUnsupported(stock) ?? '', /exact MLA variant.*--target deepseek-v3/);
      writeFileSync(join(stock, 'transmla.json'), JSON.stringify({ tool: 'transmla', variant: 'deepseek-v3' }));
      assert.equal(ggufExportUnsupported(stock), null);
      // MHA2MLA has no llama.cpp architecture.
      const mh = join(dir, 'mha2mla');
      mkdirSync(mh);
      writeFileSync(join(mh, 'config.json'), JSON.stringify({ model_type: 'llama_mha2mla', transmla_variant: 'mha2mla' }));
      assert.match(ggufExportUnsupported(mh) ?? '', /MHA2MLA/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
