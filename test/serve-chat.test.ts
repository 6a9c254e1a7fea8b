// /v1/chat/completions and the sampling controls of both endpoints, over real HTTP on 127.0.0.1,
// on TinyStories-656K given chat templates of the kinds models ship (Llama-2's, with
// raise_exception on roles out of turn, and ChatML's with add_generation_prompt): the rendered
// prompt is the text those templates define (written out here by hand), the answer is what
// /v1/completions gives for the rendered prompt's tokens, streamed chunks add up to it, and n,
// min_p, top_k and the penalties do what vLLM's sampler does.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng, sampleToken } from '../src/models/sample.js';
import { chatTemplateFolder, ggufChatTemplate, loadChatTemplate } from '../src/serve/chat.js';
import { writeGguf } from '../src/io/gguf.js';
import { loadServedModel } from '../src/serve/model.js';
import { SequenceSampler, type SamplingParams } from '../src/serve/sampling.js';
import { startServer, type RunningServer } from '../src/serve/server.js';
import type { ServedModel } from '../src/serve/completions.js';
import { writeCheckpoint } from '../src/io/checkpoint.js';
import { assetPath } from './helpers/assets.js';
import { randomLlama } from './helpers/random-llama.js';

const modelDir = assetPath('models/TinyStories-656K');
const skip = modelDir ? false : 'asset models/TinyStories-656K missing';
const tmp = mkdtempSync(join(tmpdir(), 'transmla-serve-chat-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

// meta-llama/Llama-2-7b-chat-hf tokenizer_config.json's chat_template.
const LLAMA2 = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
const CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** The model folder with its files linked and tokenizer_config.json given `chatTemplate`. */
function withTemplate(name: string, chatTemplate: string | null): string {
  const dir = join(tmp, name);
  mkdirSync(dir);
  for (const f of readdirSync(modelDir!)) if (f !== 'tokenizer_config.json') symlinkSync(join(modelDir!, f), join(dir, f));
  const cfg = JSON.parse(readFileSync(join(modelDir!, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(chatTemplate === null ? cfg : { ...cfg, chat_template: chatTemplate }));
  return dir;
}

interface ChatChoice { index: number; message: { role: string; content: string }; logprobs: { content: { token: string; logprob: number; bytes: number[]; top_logprobs: { token: string; logprob: number }[] }[] } | null; finish_reason: string }
interface Chat { id: string; object: string; model: string; choices: ChatChoice[]; usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } }
interface Completion { choices: { text: string; index: number; finish_reason: string }[]; usage: { prompt_tokens: number; completion_tokens: number } }

describe('serve: chat completions and sampling', { skip }, () => {
  let served: ServedModel;
  let srv: RunningServer, plain: RunningServer;
  const post = async (u: string, path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
    const r = await fetch(u + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: r.status, json: await r.json() as Record<string, unknown> };
  };
  const ok = async <T>(path: string, body: unknown): Promise<T> => {
    const r = await post(srv.url, path, body);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    return r.json as T;
  };
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Tell a story.' },
    { role: 'assistant', content: 'Once.' },
    { role: 'user', content: [{ type: 'text', text: 'More.' }] },
  ];
  const rendered = '<|start_story|>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nTell a story. [/INST] Once. <|end_story|><|start_story|>[INST] More. [/INST]';

  before(async () => {
    const dir = withTemplate('llama2', LLAMA2);
    served = loadServedModel(dir, { name: 'tiny' });
    srv = await startServer(served, 0, '127.0.0.1', { chatTemplate: loadChatTemplate(dir) });
    plain = await startServer(loadServedModel(withTemplate('none', null), { name: 'tiny' }), 0, '127.0.0.1', { chatTemplate: loadChatTemplate(withTemplate('none2', null)) });
  });
  after(async () => { await srv?.close(); await plain?.close(); });

  it('renders the model\'s template (special tokens, system prompt, content parts) as the template defines', () => {
    assert.equal(loadChatTemplate(withTemplate('r1', LLAMA2))!.render(messages.map((m) => ({ role: m.role, content: typeof m.content === 'string' ? m.content : m.content[0]!.text }))), rendered);
    assert.equal(loadChatTemplate(withTemplate('r2', CHATML))!.render([{ role: 'user', content: 'Hi' }]), '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
    // A template given as a file wins over the folder's; none at all is null.
    const file = join(tmp, 'chatml.jinja');
    writeFileSync(file, CHATML);
    assert.equal(loadChatTemplate(withTemplate('r3', LLAMA2), file)!.source, CHATML);
    assert.equal(loadChatTemplate(withTemplate('r4', null)), null);
    // Looked for beside the tokenizer: the --tokenizer folder, else the folder a .gguf sits in.
    const r5 = withTemplate('r5', CHATML);
    assert.equal(chatTemplateFolder(join(r5, 'model.gguf')), r5);
    assert.equal(chatTemplateFolder(join(tmp, 'elsewhere.gguf'), r5), r5);
    assert.equal(chatTemplateFolder(join(tmp, 'elsewhere.gguf'), join(r5, 'tokenizer.json')), r5);
    assert.equal(chatTemplateFolder(r5), r5);
    // A GGUF's own template (tokenizer.chat_template) renders with its vocabulary's BOS/EOS texts.
    const gguf = join(tmp, 'templated.gguf');
    writeGguf(gguf, {
      metadata: [
        { key: 'general.architecture', type: 'string', value: 'llama' },
        { key: 'tokenizer.chat_template', type: 'string', value: LLAMA2 },
        { key: 'tokenizer.ggml.tokens', type: 'array', itemType: 'string', value: ['<unk>', '<s>', '</s>', 'a'] },
        { key: 'tokenizer.ggml.bos_token_id', type: 'u32', value: 1 },
        { key: 'tokenizer.ggml.eos_token_id', type: 'u32', value: 2 },
      ],
      tensors: [],
    });
    assert.equal(ggufChatTemplate(gguf)!.render([{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Yo' }, { role: 'user', content: 'Go' }]), '<s>[INST] Hi [/INST] Yo </s><s>[INST] Go [/INST]');
  });

  it('answers in the chat.completion shape with what /v1/completions gives for the rendered prompt', async () => {
    const chat = await ok<Chat>('/v1/chat/completions', { messages, max_tokens: 12, temperature: 0 });
    assert.equal(chat.object, 'chat.completion');
    assert.match(chat.id, /^chatcmpl-/);
    assert.equal(chat.choices.length, 1);
    assert.equal(chat.choices[0]!.message.role, 'assistant');
    const ids = served.tokenizer.encode(rendered, { addBos: false });
    assert.equal(ids[0], served.tokenizer.bosId, 'the template\'s BOS');
    assert.notEqual(ids[1], served.tokenizer.bosId, 'not a second one added by the tokenizer');
    const cmpl = await ok<Completion>('/v1/completions', { prompt: ids, max_tokens: 12, temperature: 0 });
    assert.equal(chat.choices[0]!.message.content, cmpl.choices[0]!.text);
    assert.equal(chat.choices[0]!.finish_reason, cmpl.choices[0]!.finish_reason);
    assert.deepEqual(chat.usage.prompt_tokens, ids.length);
    assert.equal(chat.usage.completion_tokens, cmpl.usage.completion_tokens);
  });

  it('streams a role chunk, content deltas and a finish chunk that add up to the whole answer; logprobs in the chat shape', async () => {
    const body = { messages, max_tokens: 10, temperature: 0, logprobs: true, top_logprobs: 2 };
    const whole = await ok<Chat>('/v1/chat/completions', body);
    const lp = whole.choices[0]!.logprobs!.content;
    assert.ok(lp.length > 0);
    assert.equal(lp.map((t) => t.token).join(''), whole.choices[0]!.message.content);
    for (const t of lp) {
      assert.equal(t.top_logprobs.length, 2);
      assert.ok(t.logprob <= 0 && t.top_logprobs[0]!.logprob >= t.logprob - 1e-9, 'greedy: the chosen token is the most likely');
      assert.deepEqual(t.bytes, [...Buffer.from(t.token, 'utf8')]);
    }
    const r = await fetch(`${srv.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }) });
    const events = (await r.text()).split('\n\n').filter((e) => e !== '');
    assert.equal(events[events.length - 1], 'data: [DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)) as { object: string; choices: { delta: { role?: string; content?: string }; finish_reason: string | null }[]; usage?: unknown });
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
    assert.equal(chunks[0]!.choices[0]!.delta.role, 'assistant');
    const withChoice = chunks.filter((c) => c.choices.length > 0);
    assert.equal(withChoice.map((c) => c.choices[0]!.delta.content ?? '').join(''), whole.choices[0]!.message.content);
    assert.equal(withChoice[withChoice.length - 1]!.choices[0]!.finish_reason, whole.choices[0]!.finish_reason);
    assert.ok(chunks[chunks.length - 1]!.usage, 'the usage chunk comes last');
  });

  it('refuses what it cannot answer, in OpenAI\'s error shape', async () => {
    const err = async (u: string, body: unknown, status: number, param: string | null, code?: string): Promise<void> => {
      const r = await post(u, '/v1/chat/completions', body);
      const e = (r.json as { error: { message: string; param: string | null; code: string | null } }).error;
      assert.equal(r.status, status, JSON.stringify(r.json));
      assert.equal(e.param, param);
      if (code) assert.equal(e.code, code);
    };
    await err(plain.url, { messages: [{ role: 'user', content: 'Hi' }] }, 400, null, 'no_chat_template');
    await err(srv.url, { messages: [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }] }, 400, 'messages', 'chat_template_error');
    await err(srv.url, { messages: [] }, 400, 'messages');
    await err(srv.url, { messages: [{ role: 'wizard', content: 'x' }] }, 400, 'messages');
    await err(srv.url, { messages: [{ role: 'user', content: 'x' }], top_logprobs: 2 }, 400, 'top_logprobs');
    await err(srv.url, { messages: [{ role: 'user', content: 'x' }], tools: [] }, 400, 'tools');
    await err(srv.url, { messages: [{ role: 'user', content: 'x' }], max_tokens: served.contextLength }, 422, 'max_tokens');
    assert.equal((await fetch(`${srv.url}/v1/chat/completions`)).status, 405);
  });

  it('n > 1: n choices per prompt, choice j seeded with seed + j, for both endpoints', async () => {
    const body = { prompt: ['Once upon a time', 'The dog'], max_tokens: 8, temperature: 1, seed: 11, n: 3 };
    const many = await ok<Completion>('/v1/completions', body);
    assert.deepEqual(many.choices.map((c) => c.index), [0, 1, 2, 3, 4, 5]);
    let promptTokens = 0;
    for (const [i, prompt] of body.prompt.entries()) {
      for (let j = 0; j < 3; j++) {
        const one = await ok<Completion>('/v1/completions', { ...body, prompt, n: 1, seed: 11 + j });
        assert.equal(many.choices[i * 3 + j]!.text, one.choices[0]!.text, `prompt ${i}, choice ${j}`);
        if (j === 0) promptTokens += one.usage.prompt_tokens;
      }
    }
    assert.equal(many.usage.prompt_tokens, promptTokens, 'each prompt counted once, as OpenAI and vLLM count it');
    assert.ok(new Set(many.choices.slice(0, 3).map((c) => c.text)).size > 1, 'differently seeded choices differ');
    // Streamed, the choices' chunks interleave (they run together); each choice's pieces add up to its text.
    const r = await fetch(`${srv.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }) });
    const parts = (await r.text()).split('\n\n').filter((e) => e.startsWith('data: {')).map((e) => (JSON.parse(e.slice(6)) as Completion).choices[0]!);
    for (let c = 0; c < 6; c++) {
      assert.equal(parts.filter((x) => x.index === c).map((x) => x.text).join(''), many.choices[c]!.text, `streamed choice ${c}`);
      assert.equal(parts.filter((x) => x.index === c && x.finish_reason !== null).length, 1);
    }
    const order = parts.map((x) => x.index);
    assert.ok(order.some((x, i) => i > 0 && x < order[i - 1]!), 'chunks of different choices interleave');
    const chat = await ok<Chat>('/v1/chat/completions', { messages: messages.slice(0, 2), max_tokens: 6, temperature: 1, seed: 5, n: 2 });
    assert.deepEqual(chat.choices.map((c) => c.index), [0, 1]);
    assert.equal((await post(srv.url, '/v1/completions', { prompt: 'x', n: 17 })).status, 400);
    assert.equal((await post(srv.url, '/v1/completions', { prompt: 'x', n: 2, best_of: 3 })).status, 400);
  });

  it('penalties change greedy text the way they are defined; min_p and top_k are accepted', async () => {
    const base = { prompt: 'Once upon a time, there was a little girl named Lily. Lily', max_tokens: 24, temperature: 0 };
    const plainText = (await ok<Completion>('/v1/completions', base)).choices[0]!.text;
    const rep = (await ok<Completion>('/v1/completions', { ...base, repetition_penalty: 1.8 })).choices[0]!.text;
    const freq = (await ok<Completion>('/v1/completions', { ...base, frequency_penalty: 2 })).choices[0]!.text;
    assert.notEqual(rep, plainText);
    assert.notEqual(freq, plainText);
    // min_p 1 keeps only the most likely token: sampling at any temperature is greedy.
    const minp = (await ok<Completion>('/v1/completions', { ...base, temperature: 1.5, min_p: 1, seed: 3 })).choices[0]!.text;
    assert.equal(minp, plainText);
    const topk1 = (await ok<Completion>('/v1/completions', { ...base, temperature: 1.5, top_k: 1, seed: 3 })).choices[0]!.text;
    assert.equal(topk1, plainText);
    for (const bad of [{ min_p: 1.5 }, { repetition_penalty: 0 }, { presence_penalty: 3 }, { frequency_penalty: -2.5 }]) {
      assert.equal((await post(srv.url, '/v1/completions', { ...base, ...bad })).status, 400, JSON.stringify(bad));
    }
  });
});

describe('SequenceSampler', () => {
  const params = (over: Partial<SamplingParams>): SamplingParams => ({ temperature: 1, topP: 1, topK: 0, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, ...over });
  const row = Float32Array.from([2.0, 1.9, -0.5, 0.3, 1.0, -1.2]);

  it('repetition_penalty divides positive and multiplies negative logits of prompt and output tokens', () => {
    const s = new SequenceSampler(params({ repetitionPenalty: 2 }), [0, 2], new Rng(1));
    s.accept(4);
    assert.deepEqual([...s.penalised(row)], [1.0, 1.9, -1.0, 0.3, 0.5, -1.2].map((v) => Math.fround(v)));
    assert.equal(new SequenceSampler(params({ temperature: 0, repetitionPenalty: 2 }), [0], new Rng(1)).next(row), 1, 'greedy after the penalty');
  });

  it('presence and frequency penalties subtract per output occurrence (prompt tokens are not counted)', () => {
    const s = new SequenceSampler(params({ presencePenalty: 0.5, frequencyPenalty: 0.25 }), [1], new Rng(1));
    s.accept(0); s.accept(0); s.accept(3);
    const p = s.penalised(row);
    assert.ok(Math.abs(p[0]! - (2.0 - 0.5 - 0.5)) < 1e-6);
    assert.ok(Math.abs(p[3]! - (0.3 - 0.5 - 0.25)) < 1e-6);
    assert.equal(p[1], row[1]);
  });

  it('min_p keeps only tokens at least min_p × the most likely one\'s probability', () => {
    // p ∝ exp(logit): relative to token 0, token 1 is e^−0.1 ≈ 0.905, token 4 e^−1 ≈ 0.368, token 3 ≈ 0.18.
    const s = new SequenceSampler(params({ minP: 0.3 }), [], new Rng(9));
    const seen = new Set<number>();
    for (let i = 0; i < 400; i++) seen.add(s.next(row));
    assert.deepEqual([...seen].sort(), [0, 1, 4]);
  });

  it('without min_p and penalties it draws exactly as the engine\'s sampleToken (top_k as a mask, top_p nucleus)', () => {
    for (const over of [{}, { topK: 3 }, { topP: 0.8 }, { topK: 4, topP: 0.7, temperature: 0.7 }]) {
      const p = params(over);
      const s = new SequenceSampler(p, [], new Rng(42)), r = new Rng(42);
      for (let i = 0; i < 50; i++) {
        let logits = row;
        if (p.topK > 0) {
          const keep = new Set([...row].map((v, id) => [v, id] as const).sort((a, b) => b[0] - a[0]).slice(0, p.topK).map(([, id]) => id));
          logits = row.map((v, id) => (keep.has(id) ? v : -Infinity));
        }
        assert.equal(s.next(row), sampleToken(logits, { temperature: p.temperature, topP: p.topP }, r), JSON.stringify(over));
      }
    }
  });
});

describe('served context of a sliding-window model', { skip }, () => {
  it('defaults to the window (a longer sequence would fail every sequence batched with it) and refuses --ctx beyond it', async () => {
    const m = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, inter: 48, vocab: 2048, layers: 1, modelType: 'mistral', slidingWindow: 64, seed: 2 });
    const dir = join(tmp, 'windowed');
    mkdirSync(dir);
    await writeCheckpoint(dir, m.src.names().map((name) => ({ name, tensor: m.src.get(name) })));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(m.json));
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) symlinkSync(join(modelDir!, f), join(dir, f));
    assert.equal(loadServedModel(dir).contextLength, 64);
    assert.equal(loadServedModel(dir, { contextLength: 32 }).contextLength, 32);
    assert.throws(() => loadServedModel(dir, { contextLength: 100 }), /exceeds the model's sliding window of 64 tokens/);
  });
});
