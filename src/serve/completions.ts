// Runs one /v1/completions request on the engine and shapes the OpenAI answer (legacy
// completions format): per prompt one choice with `text`, `finish_reason` and, when asked,
// `logprobs` = {tokens, token_logprobs, top_logprobs, text_offset}.
//
// Log-probabilities are the engine's own: log softmax of the raw logits (before temperature or
// nucleus), in float64. With `echo`, the prompt's tokens come first; the first has no
// prediction (null), each later one is scored by the logits of the position before it — what
// lm-evaluation-harness reads for log-likelihood tasks (echo + logprobs, max_tokens 0 or 1).
import type { Decoder } from '../models/decoder.js';
import { Rng } from '../models/sample.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import type { Batcher } from './batcher.js';
import { unprocessable } from './errors.js';
import { StoppableText, type TokenEntry } from './text-stream.js';
import { SequenceSampler, topKIds as topK } from './sampling.js';
import type { CompletionRequest, PromptInput } from './validate.js';

export interface ServedModel {
  id: string;
  model: Decoder;
  tokenizer: TextTokenizer;
  /** Prompt + max_tokens may not exceed this. */
  contextLength: number;
  /** Token ids that end generation (not returned). */
  eosIds: ReadonlySet<number>;
  created: number;
}

/** A scored token: its log-probability (null for the first prompt token) and the top alternatives. */
export interface TokenScore {
  logprob: number | null;
  top: Record<string, number> | null;
}

export interface ChoiceLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[] | null;
  text_offset: number[];
}

export interface Choice {
  text: string;
  index: number;
  logprobs: ChoiceLogprobs | null;
  finish_reason: 'stop' | 'length' | null;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** Streaming callback: a piece of one choice (text delta, its tokens, finish reason once done). */
export type ChunkSink = (choice: Choice) => void;

const PREFILL_CHUNK = 512;
/** Rows of logits computed at once when scoring a prompt (memory: rows × vocab floats). */
const LOGIT_ROWS = 128;

/** Token ids of a prompt: text gets a BOS when the tokenizer asks for one (as HF tokenizers do); ids are used as given. */
export function promptIds(p: PromptInput, s: ServedModel): number[] {
  if (p.kind === 'ids') {
    const V = s.model.config.vocabSize;
    const bad = p.ids.find((id) => id < 0 || id >= V);
    if (bad !== undefined) throw unprocessable(`token id ${bad} is outside the vocabulary (0..${V - 1})`, 'prompt', 'invalid_token_id');
    return p.ids;
  }
  const bos = s.tokenizer.addBosByDefault && s.tokenizer.bosId !== null;
  const ids = s.tokenizer.encode(p.text, { addBos: bos });
  if (ids.length === 0) throw unprocessable('the prompt is empty and the tokenizer adds no BOS token to start from', 'prompt', 'empty_prompt');
  return ids;
}

/** Checks every prompt against the context before any work starts (the whole request fails or none of it). */
export function checkTokenLimits(prompts: number[][], maxTokens: number, s: ServedModel): void {
  prompts.forEach((ids, i) => {
    if (ids.length + maxTokens > s.contextLength) {
      throw unprocessable(
        `this model's context is ${s.contextLength} tokens; prompt ${i} has ${ids.length} tokens and max_tokens is ${maxTokens} (${ids.length + maxTokens} in all)`,
        ids.length > s.contextLength ? 'prompt' : 'max_tokens', 'context_length_exceeded',
      );
    }
  });
}

/** log-sum-exp of a row, float64. */
function logSumExp(row: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  return Math.log(sum) + max;
}

export class Completer {
  /** Every forward goes through `batcher`: concurrent sequences share its steps. */
  constructor(private readonly s: ServedModel, private readonly batcher: Batcher) {}

  /** The text a token adds after `context` (its leading space, a whole character once complete). */
  private pieceAfter(context: readonly number[], id: number): string {
    const d = this.s.tokenizer.createStreamDecoder(context);
    const t = d.push(id) + d.flush();
    return t;
  }

  private score(row: Float32Array, target: number | null, k: number, context: readonly number[]): TokenScore {
    const lse = logSumExp(row);
    const logprob = target === null ? null : row[target]! - lse;
    let top: Record<string, number> | null = null;
    if (k > 0) {
      top = {};
      for (const id of topK(row, k)) {
        let key = this.pieceAfter(context, id);
        // Distinct tokens may decode alike (e.g. partial UTF-8): keep each under its own key.
        if (key in top) key = this.s.tokenizer.idToToken(id) ?? `<${id}>`;
        if (!(key in top)) top[key] = row[id]! - lse;
      }
    }
    return { logprob, top };
  }

