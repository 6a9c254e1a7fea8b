// Logits of a model the ways the exactness tests compare them: one full forward, or decode
// through the cache (absorbed for MLA in 'auto' mode), after an optional decompressed prefill.
import type { Decoder } from '../../src/models/decoder.js';
import { mulberry32 } from './random-llama.js';

/** Logits at every position of one forward over `tokens`, [T × V]. */
export function logits(model: Decoder, tokens: number[]): Float32Array {
  return model.forward(tokens, model.newCache(), { logits: 'all' }).slice();
}

/** The same [T × V] logits, computed by a `prefill`-token forward and then one token at a time. */
export function decodeLogits(model: Decoder, tokens: number[], prefill = 0): Float32Array {
  const V = model.config.vocabSize;
  const out = new Float32Array(tokens.length * V);
  const cache = model.newCache();
  if (prefill > 0) out.set(model.forward(tokens.slice(0, prefill), cache, { logits: 'all' }), 0);
  for (let i = prefill; i < tokens.length; i++) out.set(model.forward([tokens[i]!], cache, { logits: 'last' }), i * V);
  return out;
}

export function randomTokens(n: number, vocab: number, seed: number): number[] {
  const r = mulberry32(seed);
  return Array.from({ length: n }, () => Math.floor(r() * vocab));
}

/** Rows of equal length, concatenated. */
export function flat(rows: Float64Array[]): Float64Array {
  const out = new Float64Array(rows.length * rows[0]!.length);
  rows.forEach((r, i) => out.set(r, i * r.length));
  return out;
}
