// Perplexity in the GPTQ / TransMLA convention (docs/methods.md#perplexity): the documents are
// joined with "\n\n" and tokenized once (one BOS at the very start), the ids are cut into
// non-overlapping chunks of ctx tokens (the tail shorter than ctx is dropped), every chunk is
// evaluated from an empty cache, each position predicts the next token inside its chunk
// (ctx − 1 predictions per chunk), and ppl = exp(mean NLL over all predictions).
// Sums run in float64.
import { readFileSync } from 'node:fs';
import type { Decoder } from '../models/decoder.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import { interruptPoint } from '../io/interrupt.js';
import { OptionError } from '../option-error.js';

/**
 * How a text file becomes one string:
 * - 'file': as is (a .txt whose documents are already separated by blank lines);
 * - 'jsonl': one JSON object per line, its `text` field a document; documents joined with "\n\n";
 * - 'lines': every line is a document (blank lines become empty documents), joined with "\n\n":
 *   how the papers read WikiText-2 through HF `datasets` (`"\n\n".join(test["text"])`).
 */
export type TextMode = 'file' | 'jsonl' | 'lines';

export function textModeFor(path: string): TextMode {
  return path.endsWith('.jsonl') ? 'jsonl' : 'file';
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EISDIR') throw new Error(`${path} is a folder; expected a text file (.txt, or .jsonl with "text" fields)`);
    if (code === 'ENOENT') throw new Error(`${path}: no such file`);
    throw new Error(`${path}: cannot read: ${(e as Error).message}`);
  }
}

export function readEvalText(path: string, mode: TextMode = textModeFor(path)): { text: string; documents: number } {
  const raw = readText(path);
  if (mode === 'file') return { text: raw, documents: raw.split(/\n\s*\n/).filter((d) => d.trim() !== '').length };
  if (mode === 'lines') {
    // Keep each line's newline, as `datasets` does; whitespace-only lines become "".
    const lines = raw.match(/[^\n]*\n|[^\n]+$/g) ?? [];
    const rows = lines.map((l) => (l.trim() === '' ? '' : l));
    return { text: rows.join('\n\n'), documents: rows.length };
  }
  const docs: string[] = [];
  const lines = raw.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!.trim();
    if (l === '') continue;
    let obj: unknown;
    try {
      obj = JSON.parse(l);
    } catch (e) {
      throw new Error(`${path}:${i + 1}: not valid JSON: ${(e as Error).message}`);
    }
    const t = (obj as { text?: unknown } | null)?.text;
    if (typeof t !== 'string') throw new Error(`${path}:${i + 1}: the object has no string "text" field`);
    docs.push(t);
  }
  if (docs.length === 0) throw new Error(`${path}: no documents`);
  return { text: docs.join('\n\n'), documents: docs.length };
}

export interface PerplexityOptions {
  ctx: number;
  /** Evaluate only the first N chunks. */
  maxChunks?: number;
  /** Rows of logits computed at once (bounds memory to rows × vocab floats). Default 256. */
  logitRows?: number;
  /** Called after each chunk with tokens processed so far and the total to process. */
  onProgress?(done: number, total: number): void;
}

export interface PerplexityResult {
  ppl: number;
  /** Mean NLL per predicted token (nats). */
  nll: number;
  /** Predicted tokens scored: chunks × (ctx − 1). */
  predictions: number;
  /** Tokens of the whole text (including the BOS). */
  textTokens: number;
  chunks: number;
  /** Chunks available in the text (before maxChunks). */
  chunksAvailable: number;
  ctx: number;
  convention: string;
}

export function conventionText(ctx: number, bos: boolean): string {
  return `GPTQ/TransMLA convention: documents joined with "\\n\\n", tokenized once${bos ? ' with one BOS at the start' : ' (no BOS)'}, ` +
    `non-overlapping ${ctx}-token chunks (tail dropped), each chunk from an empty cache, ` +
    `${ctx - 1} next-token predictions per chunk, ppl = exp(mean NLL)`;
}

/**
 * Token ids of a whole evaluation text, with one BOS at the start when the model's tokenizer
 * adds one by default (what `tokenizer(text)` does in the GPTQ/TransMLA code: Llama yes, Qwen2 no).
 */
export function tokenizeForPerplexity(tok: TextTokenizer, text: string, bos = tok.addBosByDefault): { ids: number[]; bos: boolean } {
  return { ids: tok.encode(text, { addBos: bos }), bos };
}

