// Checks a /v1/completions body and normalises it. Every field OpenAI's legacy completions API
// defines is either implemented or rejected with a 400 naming it; unknown fields are rejected
// too, so a typo ("max_token") is an error rather than a silently ignored option.
import { badRequest } from './errors.js';
import type { SamplingParams } from './sampling.js';

/** A prompt as the client sent it: text (tokenized by the server) or token ids (used as given). */
export type PromptInput = { kind: 'text'; text: string } | { kind: 'ids'; ids: number[] };

export interface CompletionRequest {
  model: string | null;
  prompts: PromptInput[];
  maxTokens: number;
  sampling: SamplingParams;
  /** Choices per prompt. */
  n: number;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
  echo: boolean;
  /** null: no logprobs; k ≥ 0: the chosen token's logprob and the k most likely alternatives. */
  logprobs: number | null;
  seed: number | null;
}

export interface RequestLimits {
  maxPrompts: number;
  /** Largest `n` (choices per prompt) accepted. */
  maxN: number;
  /** Largest `logprobs` value accepted. */
  maxLogprobs: number;
}

const MAX_STOPS = 32;

const KNOWN = new Set([
  'model', 'prompt', 'max_tokens', 'temperature', 'top_p', 'top_k', 'min_p', 'n', 'best_of', 'stop', 'stream', 'stream_options',
  'echo', 'logprobs', 'seed', 'presence_penalty', 'frequency_penalty', 'repetition_penalty', 'logit_bias', 'suffix', 'user',
]);

/**
 * The sampling fields both APIs share: OpenAI's temperature, top_p, presence/frequency_penalty
 * ([−2, 2]) and vLLM's extensions top_k (−1 or 0: no cut), min_p ([0, 1]) and repetition_penalty (> 0).
 */
export function samplingFields(b: Record<string, unknown>): SamplingParams {
  const topK = b.top_k ?? 0;
  if (!isInt(topK) || topK < -1) throw badRequest(`top_k must be an integer ≥ −1 (−1 or 0: no cut), got ${JSON.stringify(b.top_k)}`, 'top_k');
  return {
    temperature: num(b, 'temperature', 1, 0, 2),
    topP: num(b, 'top_p', 1, 0, 1, true),
    topK: topK === -1 ? 0 : topK,
    minP: num(b, 'min_p', 0, 0, 1),
    repetitionPenalty: num(b, 'repetition_penalty', 1, 0, 2, true),
    presencePenalty: num(b, 'presence_penalty', 0, -2, 2),
    frequencyPenalty: num(b, 'frequency_penalty', 0, -2, 2),
  };
}

/** `n` (choices per prompt, 1..maxN) and `best_of`, which only may equal n (no re-ranking). */
export function choiceCount(b: Record<string, unknown>, maxN: number): number {
  const n = b.n ?? 1;
  if (!isInt(n) || n < 1 || n > maxN) throw badRequest(`n must be an integer in [1, ${maxN}], got ${JSON.stringify(b.n)}`, 'n');
  if (b.best_of !== undefined && b.best_of !== null && b.best_of !== n) throw badRequest(`best_of must equal n (${n}): choices are not re-ranked, got ${JSON.stringify(b.best_of)}`, 'best_of');
  return n;
}

export function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

