// The OpenAI-compatible server over real HTTP on 127.0.0.1 (ephemeral port), on the small
// TinyStories checkpoint: log-likelihood requests as lm-evaluation-harness sends them, generation,
// stop sequences, token-id prompts, streaming, 4xx answers, and queued concurrent requests.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from '../src/models/generate.js';
import { loadServedModel } from '../src/serve/model.js';
import { QueueFullError, RequestQueue } from '../src/serve/queue.js';
import { startServer, type RunningServer } from '../src/serve/server.js';
import type { ServedModel } from '../src/serve/completions.js';
import { StoppableText } from '../src/serve/text-stream.js';
import { assetPath } from './helpers/assets.js';

const modelDir = assetPath('models/TinyStories-656K');
const skip = modelDir ? false : 'asset models/TinyStories-656K missing';

interface Lp { tokens: string[]; token_logprobs: (number | null)[]; top_logprobs: (Record<string, number> | null)[] | null; text_offset: number[] }
interface Choice { text: string; index: number; logprobs: Lp | null; finish_reason: string | null }
interface Completion { id: string; object: string; model: string; choices: Choice[]; usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } }

describe('serve', { skip }, () => {
  let served: ServedModel;
  let srv: RunningServer;
  let url: string;
  const post = (body: unknown, path = '/v1/completions'): Promise<Response> =>
    fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const complete = async (body: Record<string, unknown>): Promise<Completion> => {
    const r = await post(body);
    const j = await r.json() as Completion;
    assert.equal(r.status, 200, JSON.stringify(j));
    return j;
  };
  // Prompts of one request (and concurrent requests) run batched: one GEMM over all their rows,
  // whose kernel path depends on the row count, so their numbers agree with a lone forward to
  // float32 rounding (Decoder.forwardBatch: 1e-5 in logits), not bit for bit.
  const BATCH_TOL = 1e-5;
  const close = (a: (number | null)[], b: (number | null)[], tol = BATCH_TOL): void => {
    assert.equal(a.length, b.length);
    a.forEach((x, i) => assert.ok(x === b[i] || (x !== null && b[i] !== null && Math.abs(x - b[i]!) < tol), `token ${i}: ${x} vs ${b[i]}`));
  };
  /** The engine's own log-softmax of token t given tokens < t (float64), for t ≥ 1. */
  const engineLogprobs = (ids: number[]): number[] => {
    const m = served.model, V = m.config.vocabSize;
    const logits = m.forward(ids, m.newCache(), { logits: 'all' });
    const out: number[] = [];
    for (let t = 1; t < ids.length; t++) {
      const row = logits.subarray((t - 1) * V, t * V);
      let max = -Infinity;
      for (const v of row) if (v > max) max = v;
      let s = 0;
      for (const v of row) s += Math.exp(v - max);
      out.push(row[ids[t]!]! - (Math.log(s) + max));
    }
    return out;
  };

  before(async () => {
    served = loadServedModel(modelDir!, { name: 'tiny' });
    srv = await startServer(served, 0, '127.0.0.1', { maxBodyBytes: 64 * 1024, maxPrompts: 8 });
    url = srv.url;
  });
  after(async () => { await srv?.close(); });

  it('lists the model', async () => {
    const j = await (await fetch(`${url}/v1/models`)).json() as { object: string; data: { id: string; object: string }[] };
    assert.equal(j.object, 'list');
    assert.deepEqual(j.data.map((m) => [m.id, m.object]), [['tiny', 'model']]);
    assert.equal((await fetch(`${url}/v1/models/tiny`)).status, 200);
    assert.equal((await fetch(`${url}/v1/models/other`)).status, 404);
  });

  it('echo + max_tokens 0 + logprobs: the engine\'s own log-softmax, lm-eval\'s shape', async () => {
    const prompt = 'Once upon a time, there was a little dog named Max. He liked to run in the park.';
    const ids = served.tokenizer.encode(prompt, { addBos: true });
    const j = await complete({ model: 'tiny', prompt, max_tokens: 0, echo: true, logprobs: 3, temperature: 0 });
    assert.equal(j.object, 'text_completion');
    const c = j.choices[0]!;
    const lp = c.logprobs!;
    assert.equal(lp.tokens.length, ids.length);
    assert.equal(lp.token_logprobs[0], null);
    assert.equal(lp.top_logprobs![0], null);
    const want = engineLogprobs(ids);
    for (let t = 1; t < ids.length; t++) assert.ok(Math.abs(lp.token_logprobs[t]! - want[t - 1]!) < 1e-9, `token ${t}: ${lp.token_logprobs[t]} vs ${want[t - 1]}`);
    // lm-eval's is_greedy: the token's logprob equals the best alternative's exactly when greedy.
    for (let t = 1; t < ids.length; t++) {
      const top = lp.top_logprobs![t]!;
      assert.equal(Object.keys(top).length, 3);
      assert.ok(Math.max(...Object.values(top)) >= lp.token_logprobs[t]!);
    }
    assert.ok(lp.token_logprobs.slice(1).some((x, i) => x === Math.max(...Object.values(lp.top_logprobs![i + 1]!))), 'some prompt token is the greedy choice');
    // text_offset locates every token's text in the echoed text.
    lp.tokens.forEach((tok, i) => assert.equal(c.text.slice(lp.text_offset[i], lp.text_offset[i]! + tok.length), tok));
    assert.equal(c.text, lp.tokens.join(''));
    assert.deepEqual(j.usage, { prompt_tokens: ids.length, completion_tokens: 0, total_tokens: ids.length });
  });

  it('token-id prompts (batched, as lm-eval sends them) score like the text prompt', async () => {
    const a = served.tokenizer.encode('The cat sat on the mat.', { addBos: true });
    const b = served.tokenizer.encode('Lily saw a big red ball.', { addBos: true });
    const j = await complete({ prompt: [a, b], max_tokens: 1, echo: true, logprobs: 1, temperature: 0 });
    assert.deepEqual(j.choices.map((c) => c.index), [0, 1]);
    for (const [i, ids] of [a, b].entries()) {
      const lp = j.choices[i]!.logprobs!;
      // max_tokens 1 (newer lm-eval): the prompt's tokens, then one generated one.
      assert.equal(lp.token_logprobs.length, ids.length + 1);
      const want = engineLogprobs(ids);
      for (let t = 1; t < ids.length; t++) assert.ok(Math.abs(lp.token_logprobs[t]! - want[t - 1]!) < BATCH_TOL);
    }
    const single = await complete({ prompt: a, max_tokens: 0, echo: true, logprobs: 0 });
    assert.equal(single.choices[0]!.logprobs!.top_logprobs, null);
    close(single.choices[0]!.logprobs!.token_logprobs, j.choices[0]!.logprobs!.token_logprobs.slice(0, a.length));
  });

  // lm-evaluation-harness `local-completions` (lm_eval/models/openai_completions.py, api_models.py):
  // loglikelihood sends {model, prompt, temperature: 0, max_tokens: 1, logprobs: 1, seed: 1234,
  // echo: true} with prompt = a list of token-id lists (tokenized_requests, the default; one list
  // per request of the batch) or, with tokenized_requests=False, a string (batch 1) or a list of
  // strings; older releases sent max_tokens 0 and logprobs 10. It sorts choices by `index` and
  // reads token_logprobs[ctxlen:-1] (max_tokens 1) or [ctxlen:] (max_tokens 0) and top_logprobs
  // over the same span: is_greedy when every token's logprob equals the best alternative's.
  // generate_until sends {prompt, model, max_tokens, temperature: 0, stop: until + [EOS string],
  // seed: 1234} and reads choices[i].text by index.
  /** lm-eval's reading of a loglikelihood answer: (sum of continuation logprobs, is_greedy) per prompt. */
  const lmEvalLoglikelihood = (j: Completion, ctxlens: number[], dropLast: boolean): [number, boolean][] =>
    [...j.choices].sort((x, y) => x.index - y.index).map((c, i) => {
      const end = dropLast ? -1 : undefined;
      const lps = c.logprobs!.token_logprobs.slice(ctxlens[i]!, end) as number[];
      const tops = c.logprobs!.top_logprobs!.slice(ctxlens[i]!, end);
      let greedy = true;
      lps.forEach((x, t) => { if (x !== Math.max(...Object.values(tops[t]!))) greedy = false; });
      return [lps.reduce((a, b) => a + b, 0), greedy];
    });
  /** The engine's answer: log P(continuation | context) and whether every continuation token is the argmax. */
  const engineLoglikelihood = (ids: number[], ctxlen: number): [number, boolean] => {
    const m = served.model, V = m.config.vocabSize;
    const logits = m.forward(ids, m.newCache(), { logits: 'all' });
    let sum = 0, greedy = true;
    for (let t = ctxlen; t < ids.length; t++) {
      const row = logits.subarray((t - 1) * V, t * V);
      let max = -Infinity, arg = 0;
      row.forEach((v, i) => { if (v > max) { max = v; arg = i; } });
      let z = 0;
      for (const v of row) z += Math.exp(v - max);
      sum += row[ids[t]!]! - (Math.log(z) + max);
      if (arg !== ids[t]) greedy = false;
    }
    return [sum, greedy];
  };
  const lmEvalPairs = (): { ids: number[]; ctxlen: number }[] => {
    const enc = (t: string): number[] => served.tokenizer.encode(t, { addBos: false });
    // (context, continuation) pairs encoded as lm-eval does: the whole string, context length from the context alone.
    return [['Lily had a red ball.', ' She liked to play with it.'], ['Once upon a time, there was a', ' cat'], ['Tom was sad because', ' his toy was broken.']]
      .map(([ctx, cont]) => ({ ids: [served.tokenizer.bosId!, ...enc(ctx! + cont!)], ctxlen: 1 + enc(ctx!).length }));
  };

  it('lm-eval loglikelihood: batched token-id prompts, max_tokens 1, logprobs 1, read as lm-eval reads them', async () => {
    const pairs = lmEvalPairs();
    const body = { model: 'tiny', prompt: pairs.map((p) => p.ids), temperature: 0, max_tokens: 1, logprobs: 1, seed: 1234, echo: true };
    const j = await complete(body);
    assert.deepEqual(j.choices.map((c) => c.index), [0, 1, 2]);
    const got = lmEvalLoglikelihood(j, pairs.map((p) => p.ctxlen), true);
    pairs.forEach((p, i) => {
      const lp = j.choices[i]!.logprobs!;
      // The prompt's tokens, then the one generated token (which lm-eval drops).
      assert.equal(lp.token_logprobs.length, p.ids.length + 1);
      assert.equal(lp.top_logprobs!.length, p.ids.length + 1);
      const [want, greedy] = engineLoglikelihood(p.ids, p.ctxlen);
      assert.ok(Math.abs(got[i]![0] - want) < 1e-4, `pair ${i}: ${got[i]![0]} vs ${want}`);
      assert.equal(got[i]![1], greedy);
    });
    // Batch size 1 (lm-eval's default) sends a list holding one token list: the same numbers.
    for (const [i, p] of pairs.entries()) {
      const one = await complete({ ...body, prompt: [p.ids] });
      assert.equal(one.choices.length, 1);
      close(one.choices[0]!.logprobs!.token_logprobs, j.choices[i]!.logprobs!.token_logprobs);
    }
    // A continuation that is the greedy choice is reported as greedy.
    const ctx = served.tokenizer.encode('Once upon a time', { addBos: true });
    const m = served.model, V = m.config.vocabSize;
    const row = m.forward(ctx, m.newCache(), { logits: 'last' });
    let best = 0;
    for (let i = 1; i < V; i++) if (row[i]! > row[best]!) best = i;
    const g = await complete({ ...body, prompt: [[...ctx, best]] });
    assert.deepEqual(lmEvalLoglikelihood(g, [ctx.length], true).map((x) => x[1]), [true]);
  });

  it('lm-eval loglikelihood, older payload: max_tokens 0, logprobs 10, read up to the end', async () => {
    const pairs = lmEvalPairs();
    const j = await complete({ model: 'tiny', prompt: pairs.map((p) => p.ids), echo: true, max_tokens: 0, temperature: 0, logprobs: 10, seed: 1234 });
    const got = lmEvalLoglikelihood(j, pairs.map((p) => p.ctxlen), false);
    pairs.forEach((p, i) => {
      assert.equal(j.choices[i]!.logprobs!.token_logprobs.length, p.ids.length);
      assert.ok(j.choices[i]!.logprobs!.top_logprobs!.slice(1).every((t) => Object.keys(t!).length === 10));
      const [want, greedy] = engineLoglikelihood(p.ids, p.ctxlen);
      assert.ok(Math.abs(got[i]![0] - want) < 1e-4);
      assert.equal(got[i]![1], greedy);
      assert.equal(j.choices[i]!.finish_reason, 'length');
    });
  });

  it('lm-eval loglikelihood with string prompts (tokenized_requests=False): one string, or a batch of strings', async () => {
    const texts = ['The cat sat on the mat.', 'Lily saw a big red ball in the park.'];
    const idsOf = (t: string): number[] => served.tokenizer.encode(t, { addBos: true });
    const batch = await complete({ model: 'tiny', prompt: texts, temperature: 0, max_tokens: 1, logprobs: 1, seed: 1234, echo: true });
    assert.deepEqual(batch.choices.map((c) => c.index), [0, 1]);
    for (const [i, t] of texts.entries()) {
      const single = await complete({ model: 'tiny', prompt: t, temperature: 0, max_tokens: 1, logprobs: 1, seed: 1234, echo: true });
      const asIds = await complete({ model: 'tiny', prompt: [idsOf(t)], temperature: 0, max_tokens: 1, logprobs: 1, seed: 1234, echo: true });
      close(single.choices[0]!.logprobs!.token_logprobs, batch.choices[i]!.logprobs!.token_logprobs);
      // A text prompt is the tokenizer's encoding with its BOS: the same scores as those ids.
      assert.deepEqual(asIds.choices[0]!.logprobs!.token_logprobs, single.choices[0]!.logprobs!.token_logprobs);
      assert.ok(batch.choices[i]!.text.startsWith(t));
      // max_tokens 0, logprobs 1: the same prompt scores, nothing generated.
      const zero = await complete({ model: 'tiny', prompt: t, temperature: 0, max_tokens: 0, logprobs: 1, echo: true });
      assert.deepEqual(zero.choices[0]!.logprobs!.token_logprobs, single.choices[0]!.logprobs!.token_logprobs.slice(0, -1));
      assert.equal(zero.choices[0]!.logprobs!.token_logprobs.length, idsOf(t).length);
      assert.equal(zero.usage.completion_tokens, 0);
    }
  });

  it('max_tokens 1 that samples end-of-sequence still reports that token last, so lm-eval drops the right one', async () => {
    const ids = served.tokenizer.encode('One day, a little girl named Sue', { addBos: true });
    const m = served.model, V = m.config.vocabSize;
    const row = m.forward(ids, m.newCache(), { logits: 'last' });
    let best = 0;
    for (let i = 1; i < V; i++) if (row[i]! > row[best]!) best = i;
    // A server for which the greedy next token ends the sequence.
    const eosSrv = await startServer({ ...served, eosIds: new Set([best]) }, 0, '127.0.0.1');
    try {
      const r = await fetch(`${eosSrv.url}/v1/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'tiny', prompt: [ids], temperature: 0, max_tokens: 1, logprobs: 1, seed: 1234, echo: true }),
      });
      const j = await r.json() as Completion;
      assert.equal(r.status, 200);
      const c = j.choices[0]!, lp = c.logprobs!;
      assert.equal(c.finish_reason, 'stop');
      assert.equal(lp.token_logprobs.length, ids.length + 1);
      assert.equal(lp.tokens[ids.length], '');
      assert.equal(lp.text_offset[ids.length], c.text.length);
      assert.equal(lp.token_logprobs[ids.length], Math.max(...Object.values(lp.top_logprobs![ids.length]!)));
      assert.equal(c.text, lp.tokens.slice(0, ids.length).join(''));
      assert.deepEqual(j.usage, { prompt_tokens: ids.length, completion_tokens: 1, total_tokens: ids.length + 1 });
      // lm-eval's [ctxlen:-1] then covers exactly the prompt's continuation tokens.
      const ctxlen = ids.length - 3;
      const [want] = engineLoglikelihood(ids, ctxlen);
      assert.ok(Math.abs(lmEvalLoglikelihood(j, [ctxlen], true)[0]![0] - want) < 1e-6);
      // Streaming carries the same entry in its last chunk.
      const sr = await fetch(`${eosSrv.url}/v1/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: [ids], temperature: 0, max_tokens: 1, logprobs: 1, echo: true, stream: true }),
      });
      const parts = (await sr.text()).split('\n\n').filter((e) => e.startsWith('data: {')).map((e) => (JSON.parse(e.slice(6)) as Completion).choices[0]!);
      assert.deepEqual(parts.flatMap((p) => p.logprobs!.token_logprobs), lp.token_logprobs);
    } finally {
      await eosSrv.close();
    }
  });

  it('lm-eval generate_until: batched token-id prompts with stop = until + EOS string, texts by index', async () => {
    const prompts = ['Once upon a time', 'The little dog'].map((t) => served.tokenizer.encode(t, { addBos: true }));
    const until = ['\n\n', '.', served.tokenizer.idToToken(served.tokenizer.eosId!) ?? '</s>'];
    const body = { prompt: prompts, model: 'tiny', max_tokens: 32, temperature: 0, stop: until, seed: 1234 };
    const j = await complete(body);
    const texts: string[] = [];
    for (const c of j.choices) texts[c.index] = c.text;
    for (const [i, ids] of prompts.entries()) {
      const want: number[] = [];
      for await (const id of generate(served.model, ids, { maxTokens: 32, temperature: 0, stopIds: [...served.eosIds] })) want.push(id);
      const full = served.tokenizer.decode([...ids, ...want]).slice(served.tokenizer.decode(ids).length);
      const cuts = until.map((s) => full.indexOf(s)).filter((x) => x >= 0);
      assert.equal(texts[i], cuts.length > 0 ? full.slice(0, Math.min(...cuts)) : full);
      assert.ok(!texts[i]!.includes('.'));
      // Each prompt alone gives the same text.
      assert.equal((await complete({ ...body, prompt: [ids] })).choices[0]!.text, texts[i]);
    }
  });

  it('greedy generation matches the engine\'s generate()', async () => {
    const prompt = 'Once upon a time';
    const ids = served.tokenizer.encode(prompt, { addBos: true });
    const want: number[] = [];
    for await (const id of generate(served.model, ids, { maxTokens: 24, temperature: 0, stopIds: [...served.eosIds] })) want.push(id);
    const j = await complete({ prompt, max_tokens: 24, temperature: 0 });
    const c = j.choices[0]!;
    assert.equal(c.text, served.tokenizer.decode([...ids, ...want]).slice(served.tokenizer.decode(ids).length));
    assert.equal(c.finish_reason, want.length === 24 ? 'length' : 'stop');
    // An end-of-sequence token, when sampled, counts as generated.
    assert.equal(j.usage.completion_tokens, want.length + (want.length < 24 ? 1 : 0));
  });

  it('stop sequences end the text before the earliest one', async () => {
    const full = (await complete({ prompt: 'Once upon a time', max_tokens: 40, temperature: 0 })).choices[0]!.text;
    const words = full.split(' ').filter((w) => w.length >= 3);
    const stop = ` ${words[3]}`;
    const at = full.indexOf(stop);
    assert.ok(at > 0, `"${stop}" occurs in "${full}"`);
    const j = await complete({ prompt: 'Once upon a time', max_tokens: 40, temperature: 0, stop: ['zzzz-never', stop], logprobs: 0 });
    assert.equal(j.choices[0]!.text, full.slice(0, at));
    assert.equal(j.choices[0]!.finish_reason, 'stop');
    // Streaming gives the same text, in pieces, then [DONE].
    const r = await post({ prompt: 'Once upon a time', max_tokens: 40, temperature: 0, stop, stream: true, stream_options: { include_usage: true } });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events = (await r.text()).split('\n\n').filter((e) => e !== '');
    assert.ok(events.every((e) => e.startsWith('data: ')));
    assert.equal(events[events.length - 1], 'data: [DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)) as Completion);
    const withChoices = chunks.filter((c) => c.choices.length > 0);
    assert.ok(withChoices.length > 2);
    assert.equal(withChoices.map((c) => c.choices[0]!.text).join(''), full.slice(0, at));
    assert.equal(withChoices[withChoices.length - 1]!.choices[0]!.finish_reason, 'stop');
    assert.equal(chunks[chunks.length - 1]!.usage.prompt_tokens, served.tokenizer.encode('Once upon a time', { addBos: true }).length);
  });

  it('streams echo and logprobs with the same content as the whole answer', async () => {
    const body = { prompt: 'One day, Tom', max_tokens: 12, temperature: 0, echo: true, logprobs: 2 };
    const whole = (await complete(body)).choices[0]!;
    const text = await (await post({ ...body, stream: true })).text();
    const parts = text.split('\n\n').filter((e) => e.startsWith('data: {')).map((e) => (JSON.parse(e.slice(6)) as Completion).choices[0]!);
    assert.equal(parts.map((p) => p.text).join(''), whole.text);
    assert.deepEqual(parts.flatMap((p) => p.logprobs!.token_logprobs), whole.logprobs!.token_logprobs);
    assert.deepEqual(parts.flatMap((p) => p.logprobs!.text_offset), whole.logprobs!.text_offset);
  });

  it('seeded sampling repeats; temperature and top_p are honoured', async () => {
    const body = { prompt: 'Once upon a time', max_tokens: 16, temperature: 1, top_p: 0.9, top_k: 40, seed: 7 };
    const a = await complete(body), b = await complete(body);
    assert.equal(a.choices[0]!.text, b.choices[0]!.text);
  });

  it('answers bad requests with OpenAI-shaped 4xx errors', async () => {
    const expectError = async (r: Response, status: number, param?: string): Promise<void> => {
      const j = await r.json() as { error: { message: string; type: string; param: string | null } };
      assert.equal(r.status, status, JSON.stringify(j));
      assert.equal(typeof j.error.message, 'string');
      assert.ok(j.error.message.length > 10);
      assert.equal(typeof j.error.type, 'string');
      if (param) assert.equal(j.error.param, param);
    };
    await expectError(await post('{"prompt": '), 400);
    await expectError(await post('[1, 2]'), 400);
    await expectError(await post({ prompt: 'x', max_token: 3 }), 400, 'max_token');
    await expectError(await post({ prompt: 'x', n: 99 }), 400, 'n');
    await expectError(await post({ prompt: 'x', max_tokens: -1 }), 400, 'max_tokens');
    await expectError(await post({ prompt: 'x', temperature: 'hot' }), 400, 'temperature');
    await expectError(await post({ prompt: 'x', logprobs: 99 }), 400, 'logprobs');
    await expectError(await post({ prompt: 'x', stop: Array.from({ length: 33 }, (_, i) => `s${i}`) }), 400, 'stop');
    await expectError(await post({ prompt: [[1, 2], 'x'] }), 400, 'prompt');
    await expectError(await post({}), 400, 'prompt');
    await expectError(await post({ prompt: Array.from({ length: 9 }, () => 'x') }), 400, 'prompt');
    await expectError(await post({ prompt: 'x', model: 'gpt-4' }), 404, 'model');
    await expectError(await post({ prompt: 'x'.repeat(70 * 1024) }), 413);
    await expectError(await post({ prompt: [1, 99999] }), 422, 'prompt');
    await expectError(await post({ prompt: 'Once', max_tokens: served.contextLength }), 422, 'max_tokens');
    await expectError(await post({ prompt: Array.from({ length: served.contextLength + 1 }, () => 5), max_tokens: 0 }), 422, 'prompt');
    await expectError(await fetch(`${url}/v1/completions`), 405);
    await expectError(await fetch(`${url}/v1/chat`), 404);
    // The server is still healthy afterwards.
    assert.equal((await fetch(`${url}/health`)).status, 200);
  });

  it('runs concurrent requests in shared batched steps and completes them all, each as if alone', async () => {
    const bodies = [0, 1, 2, 3, 4].map((i) => ({ prompt: ['Once upon a time', 'The sun', 'Tom and Sue', 'A big dog', 'In the park'][i], max_tokens: 12, temperature: 0 }));
    const alone = [];
    for (const b of bodies) alone.push((await complete(b)).choices[0]!.text);
    const health = async (): Promise<{ steps: number; sequenceSteps: number }> => await (await fetch(`${url}/health`)).json() as { steps: number; sequenceSteps: number };
    const h0 = await health();
    const together = await Promise.all(bodies.map((b) => complete(b)));
    assert.deepEqual(together.map((j) => j.choices[0]!.text), alone);
    const h1 = await health();
    const steps = h1.steps - h0.steps, seqSteps = h1.sequenceSteps - h0.sequenceSteps;
    // Alone, 5 × (1 prefill + ≤ 11 decode steps); together most steps carry several sequences.
    assert.ok(seqSteps >= 5 * 2 && steps < seqSteps / 2, `${seqSteps} sequence steps in ${steps} steps`);
  });
});

