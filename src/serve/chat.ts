// /v1/chat/completions: the messages rendered into a prompt by the model's own chat template
// (tokenizer_config.json "chat_template", a chat_template.jinja / chat_template.json beside it, a
// GGUF's tokenizer.chat_template, or serve --chat-template FILE) with @huggingface/jinja — the Jinja implementation transformers.js
// renders templates with, maintained by Hugging Face — given what transformers'
// apply_chat_template passes (messages, add_generation_prompt, bos_token, eos_token and the other
// special tokens), then tokenized without adding special tokens (the template writes them), as
// apply_chat_template(tokenize=True) does. The answer is OpenAI's chat.completion shape.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { readGguf } from '../io/gguf.js';
import { badRequest } from './errors.js';
import type { ChoiceLogprobs } from './completions.js';
import { choiceCount, isInt, rejectUnknown, samplingFields, seedField, stopAndStream } from './validate.js';
import type { SamplingParams } from './sampling.js';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatRequest {
  model: string | null;
  messages: ChatMessage[];
  /** null: up to the context. */
  maxTokens: number | null;
  sampling: SamplingParams;
  n: number;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
  /** null: no logprobs; k ≥ 0: each token's logprob and its k most likely alternatives. */
  logprobs: number | null;
  seed: number | null;
}

export class ChatTemplateError extends Error {
  override name = 'ChatTemplateError';
}

/** A compiled chat template and the special-token strings it is rendered with. */
export class ChatTemplate {
  private readonly template: Template;

  constructor(readonly source: string, private readonly specials: Record<string, string>, where: string) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new ChatTemplateError(`${where}: the chat template does not parse: ${(e as Error).message}`);
    }
  }

  /** The prompt text for `messages`, ending where the assistant's answer starts. */
  render(messages: readonly ChatMessage[]): string {
    try {
      return this.template.render({ ...this.specials, messages, add_generation_prompt: true });
    } catch (e) {
      // raise_exception() in a template (e.g. "roles must alternate") is the client's error.
      throw badRequest(`the chat template refused these messages: ${(e as Error).message}`, 'messages', 'chat_template_error');
    }
  }
}

function readJson(path: string): Record<string, unknown> {
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('expected a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new ChatTemplateError(`${path}: ${(e as Error).message}`);
  }
}

/** tokenizer_config's chat_template: a string, or a list of named templates (the one named "default"). */
function templateOf(v: unknown, where: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const named = v.find((t) => typeof t === 'object' && t !== null && (t as Record<string, unknown>).name === 'default') as Record<string, unknown> | undefined;
    if (named && typeof named.template === 'string') return named.template;
    throw new ChatTemplateError(`${where}: chat_template is a list without a template named "default"`);
  }
  throw new ChatTemplateError(`${where}: chat_template must be a string or a list of {name, template}`);
}

/** tokenizer_config.json writes special tokens as a string or as an AddedToken object. */
function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as Record<string, unknown>).content === 'string') return (v as Record<string, unknown>).content as string;
  return null;
}

/**
 * The chat template of a model folder (or of `file`, a .jinja text or a JSON with "chat_template",
 * when given); null when the model has none. Special tokens come from the folder's tokenizer config.
 */
export function loadChatTemplate(folder: string | null, file?: string): ChatTemplate | null {
  const cfgPath = folder && statSync(folder).isDirectory() ? join(folder, 'tokenizer_config.json') : null;
  const cfg = cfgPath && existsSync(cfgPath) ? readJson(cfgPath) : {};
  const specials: Record<string, string> = {};
  for (const k of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
    const t = tokenText(cfg[k]);
    if (t !== null) specials[k] = t;
  }
  if (file !== undefined) {
    if (!existsSync(file) || statSync(file).isDirectory()) throw new ChatTemplateError(`${file}: no such chat template file`);
    const text = file.endsWith('.json') ? templateOf(readJson(file).chat_template, file) : readFileSync(file, 'utf8');
    if (text === null) throw new ChatTemplateError(`${file}: has no chat_template`);
    return new ChatTemplate(text, specials, file);
  }
  if (!folder || !cfgPath) return null;
  const fromConfig = templateOf(cfg.chat_template, cfgPath);
  if (fromConfig !== null) return new ChatTemplate(fromConfig, specials, cfgPath);
  // transformers ≥ 4.43 saves the template beside the config.
  const jinja = join(folder, 'chat_template.jinja');
  if (existsSync(jinja)) return new ChatTemplate(readFileSync(jinja, 'utf8'), specials, jinja);
  const json = join(folder, 'chat_template.json');
  if (existsSync(json)) {
    const t = templateOf(readJson(json).chat_template, json);
    if (t !== null) return new ChatTemplate(t, specials, json);
  }
  return null;
}

/**
 * A GGUF's own template (metadata tokenizer.chat_template, where llama.cpp's convert_hf_to_gguf.py
 * stores the source's), with the BOS/EOS/UNK/PAD token texts from its vocabulary; null without one.
 */
export function ggufChatTemplate(path: string): ChatTemplate | null {
  const f = readGguf(path);
  const t = f.getString('tokenizer.chat_template');
  if (t === undefined) return null;
  const tokens = f.getStringArray('tokenizer.ggml.tokens') ?? [];
  const specials: Record<string, string> = {};
  const keys = { bos_token: 'bos_token_id', eos_token: 'eos_token_id', unk_token: 'unknown_token_id', pad_token: 'padding_token_id' };
  for (const [name, key] of Object.entries(keys)) {
    const id = f.getNumber(`tokenizer.ggml.${key}`);
    if (id !== undefined && tokens[id] !== undefined) specials[name] = tokens[id]!;
  }
  return new ChatTemplate(t, specials, `${path} (tokenizer.chat_template)`);
}

