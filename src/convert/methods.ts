// Conversion methods by name, for commands that choose one (sweep). Each entry runs its own
// pipeline with the options every method shares (calibration, evaluation, KV fraction), plus the
// ones of its own that it understands, and returns the same summary: so a caller passes the
// method name through unchanged and compares the results on equal terms.
import { convertModel } from './transmla.js';
import { type CalibEvalOptions } from './pipeline.js';
import type { CalibOrder, EvalReport } from '../schema/transmla-json.js';
import { convertMha2mla } from './mha2mla.js';

export interface MethodOptions extends CalibEvalOptions {
  model: string;
  out: string | null;
  overwrite?: boolean;
  kvFraction: number;
  calib: string;
  /** TransMLA only. */
  freqFold?: number | 'auto';
  ropeDim?: number | 'auto';
  calibOrder?: CalibOrder;
  searchChunks?: number;
}

/** What every method reports, for sweeps. */
export interface MethodResult {
  kvFraction: number;
  kvLoraRank: number;
  /** The cache layout chosen, in words (e.g. "r 24 + d_R 8, FreqFold 2"). */
  shape: string;
  bytesPerTokenBefore: number;
  bytesPerTokenAfter: number;
  evaluations: EvalReport[];
  convertSeconds: number;
  output: string | null;
}

export type ConvertMethod = (o: MethodOptions) => Promise<MethodResult>;

export const CONVERT_METHODS: Readonly<Record<string, ConvertMethod>> = {
  transmla: async (o) => {
    const r = await convertModel({ variant: 'exact', ...o, freqFold: o.freqFold ?? 'auto' });
    const p = r.parameters;
    return {
      kvFraction: r.kvCache.fraction, kvLoraRank: p.kvLoraRank, shape: `r ${p.kvLoraRank} + d_R ${p.qkRopeHeadDim}, FreqFold ${p.freqFold}`,
      bytesPerTokenBefore: r.kvCache.bytesPerTokenBefore, bytesPerTokenAfter: r.kvCache.bytesPerTokenAfter,
      evaluations: r.evaluations, convertSeconds: r.seconds.convertTotal, output: r.output,
    };
  },
  mha2mla: async (o) => {
    const r = await convertMha2mla({
      model: o.model, out: o.out, overwrite: o.overwrite, kvFraction: o.kvFraction, calib: o.calib, calibSamples: o.calibSamples,
      calibSeqLen: o.calibSeqLen, seed: o.seed, evalTexts: o.evalTexts, evalCtx: o.evalCtx, evalChunks: o.evalChunks, evalTokens: o.evalTokens, log: o.log,
    });
    const p = r.parameters;
    return {
      kvFraction: r.kvCache.fraction, kvLoraRank: p.kvLoraRank,
      shape: `${r.source.kvHeads} KV heads × 2·${p.ropePairsPerHead} RoPE + latent ${p.kvLoraRank} (S_${p.selection}, SVD_${p.lowRank})`,
      bytesPerTokenBefore: r.kvCache.bytesPerTokenBefore, bytesPerTokenAfter: r.kvCache.bytesPerTokenAfter,
      evaluations: r.evaluations, convertSeconds: r.seconds.convertTotal, output: r.output,
    };
  },
};

export function convertMethod(name: string): ConvertMethod {
  const m = CONVERT_METHODS[name];
  if (!m) throw new Error(`unknown conversion method "${name}"; known: ${Object.keys(CONVERT_METHODS).join(', ')}`);
  return m;
}