/** The longest default context: the GPTQ/TransMLA papers' 2048. */
export const MAX_DEFAULT_PPL_CONTEXT = 2048;

/**
 * The context a perplexity defaults to: the window the model was trained on (its
 * max_position_embeddings, or its sliding window when smaller), at most 2048 tokens.
 */
export function defaultPplContext(model: Decoder): number {
  return Math.min(MAX_DEFAULT_PPL_CONTEXT, model.config.maxPositionEmbeddings, model.slidingWindow ?? Infinity);
}

/** Token ids of (the start of) a text. */
export interface TokenizedText {
  ids: number[];
  bos: boolean;
  /** Characters tokenized: all of the text, or a prefix ending at a document boundary ("\n\n"). */
  chars: number;
  /** Whether the whole text was tokenized. */
  complete: boolean;
}

/** Tokens kept beyond `need` so the ids used lie well before the cut (only the last few can differ). */
const CUT_MARGIN = 64;

/**
 * Token ids of the start of `text`, enough for `need` tokens (all of it when need is undefined),
 * as tokenizeForPerplexity gives them for the whole text. Long texts are tokenized only as far
 * as needed: the text is cut at the first document boundary ("\n\n") past 8·need characters,
 * the cut doubled until it yields need + 64 tokens. BPE merges are local, so the first `need`
 * ids equal those of the whole text (test/tokenize-lazy.test.ts checks it on the shared texts).
 */
export async function tokenizeEnough(tok: TextTokenizer, text: string, need: number | undefined, bos = tok.addBosByDefault): Promise<TokenizedText> {
  const whole = async (): Promise<TokenizedText> => ({ ids: await tok.encodeAsync(text, { addBos: bos }), bos, chars: text.length, complete: true });
  if (need === undefined) return whole();
  let chars = Math.max(4096, need * 8);
  for (;;) {
    if (chars >= text.length) return whole();
    const cut = text.indexOf('\n\n', chars);
    if (cut < 0) return whole();
    const ids = await tok.encodeAsync(text.slice(0, cut), { addBos: bos });
    if (ids.length >= need + CUT_MARGIN) return { ids, bos, chars: cut, complete: false };
    chars *= 2;
  }
}

/** −log softmax(logits)[target], in float64. */
export function nllOf(logits: Float32Array, target: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return Math.log(sum) + max - logits[target]!;
}

export async function perplexity(model: Decoder, ids: readonly number[], bos: boolean, opts: PerplexityOptions): Promise<PerplexityResult> {
  const { ctx } = opts;
  if (!Number.isInteger(ctx) || ctx < 2) throw new Error(`ctx must be an integer ≥ 2, got ${ctx}`);
  const w = model.slidingWindow;
  if (w !== null && ctx > w) {
    throw new OptionError(`--ctx ${ctx} exceeds the model's sliding attention window of ${w} tokens; the engine implements full attention only, ` +
      `so perplexity would be computed with the wrong attention past position ${w}: use --ctx ${w} or less`);
  }
  const available = Math.floor(ids.length / ctx);
  if (available === 0) throw new Error(`the text has ${ids.length} tokens, fewer than one ${ctx}-token chunk`);
  const chunks = Math.min(available, opts.maxChunks ?? available);
  const V = model.config.vocabSize, D = model.config.hiddenSize;
  const block = Math.max(1, opts.logitRows ?? 256);
  const logits = new Float32Array(block * V);
  const cache = model.newCache();
  cache.reserve(ctx);
  let total = 0;
  for (let c = 0; c < chunks; c++) {
    const chunk = ids.slice(c * ctx, (c + 1) * ctx);
    const h = model.hidden(chunk, cache, 0);
    // The last position has no target inside the chunk.
    for (let r0 = 0; r0 < ctx - 1; r0 += block) {
      const rows = Math.min(block, ctx - 1 - r0);
      model.logitsFromHidden(h.subarray(r0 * D, (r0 + rows) * D), rows, logits);
      for (let r = 0; r < rows; r++) total += nllOf(logits.subarray(r * V, (r + 1) * V), chunk[r0 + r + 1]!);
    }
    opts.onProgress?.((c + 1) * ctx, chunks * ctx);
    // Yield between chunks (progress reaches the pipe; a pending SIGINT/SIGTERM stops here).
    await interruptPoint();
  }
  const predictions = chunks * (ctx - 1);
  const nll = total / predictions;
  return { ppl: Math.exp(nll), nll, predictions, textTokens: ids.length, chunks, chunksAvailable: available, ctx, convention: conventionText(ctx, bos) };
}