/**
 * Where the chat template of a served model is looked for: beside its tokenizer, as the model
 * loader finds it — the --tokenizer folder (or the folder of a tokenizer file), else the model
 * folder, or the folder a .gguf / llama2.c .bin sits in.
 */
export function chatTemplateFolder(modelPath: string, tokenizer?: string): string {
  const p = tokenizer ?? modelPath;
  return existsSync(p) && statSync(p).isDirectory() ? p : dirname(p);
}

const KNOWN = new Set([
  'model', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'top_k', 'min_p', 'n', 'stop', 'stream',
  'stream_options', 'logprobs', 'top_logprobs', 'seed', 'presence_penalty', 'frequency_penalty', 'repetition_penalty',
  'logit_bias', 'user', 'response_format',
]);

const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool']);

function messageContent(v: unknown, i: number): string {
  if (typeof v === 'string') return v;
  if (v === null || v === undefined) return '';
  // Content parts: only text parts, joined (as vLLM does for text-only models).
  if (Array.isArray(v) && v.every((p) => typeof p === 'object' && p !== null && (p as Record<string, unknown>).type === 'text' && typeof (p as Record<string, unknown>).text === 'string')) {
    return (v as { text: string }[]).map((p) => p.text).join('\n');
  }
  throw badRequest(`messages[${i}].content must be a string or an array of {"type": "text", "text": …} parts`, 'messages');
}

export function validateChatRequest(body: unknown, limits: { maxN: number; maxLogprobs: number }): ChatRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the request body must be a JSON object');
  const b = body as Record<string, unknown>;
  rejectUnknown(b, KNOWN);
  if (b.model !== undefined && b.model !== null && typeof b.model !== 'string') throw badRequest('model must be a string', 'model');
  if (!Array.isArray(b.messages) || b.messages.length === 0) throw badRequest('messages must be a non-empty array of {role, content}', 'messages');
  const messages = b.messages.map((m, i): ChatMessage => {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw badRequest(`messages[${i}] must be an object {role, content}`, 'messages');
    const r = (m as Record<string, unknown>).role;
    if (typeof r !== 'string' || !ROLES.has(r)) throw badRequest(`messages[${i}].role must be one of ${[...ROLES].join(', ')}, got ${JSON.stringify(r)}`, 'messages');
    return { role: r, content: messageContent((m as Record<string, unknown>).content, i) };
  });
  const mt = b.max_completion_tokens ?? b.max_tokens ?? null;
  const mtKey = b.max_completion_tokens !== undefined && b.max_completion_tokens !== null ? 'max_completion_tokens' : 'max_tokens';
  if (mt !== null && (!isInt(mt) || mt < 1)) throw badRequest(`${mtKey} must be an integer ≥ 1, got ${JSON.stringify(mt)}`, mtKey);
  if (b.logit_bias !== undefined && b.logit_bias !== null && !(typeof b.logit_bias === 'object' && Object.keys(b.logit_bias as object).length === 0)) {
    throw badRequest('logit_bias is not supported', 'logit_bias');
  }
  const rf = b.response_format;
  if (rf !== undefined && rf !== null && !(typeof rf === 'object' && (rf as Record<string, unknown>).type === 'text')) {
    throw badRequest('only response_format {"type": "text"} is supported', 'response_format');
  }
  if (b.user !== undefined && b.user !== null && typeof b.user !== 'string') throw badRequest('user must be a string', 'user');
  if (b.logprobs !== undefined && b.logprobs !== null && typeof b.logprobs !== 'boolean') throw badRequest('logprobs must be true or false', 'logprobs');
  const top = b.top_logprobs ?? null;
  if (top !== null && (!isInt(top) || top < 0 || top > limits.maxLogprobs)) throw badRequest(`top_logprobs must be an integer in [0, ${limits.maxLogprobs}], got ${JSON.stringify(top)}`, 'top_logprobs');
  if (top !== null && b.logprobs !== true) throw badRequest('top_logprobs needs logprobs: true', 'top_logprobs');
  return {
    model: (b.model as string | null | undefined) ?? null,
    messages, maxTokens: mt as number | null, sampling: samplingFields(b), n: choiceCount(b, limits.maxN),
    ...stopAndStream(b), logprobs: b.logprobs === true ? (top ?? 0) : null, seed: seedField(b),
  };
}

export interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

/** The completions-style logprobs of a choice in the chat shape: {content: [{token, logprob, bytes, top_logprobs}]}. */
export function chatLogprobs(lp: ChoiceLogprobs | null): { content: ChatTokenLogprob[] } | null {
  if (!lp) return null;
  const bytes = (t: string): number[] => [...Buffer.from(t, 'utf8')];
  return {
    content: lp.tokens.map((token, i) => ({
      token, logprob: lp.token_logprobs[i] ?? 0, bytes: bytes(token),
      top_logprobs: Object.entries(lp.top_logprobs?.[i] ?? {}).map(([t, l]) => ({ token: t, logprob: l, bytes: bytes(t) })),
    })),
  };
}
