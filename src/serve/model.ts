// The model a server answers for: engine, tokenizer, the name clients use, its context limit
// and end-of-sequence ids.
import { basename, resolve } from 'node:path';
import { eosIds } from '../models/generate.js';
import { loadModel } from '../arch/load.js';
import type { ServedModel } from './completions.js';

export interface ServedModelOptions {
  /** The id clients send as "model" (default: the folder or file name). */
  name?: string;
  /** Context limit for prompt + max_tokens (default: max_position_embeddings). */
  contextLength?: number;
  /** Tokenizer file or folder instead of the model's own. */
  tokenizer?: string;
}

export function loadServedModel(path: string, o: ServedModelOptions = {}): ServedModel {
  const loaded = loadModel(path, { tokenizer: o.tokenizer });
  if (!loaded.tokenizer) throw new Error(`${path} has no tokenizer; pass one (--tokenizer PATH)`);
  // The engine attends fully: a sliding-window model is served only within its window (a longer
  // sequence would fail its forward, and with it every sequence batched alongside).
  const w = loaded.model.slidingWindow;
  const ctx = o.contextLength ?? Math.min(loaded.config.maxPositionEmbeddings, w ?? Infinity);
  if (!Number.isInteger(ctx) || ctx < 1) throw new Error(`context length must be a positive integer, got ${ctx}`);
  if (w !== null && ctx > w) throw new Error(`${path}: --ctx ${ctx} exceeds the model's sliding window of ${w} tokens; the engine implements full attention only, so serve at most ${w}`);
  const eos = new Set(eosIds(loaded.config.eosTokenId));
  if (loaded.tokenizer.eosId !== null) eos.add(loaded.tokenizer.eosId);
  return {
    id: o.name ?? basename(resolve(path)).replace(/\.(gguf|bin)$/, ''),
    model: loaded.model,
    tokenizer: loaded.tokenizer,
    contextLength: ctx,
    eosIds: eos,
    created: Math.floor(Date.now() / 1000),
  };
}