export function num(body: Record<string, unknown>, key: string, dflt: number, lo: number, hi: number, loOpen = false): number {
  const v = body[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw badRequest(`${key} must be a number, got ${JSON.stringify(v)}`, key);
  if ((loOpen ? v <= lo : v < lo) || v > hi) throw badRequest(`${key} must be in ${loOpen ? '(' : '['}${lo}, ${hi}], got ${v}`, key);
  return v;
}

function prompts(v: unknown): PromptInput[] {
  const bad = (): never => { throw badRequest('prompt must be a string, an array of strings, an array of token ids, or an array of arrays of token ids', 'prompt'); };
  const ids = (a: unknown[]): PromptInput => {
    if (a.length === 0) throw badRequest('a token-id prompt must not be empty', 'prompt');
    if (!a.every((x) => isInt(x))) bad();
    return { kind: 'ids', ids: a as number[] };
  };
  if (typeof v === 'string') return [{ kind: 'text', text: v }];
  if (!Array.isArray(v)) return v === undefined ? (() => { throw badRequest('prompt is required', 'prompt'); })() : bad();
  if (v.length === 0) throw badRequest('prompt must not be an empty array', 'prompt');
  if (v.every((x) => typeof x === 'string')) return (v as string[]).map((text) => ({ kind: 'text', text }));
  if (v.every((x) => typeof x === 'number')) return [ids(v)];
  if (v.every((x) => Array.isArray(x))) return (v as unknown[][]).map(ids);
  return bad();
}

/** Refuses fields outside `known`, naming them and what is supported. */
export function rejectUnknown(b: Record<string, unknown>, known: ReadonlySet<string>): void {
  const unknown = Object.keys(b).filter((k) => !known.has(k));
  if (unknown.length > 0) throw badRequest(`unsupported field${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')}; supported: ${[...known].join(', ')}`, unknown[0]!);
}

export function seedField(b: Record<string, unknown>): number | null {
  const seed = b.seed ?? null;
  if (seed !== null && !isInt(seed)) throw badRequest(`seed must be an integer, got ${JSON.stringify(b.seed)}`, 'seed');
  return seed;
}

/** `stop` (a string or up to MAX_STOPS non-empty strings), `stream` and `stream_options.include_usage`. */
export function stopAndStream(b: Record<string, unknown>): { stop: string[]; stream: boolean; includeUsage: boolean } {
  let stop: string[] = [];
  if (typeof b.stop === 'string') stop = [b.stop];
  else if (Array.isArray(b.stop)) {
    if (!b.stop.every((s) => typeof s === 'string')) throw badRequest('stop must be a string or an array of strings', 'stop');
    stop = b.stop as string[];
  } else if (b.stop !== undefined && b.stop !== null) throw badRequest('stop must be a string or an array of strings', 'stop');
  // OpenAI allows 4; lm-eval's local-completions sends every `until` string of a task plus EOS.
  if (stop.length > MAX_STOPS) throw badRequest(`at most ${MAX_STOPS} stop sequences, got ${stop.length}`, 'stop');
  if (stop.some((s) => s === '')) throw badRequest('stop sequences must not be empty', 'stop');

  if (b.stream !== undefined && b.stream !== null && typeof b.stream !== 'boolean') throw badRequest('stream must be true or false', 'stream');
  const stream = b.stream === true;
  let includeUsage = false;
  const so = b.stream_options;
  if (so !== undefined && so !== null) {
    if (!stream) throw badRequest('stream_options is only allowed with stream: true', 'stream_options');
    if (typeof so !== 'object' || Array.isArray(so)) throw badRequest('stream_options must be an object', 'stream_options');
    const extra = Object.keys(so).filter((k) => k !== 'include_usage');
    if (extra.length > 0) throw badRequest(`unsupported stream_options field ${JSON.stringify(extra[0])}`, 'stream_options');
    const iu = (so as Record<string, unknown>).include_usage;
    if (iu !== undefined && typeof iu !== 'boolean') throw badRequest('stream_options.include_usage must be true or false', 'stream_options');
    includeUsage = iu === true;
  }
  return { stop, stream, includeUsage };
}

export function validateCompletionRequest(body: unknown, limits: RequestLimits): CompletionRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the request body must be a JSON object');
  const b = body as Record<string, unknown>;
  rejectUnknown(b, KNOWN);

  if (b.model !== undefined && b.model !== null && typeof b.model !== 'string') throw badRequest('model must be a string', 'model');
  const ps = prompts(b.prompt);
  if (ps.length > limits.maxPrompts) throw badRequest(`at most ${limits.maxPrompts} prompts per request, got ${ps.length}`, 'prompt');

  const maxTokens = b.max_tokens ?? 16;
  if (!isInt(maxTokens) || maxTokens < 0) throw badRequest(`max_tokens must be an integer ≥ 0, got ${JSON.stringify(b.max_tokens)}`, 'max_tokens');
  const sampling = samplingFields(b);
  const n = choiceCount(b, limits.maxN);
  if (n * ps.length > limits.maxPrompts) throw badRequest(`at most ${limits.maxPrompts} choices per request (prompts × n), got ${ps.length} × ${n}`, 'n');
  if (b.logit_bias !== undefined && b.logit_bias !== null && !(typeof b.logit_bias === 'object' && Object.keys(b.logit_bias as object).length === 0)) {
    throw badRequest('logit_bias is not supported', 'logit_bias');
  }
  if (b.suffix !== undefined && b.suffix !== null && b.suffix !== '') throw badRequest('suffix is not supported', 'suffix');
  if (b.user !== undefined && b.user !== null && typeof b.user !== 'string') throw badRequest('user must be a string', 'user');

  const { stop, stream, includeUsage } = stopAndStream(b);
  if (b.echo !== undefined && b.echo !== null && typeof b.echo !== 'boolean') throw badRequest('echo must be true or false', 'echo');

  let logprobs: number | null = null;
  if (b.logprobs !== undefined && b.logprobs !== null) {
    if (!isInt(b.logprobs) || b.logprobs < 0 || b.logprobs > limits.maxLogprobs) {
      throw badRequest(`logprobs must be an integer in [0, ${limits.maxLogprobs}], got ${JSON.stringify(b.logprobs)}`, 'logprobs');
    }
    logprobs = b.logprobs;
  }
  const seed = seedField(b);

  return {
    model: (b.model as string | null | undefined) ?? null,
    prompts: ps, maxTokens, sampling, n, stop, stream, includeUsage,
    echo: b.echo === true, logprobs, seed,
  };
}
