// MHA2MLA on a Qwen3 source (docs/methods.md#qk-norm), for comparison with TransMLA on the same
// tokens: S_2-norm RoPE pairs + SVD_joint, activation-aware (bench/mha2mla.ts's best training-free
// variant), the pre-norm keys factorised and the norm applied to the rebuilt key before RoPE
// (models/mha2mla-qknorm-attention.ts), the key normaliser from the rebuilt key ('reconstructed',
// the cache of plain MHA2MLA) or cached from the true key ('cached': G values more, paid for by a
// latent G values narrower, so both cache the same number of values per token).
// Not a saved form: `convert --method mha2mla` still refuses Qwen3 (arch/qwen3.ts).
import { readFileSync } from 'node:fs';
import { loadModel } from '../arch/load.js';
import { fidelity } from '../eval/fidelity.js';
import { tokenizeEnough } from '../eval/perplexity.js';
import { ropeInvFreq } from '../models/rope.js';
import { GqaAttention } from '../models/attention.js';
import type { Mha2mlaKeyNorm } from '../models/mha2mla-qknorm-attention.js';
import type { ModelScore } from '../schema/transmla-json.js';
import { calibrateMha2mla, mha2mlaBudget, statsNeeds, type Mha2mlaLayerStats } from './mha2mla.js';
import { mha2mlaDecoderLayer, mha2mlaLayer } from './mha2mla-layer.js';
import { assembleModel, gqaLayerSource } from './mla-build.js';
import { calibrationSet, calibrationTokens } from './pipeline.js';
import { selectRopePairs } from './rope-select.js';

export interface QkMha2mlaOptions {
  model: string;
  calib: string;
  calibSamples: number;
  calibSeqLen: number;
  evalText: string;
  evalCtx: number;
  evalChunks: number;
  fractions: number[];
  log?: (line: string) => void;
}

export interface QkMha2mlaCell {
  fraction: number;
  keyNorm: Mha2mlaKeyNorm;
  ropePairs: number;
  kvRank: number;
  /** Cached values per token per layer: G·2r + R (+ G for 'cached'). */
  cacheValues: number;
  score: ModelScore;
}

export async function qkMha2mlaStudy(o: QkMha2mlaOptions): Promise<{ original: ModelScore; cells: QkMha2mlaCell[]; predictions: number }> {
  const log = o.log ?? (() => {});
  const loaded = loadModel(o.model);
  const src = loaded.model, cfg = src.config, G = cfg.numKvHeads, d = cfg.headDim, dtype = src.weightDtype;
  const c = calibrationSet(o.calib, { calibSamples: o.calibSamples, calibSeqLen: o.calibSeqLen });
  const samples = await calibrationTokens(loaded.tokenizer!, c);
  const stats: Mha2mlaLayerStats[] = [];
  calibrateMha2mla(src, samples, statsNeeds('2norm', 'activations', 'mean'), (l, s) => { stats[l] = s; });
  const inv = ropeInvFreq(d, cfg.ropeTheta, cfg.ropeScaling);
  const cells: Omit<QkMha2mlaCell, 'score'>[] = [];
  const models = [];
  for (const fraction of o.fractions) {
    const b = mha2mlaBudget({ nKvHeads: G, headDim: d, hidden: cfg.hiddenSize }, { kvFraction: fraction });
    for (const keyNorm of ['reconstructed', 'cached'] as const) {
      const R = keyNorm === 'cached' ? b.kvRank - G : b.kvRank;
      if (R < 1) continue;
      const layers = src.layers.map((layer, l) => {
        const a = layer.attn as GqaAttention;
        if (!a.qkNorm) throw new Error(`${o.model}: layer ${l} has no q/k norm (this study is for Qwen3 sources)`);
        const pairs = selectRopePairs('2norm', b.ropePairs, d, G, stats[l]!.pairNorms);
        const w = mha2mlaLayer(gqaLayerSource(src, l), { ropePairs: pairs, kvRank: R, init: 'joint', inputCov: stats[l]!.inputCov, qkNorm: { q: a.qkNorm.q, k: a.qkNorm.k, eps: a.qkNorm.eps, keyNorm } });
        return mha2mlaDecoderLayer(src, l, w, inv, { dtype });
      });
      models.push(assembleModel(src, layers));
      cells.push({ fraction, keyNorm, ropePairs: b.ropePairs, kvRank: R, cacheValues: G * 2 * b.ropePairs + R + (keyNorm === 'cached' ? G : 0) });
      log(`  MHA2MLA ${(100 * fraction).toFixed(2)} % KV, key norm ${keyNorm}: r ${b.ropePairs} pairs per KV head, R ${R}`);
    }
  }
  const { ids, bos } = await tokenizeEnough(loaded.tokenizer!, readFileSync(o.evalText, 'utf8'), o.evalChunks * o.evalCtx);
  const f = await fidelity(src, models, ids, bos, { ctx: o.evalCtx, maxChunks: o.evalChunks });
  return { original: f.reference, cells: cells.map((x, i) => ({ ...x, score: f.models[i]! })), predictions: f.predictions };
}