  /**
   * Runs one prompt. Returns the choice (text and logprobs of the whole output); when `sink` is
   * given, pieces are also handed to it as they are produced. `aborted` is polled between tokens.
   * `sample` numbers the choices of one prompt (n > 1): the seed of choice j is seed + j.
   */
  async complete(ids: number[], index: number, req: CompletionRequest, sink: ChunkSink | null, aborted: () => boolean, sample = 0): Promise<{ choice: Choice; completionTokens: number }> {
    const { model, tokenizer } = this.s;
    const V = model.config.vocabSize, D = model.config.hiddenSize;
    const wantLp = req.logprobs !== null;
    const k = req.logprobs ?? 0;
    const cache = model.newCache();
    cache.reserve(ids.length + req.maxTokens);

    // Prompt pieces (echo) and their scores; the last row's logits start generation.
    const echoPieces: string[] = [];
    const echoScores: TokenScore[] = [];
    if (req.echo) {
      const dec = tokenizer.createStreamDecoder([]);
      for (const id of ids) echoPieces.push(dec.push(id));
      echoPieces[echoPieces.length - 1] += dec.flush();
      if (wantLp) echoScores.push({ logprob: null, top: null });
    }
    let last: Float32Array = new Float32Array(V);
    const rows = new Float32Array(Math.min(LOGIT_ROWS, ids.length) * V);
    for (let p = 0; p < ids.length && !aborted(); p += PREFILL_CHUNK) {
      const n = Math.min(PREFILL_CHUNK, ids.length - p);
      const scoring = req.echo && wantLp;
      const step = await this.batcher.run({ tokens: ids.slice(p, p + n), cache, pos0: p, want: scoring ? 'hidden' : p + n === ids.length ? 'last' : 'none' });
      if (scoring) {
        const h = step.hidden!;
        for (let r0 = 0; r0 < n; r0 += LOGIT_ROWS) {
          const m = Math.min(LOGIT_ROWS, n - r0);
          model.logitsFromHidden(h.subarray(r0 * D, (r0 + m) * D), m, rows);
          for (let r = 0; r < m; r++) {
            const g = p + r0 + r;
            const row = rows.subarray(r * V, (r + 1) * V);
            if (g + 1 < ids.length) echoScores.push(this.score(row, ids[g + 1]!, k, ids.slice(Math.max(0, g - 5), g + 1)));
            else last.set(row);
          }
        }
      } else if (step.logits) {
        last.set(step.logits);
      }
    }

    const echoText = echoPieces.join('');
    const out = new StoppableText<TokenScore | null>(req.stop);
    const entries: TokenEntry<TokenScore | null>[] = [];
    let finish: Choice['finish_reason'] = 'length';
    const toLogprobs = (base: number, es: TokenEntry<TokenScore | null>[], pieces: string[] = [], scores: TokenScore[] = []): ChoiceLogprobs | null => {
      if (!wantLp) return null;
      const lp: ChoiceLogprobs = { tokens: [], token_logprobs: [], top_logprobs: k > 0 ? [] : null, text_offset: [] };
      let off = 0;
      pieces.forEach((piece, i) => {
        lp.tokens.push(piece); lp.token_logprobs.push(scores[i]!.logprob); lp.top_logprobs?.push(scores[i]!.top); lp.text_offset.push(off);
        off += piece.length;
      });
      for (const e of es) {
        lp.tokens.push(e.piece); lp.token_logprobs.push(e.info!.logprob); lp.top_logprobs?.push(e.info!.top); lp.text_offset.push(base + e.offset);
      }
      return lp;
    };
    if (sink && req.echo) sink({ text: echoText, index, logprobs: toLogprobs(0, [], echoPieces, echoScores), finish_reason: null });

    const sampler = new SequenceSampler(req.sampling, ids, new Rng(req.seed !== null ? req.seed + sample : Math.floor(Math.random() * 2 ** 31)));
    const dec = tokenizer.createStreamDecoder(ids);
    const context = ids.slice(-6);
    let generated = 0;
    let completionText = '';
    // An end-of-sequence token adds no text but was sampled: with logprobs it is reported as a last
    // token with empty text (as vLLM does), so a client that sent max_tokens 1 and drops the last
    // entry (lm-eval's local-completions: token_logprobs[ctxlen:-1]) drops that token, not the prompt's.
    let eos: TokenScore | null | undefined;
    while (generated < req.maxTokens && !aborted()) {
      const id = sampler.next(last);
      if (this.s.eosIds.has(id)) { finish = 'stop'; eos = wantLp ? this.score(last, id, k, context) : null; break; }
      generated++;
      sampler.accept(id);
      const piece = dec.push(id);
      const info = wantLp ? this.score(last, id, k, context) : null;
      context.push(id);
      if (context.length > 6) context.shift();
      const stopped = out.push(piece, info);
      if (sink) {
        const r = out.release(false);
        completionText += r.text;
        entries.push(...r.tokens);
        if (r.text !== '' || r.tokens.length > 0) sink({ text: r.text, index, logprobs: toLogprobs(echoText.length, r.tokens), finish_reason: null });
      }
      if (stopped) { finish = 'stop'; break; }
      if (generated === req.maxTokens) break;
      last = (await this.batcher.run({ tokens: [id], cache, pos0: cache.length, want: 'last' })).logits!;
    }
    if (!out.stopped && generated > 0) {
      const tail = dec.flush();
      if (tail !== '' && out.extendLast(tail)) finish = 'stop';
    }
    if (eos !== undefined && !out.stopped) out.push('', eos);
    const rest = out.release(true);
    completionText += rest.text;
    entries.push(...rest.tokens);
    if (sink) sink({ text: rest.text, index, logprobs: toLogprobs(echoText.length, rest.tokens), finish_reason: finish });
    return {
      choice: { text: echoText + completionText, index, logprobs: toLogprobs(echoText.length, entries, echoPieces, echoScores), finish_reason: finish },
      completionTokens: generated + (eos !== undefined ? 1 : 0),
    };
  }
}
