// How long a conversion will take, said before it starts: its work counted in floating-point
// operations (every sweep is layer forwards over token batches, dominated by the projections'
// GEMMs) divided by the GEMM rate this machine gives right now, measured on the model's own width.
import { kernels } from '../kernels/index.js';
import type { ModelArgs } from '../models/model-args.js';

/** Multiply-adds ×2 of one token through one decoder layer at context `ctx` (causal average). */
export function layerFlopsPerToken(c: ModelArgs, ctx: number): number {
  const D = c.hiddenSize, q = c.numHeads * c.headDim, kv = 2 * c.numKvHeads * c.headDim;
  const routed = Number(c.raw.num_experts_per_tok ?? 1);
  const proj = D * (q + kv) + q * D + 3 * D * c.intermediateSize * (Number.isFinite(routed) && routed > 0 ? routed : 1);
  const attn = 2 * q * (ctx / 2); // q·k and p·v over half the context on average
  return 2 * (proj + attn);
}

/** Multiply-adds ×2 of one token through one layer's attention projections and scores (the proxy search's unit). */
export function attentionFlopsPerToken(c: ModelArgs, ctx: number): number {
  const D = c.hiddenSize, q = c.numHeads * c.headDim, kv = 2 * c.numKvHeads * c.headDim;
  return 2 * (D * (q + kv) + q * D + 2 * q * (ctx / 2));
}

export interface ConversionWork {
  /** Token-layer forwards of calibration batches (pass 1, pass 2 statistics, stock states). */
  calibForwards: number;
  calibSeqLen: number;
  /** Calibration Grams of [rmsnorm(x); 1] taken per layer (each over every calibration token). */
  calibGrams: number;
  calibTokens: number;
  /** Proxy-search attention forwards: candidates × scored layers × tokens per layer. */
  proxyTokenLayers: number;
  /** Evaluation tokens and how many stages each goes through. */
  evalTokens: number;
  evalStages: number;
  evalCtx: number;
}

export function conversionFlops(c: ModelArgs, w: ConversionWork): number {
  const layers = c.numLayers;
  const calib = w.calibForwards * layers * layerFlopsPerToken(c, w.calibSeqLen);
  const grams = w.calibGrams * layers * w.calibTokens * 2 * (c.hiddenSize + 1) ** 2;
  const proxy = w.proxyTokenLayers * attentionFlopsPerToken(c, w.calibSeqLen);
  const evalLayers = w.evalTokens * w.evalStages * layers * layerFlopsPerToken(c, w.evalCtx);
  const head = w.evalTokens * w.evalStages * 2 * c.hiddenSize * c.vocabSize;
  return calib + grams + proxy + evalLayers + head;
}

/** FLOP/s of an f32 GEMM of the model's width [256 × D]·[D × min(D, 2048)]ᵀ, best of three. */
export function measureGemmRate(D: number): number {
  const M = 256, N = Math.min(D, 2048), K = D;
  const A = new Float32Array(M * K).fill(0.5), B = new Float32Array(N * K).fill(0.25), C = new Float32Array(M * N);
  const k = kernels();
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    k.matmul(A, B, 'f32', C, M, N, K, true);
    best = Math.min(best, (performance.now() - t0) / 1e3);
  }
  return (2 * M * N * K) / Math.max(best, 1e-9);
}

export function formatDuration(s: number): string {
  if (s < 90) return `${Math.max(1, Math.round(s))} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
