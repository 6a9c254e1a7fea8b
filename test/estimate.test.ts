// The conversion's time forecast (convert/estimate.ts): its FLOP count per token-layer must equal
// twice the multiply-adds of the layer's stored projection weights (read from the checkpoint
// headers, not from the config arithmetic it uses), plus the causal attention term; an MoE layer
// counts only the experts a token is routed to.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { attentionFlopsPerToken, conversionFlops, formatDuration, layerFlopsPerToken } from '../src/convert/estimate.js';
import { readConfig } from '../src/arch/registry.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { ASSETS_ROOT, skipUnlessAsset } from './helpers/assets.js';

function storedLayerMacs(dir: string): { dense: number; attnMacs: number; perExpert: number; experts: number } {
  const ck = openCheckpoint(dir);
  let dense = 0, expertTotal = 0, attnMacs = 0;
  const experts = new Set<string>();
  for (const n of ck.names()) {
    if (!n.startsWith('model.layers.0.') || !n.endsWith('.weight') || ck.info(n).shape.length !== 2) continue;
    const [a, b] = ck.info(n).shape as [number, number];
    if (n.includes('.gate.weight')) continue; // the router: D × experts, negligible and not counted
    const e = /experts\.(\d+)\./.exec(n);
    if (e) { experts.add(e[1]!); expertTotal += a * b; } else dense += a * b;
    if (n.includes('.self_attn.')) attnMacs += a * b;
  }
  return { dense, attnMacs, perExpert: experts.size ? expertTotal / experts.size : 0, experts: experts.size };
}

for (const name of ['kjv-gqa', 'kjv-mixtral']) {
  test(`${name}: FLOPs per token-layer = 2 × stored projection multiply-adds + attention`, { skip: skipUnlessAsset(`models/${name}`) }, () => {
    const dir = join(ASSETS_ROOT, 'models', name);
    const c = readConfig(dir);
    const { dense, attnMacs, perExpert } = storedLayerMacs(dir);
    const routed = Number(c.raw.num_experts_per_tok ?? 0);
    const ctx = 256, attn = 2 * c.numHeads * c.headDim * (ctx / 2);
    assert.equal(layerFlopsPerToken(c, ctx), 2 * (dense + routed * perExpert + attn));
    const work = { calibForwards: 1000, calibSeqLen: ctx, calibGrams: 2, calibTokens: 500, proxyTokenLayers: 300, evalTokens: 10, evalStages: 4, evalCtx: ctx };
    assert.equal(attentionFlopsPerToken(c, ctx), 2 * (attnMacs + attn));
    const D = c.hiddenSize;
    assert.equal(conversionFlops(c, work), c.numLayers * layerFlopsPerToken(c, ctx) * 1040 + c.numLayers * 2 * 500 * 2 * (D + 1) ** 2
      + 300 * attentionFlopsPerToken(c, ctx) + 40 * 2 * D * c.vocabSize);
  });
}

test('durations read in the unit a person would use', () => {
  assert.equal(formatDuration(0.2), '1 s');
  assert.equal(formatDuration(42.4), '42 s');
  assert.equal(formatDuration(600), '10.0 min');
  assert.equal(formatDuration(3 * 3600), '3.0 h');
});