describe('request queue', () => {
  it('with one slot: runs jobs one at a time in order and refuses beyond its bound', async () => {
    const q = new RequestQueue(1, 1);
    const order: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const a = q.run(async () => { order.push('a start'); await gate; order.push('a end'); return 1; });
    const b = q.run(async () => { order.push('b'); return 2; });
    await new Promise((r) => setImmediate(r));
    assert.ok(q.busy);
    assert.equal(q.pending, 1);
    assert.throws(() => q.run(async () => 3), QueueFullError);
    release();
    assert.deepEqual(await Promise.all([a, b]), [1, 2]);
    assert.deepEqual(order, ['a start', 'a end', 'b']);
    // A failing job does not stop the next.
    await assert.rejects(q.run(async () => { throw new Error('boom'); }), /boom/);
    assert.equal(await q.run(async () => 4), 4);
  });

  it('with k slots: k jobs run together, the next starts when one ends, in arrival order', async () => {
    const q = new RequestQueue(2, 8);
    const gates: (() => void)[] = [];
    const started: number[] = [];
    const jobs = [0, 1, 2, 3].map((i) => q.run(async () => { started.push(i); await new Promise<void>((r) => gates.push(r)); return i; }));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(started, [0, 1]);
    assert.equal(q.running, 2);
    assert.equal(q.pending, 2);
    gates[1]!();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(started, [0, 1, 2]);
    gates[0]!(); await new Promise((r) => setImmediate(r));
    gates[2]!(); gates[3]!();
    assert.deepEqual(await Promise.all(jobs), [0, 1, 2, 3]);
  });
});

describe('stop sequences in streamed text', () => {
  it('holds back a possible stop prefix and cuts at the earliest stop', () => {
    const s = new StoppableText<number>(['END', 'xy']);
    assert.equal(s.push('abc E', 1), false);
    assert.deepEqual(s.release(false), { text: 'abc ', tokens: [] });
    assert.equal(s.push('N', 2), false);
    assert.equal(s.release(false).text, '');
    assert.equal(s.push('Dzz', 3), true);
    const fin = s.release(true);
    assert.equal(fin.text, '');
    assert.deepEqual(fin.tokens.map((t) => t.info), [1]);
    const t = new StoppableText<number>(['E']);
    t.push('ab', 1);
    assert.deepEqual(t.release(false).tokens.map((x) => x.info), [1]);
    t.push('c', 2);
    assert.deepEqual(t.release(true), { text: 'c', tokens: [{ piece: 'c', offset: 2, info: 2 }] });
  });
});
