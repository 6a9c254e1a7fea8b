// Autoregressive generation: one prefill over the prompt, then one decode step per token
// against the KV cache. Streams token ids as they are chosen; stops at EOS or maxTokens.
import type { KvCache } from './kv-cache.js';
import type { Decoder } from './decoder.js';
import { Rng, sampleToken } from './sample.js';

export interface GenerateOptions {
  maxTokens: number;
  /** 0 → greedy. Default 0. */
  temperature?: number;
  /** Default 1 (no nucleus cut). */
  topP?: number;
  seed?: number;
  /** Ids that end generation (not yielded). Default: the config's EOS id(s). */
  stopIds?: readonly number[];
  /** Reuse a cache (e.g. to continue a conversation); by default a fresh one. */
  cache?: KvCache;
}

export interface GenerateStats {
  promptTokens: number;
  generated: number;
  prefillMs: number;
  decodeMs: number;
  stoppedBy: 'eos' | 'maxTokens';
}

export function eosIds(eos: number | number[] | null): number[] {
  return eos === null ? [] : Array.isArray(eos) ? eos : [eos];
}

/**
 * Yields each new token id. Yields to the event loop between tokens so streamed output
 * is flushed while generation runs. Returns timing and the stop reason.
 */
export async function* generate(model: Decoder, prompt: readonly number[], opts: GenerateOptions): AsyncGenerator<number, GenerateStats> {
  if (prompt.length === 0) throw new Error('generation needs at least one prompt token (e.g. BOS)');
  const sample = { temperature: opts.temperature ?? 0, topP: opts.topP ?? 1 };
  const rng = new Rng(opts.seed ?? 0);
  const stop = new Set(opts.stopIds ?? eosIds(model.config.eosTokenId));
  const cache = opts.cache ?? model.newCache();
  const stats: GenerateStats = { promptTokens: prompt.length, generated: 0, prefillMs: 0, decodeMs: 0, stoppedBy: 'maxTokens' };
  let t0 = performance.now();
  let logits = model.forward(prompt, cache, { logits: 'last' });
  stats.prefillMs = performance.now() - t0;
  const one = [0];
  while (stats.generated < opts.maxTokens) {
    const id = sampleToken(logits, sample, rng);
    if (stop.has(id)) { stats.stoppedBy = 'eos'; break; }
    stats.generated++;
    yield id;
    if (stats.generated === opts.maxTokens) break;
    await new Promise<void>((r) => setImmediate(r));
    t0 = performance.now();
    one[0] = id;
    logits = model.forward(one, cache, { logits: 'last' });
    stats.decodeMs += performance.now() - t0;
  }
  return stats;
}
