// An OpenAI-compatible HTTP server on node:http for one model:
//   GET  /v1/models, /v1/models/{id}    the served model
//   POST /v1/completions                 text completion (stream as SSE), echo + logprobs
//   POST /v1/chat/completions            chat completion with the model's chat template (chat.ts)
//   GET  /health                         liveness, running and queued requests, batching counters
// Requests are validated as they arrive (bad ones get their 4xx at once, even when busy); up to
// maxConcurrent run together, every choice of every running request a sequence with its own KV
// cache, and their forwards are batched into shared steps (batcher.ts: continuous batching).
// Limits: request body size (413), choices per request, prompt + max_tokens ≤ the context (422),
// waiting requests (503). A client that disconnects is dropped from the queue or stopped.
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Batcher } from './batcher.js';
import { chatLogprobs, validateChatRequest, type ChatTemplate } from './chat.js';
import { checkTokenLimits, Completer, promptIds, type Choice, type ServedModel, type Usage } from './completions.js';
import { ApiError, badRequest } from './errors.js';
import { QueueFullError, RequestQueue } from './queue.js';
import { validateCompletionRequest, type CompletionRequest } from './validate.js';

export interface ServeOptions {
  /** Largest request body in bytes (default 1 MiB). */
  maxBodyBytes?: number;
  /** Choices per request: prompts × n (default 64). */
  maxPrompts?: number;
  /** Largest n (default 16). */
  maxN?: number;
  /** Requests running together, their forwards batched (default 16; 1: one request at a time). */
  maxConcurrent?: number;
  /** The chat template for /v1/chat/completions (null: the route answers that the model has none). */
  chatTemplate?: ChatTemplate | null;
  /** Largest `logprobs` (default 20). */
  maxLogprobs?: number;
  /** Requests that may wait while maxConcurrent run (default 256). */
  maxQueued?: number;
  /** Request lines to stderr (default off). */
  log?: (line: string) => void;
}

export interface RunningServer {
  server: Server;
  url: string;
  port: number;
  close(): Promise<void>;
}

const JSON_HEADERS = { 'Content-Type': 'application/json; charset=utf-8' };

function sendJson(res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...JSON_HEADERS, 'Content-Length': Buffer.byteLength(text), ...extra });
  res.end(text);
}

function sendError(res: ServerResponse, e: ApiError, extra: Record<string, string> = {}): void {
  if (res.headersSent) {
    // Mid-stream: the status line is gone, so the error becomes the last event.
    if (!res.writableEnded) res.end(`data: ${JSON.stringify(e.body())}\n\n`);
    return;
  }
  sendJson(res, e.status, e.body(), extra);
}

/**
 * The body as a string, or an ApiError 413 when it exceeds `limit`. An oversized body is still
 * read to its end (up to 16× the limit) so the client can receive the answer, then dropped.
 */
function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    const tooLarge = (): ApiError => new ApiError(413, `the request body exceeds ${limit} bytes`, null, 'request_too_large');
    const chunks: Buffer[] = [];
    let size = 0, over = Number.isFinite(declared) && declared > limit;
    req.on('data', (b: Buffer) => {
      size += b.length;
      if (size > limit) over = true;
      if (over) {
        chunks.length = 0;
        if (size > 16 * limit) req.destroy();
        return;
      }
      chunks.push(b);
    });
    req.on('end', () => (over ? reject(tooLarge()) : resolve(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', (e) => reject(over ? tooLarge() : e));
  });
}

/** How one endpoint shapes its answers: the whole response, and the streamed chunk of one choice. */
interface Shape {
  object: string;
  chunkObject: string;
  choice(c: Choice): Record<string, unknown>;
  /** The chunk(s) of a streamed piece; `first` is the choice's first piece. */
  chunks(c: Choice, first: boolean): Record<string, unknown>[];
}

const COMPLETION_SHAPE: Shape = {
  object: 'text_completion',
  chunkObject: 'text_completion',
  choice: (c) => ({ ...c }),
  chunks: (c) => [{ ...c }],
};

const CHAT_SHAPE: Shape = {
  object: 'chat.completion',
  chunkObject: 'chat.completion.chunk',
  choice: (c) => ({ index: c.index, message: { role: 'assistant', content: c.text }, logprobs: chatLogprobs(c.logprobs), finish_reason: c.finish_reason }),
  chunks: (c, first) => {
    const out: Record<string, unknown>[] = [];
    // OpenAI opens every choice with its role, then sends content deltas, then the finish reason alone.
    if (first) out.push({ index: c.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
    if (c.text !== '' || (c.logprobs && c.logprobs.tokens.length > 0)) out.push({ index: c.index, delta: { content: c.text }, logprobs: chatLogprobs(c.logprobs), finish_reason: null });
    if (c.finish_reason !== null) out.push({ index: c.index, delta: {}, logprobs: null, finish_reason: c.finish_reason });
    return out;
  },
};

export function startServer(served: ServedModel, port: number, host = '127.0.0.1', opts: ServeOptions = {}): Promise<RunningServer> {
  const limits = {
    maxBody: opts.maxBodyBytes ?? 2 ** 20,
    maxPrompts: opts.maxPrompts ?? 64,
    maxLogprobs: opts.maxLogprobs ?? 20,
    maxN: opts.maxN ?? 16,
  };
  const queue = new RequestQueue(opts.maxConcurrent ?? 16, opts.maxQueued ?? 256);
  const batcher = new Batcher(served.model);
  const completer = new Completer(served, batcher);
  const chatTemplate = opts.chatTemplate ?? null;
  const log = opts.log ?? (() => {});
  const modelCard = { id: served.id, object: 'model', created: served.created, owned_by: 'transmla', max_model_len: served.contextLength };

  async function readJsonBody(req: IncomingMessage): Promise<unknown> {
    const raw = await readBody(req, limits.maxBody);
    try {
      return JSON.parse(raw);
    } catch (e) {
      throw badRequest(`the request body is not valid JSON: ${(e as Error).message}`);
    }
  }

  function checkModel(model: string | null): void {
    if (model !== null && model !== served.id) throw new ApiError(404, `model "${model}" is not served here; this server serves "${served.id}"`, 'model', 'model_not_found');
  }

  /** Runs every choice (n per prompt) together and answers in `shape`, whole or streamed. */
  async function answer(res: ServerResponse, prompts: number[][], r: CompletionRequest, shape: Shape, idPrefix: string): Promise<void> {
    let gone = false;
    res.on('close', () => { if (!res.writableFinished) gone = true; });
    const id = `${idPrefix}-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    const t0 = performance.now();
    await queue.run(async () => {
      if (gone) return;
      const usage: Usage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
      const envelope = (object: string, choices: unknown[]): Record<string, unknown> => ({ id, object, created, model: served.id, choices });
      const send = (obj: unknown): void => { if (!gone) res.write(`data: ${JSON.stringify(obj)}\n\n`); };
      if (r.stream) res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
      const jobs = prompts.flatMap((ids, i) => Array.from({ length: r.n }, (_, j) => {
        const index = i * r.n + j;
        let first = true;
        const sink = r.stream ? (c: Choice): void => { for (const ch of shape.chunks(c, first)) send(envelope(shape.chunkObject, [ch])); first = false; } : null;
        return completer.complete(ids, index, r, sink, () => gone, j).then((out) => {
          usage.completion_tokens += out.completionTokens;
          return out.choice;
        });
      }));
      // The prompt counts once however many choices share it (as OpenAI and vLLM count it).
      usage.prompt_tokens = prompts.reduce((n, ids) => n + ids.length, 0);
      const choices = await Promise.all(jobs);
      usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
      if (r.stream) {
        if (r.includeUsage) send({ ...envelope(shape.chunkObject, []), usage });
        if (!gone) res.end('data: [DONE]\n\n');
      } else if (!gone) {
        sendJson(res, 200, { ...envelope(shape.object, choices.map((c) => shape.choice(c))), usage });
      }
      log(`${shape.object} ${id}: ${prompts.length} prompt(s) × ${r.n}, ${usage.prompt_tokens} + ${usage.completion_tokens} tokens, ${(performance.now() - t0).toFixed(0)} ms${gone ? ' (client left)' : ''}`);
    });
  }

  async function completions(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const r: CompletionRequest = validateCompletionRequest(await readJsonBody(req), limits);
    checkModel(r.model);
    const prompts = r.prompts.map((p) => promptIds(p, served));
    checkTokenLimits(prompts, r.maxTokens, served);
    await answer(res, prompts, r, COMPLETION_SHAPE, 'cmpl');
  }

  async function chat(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const c = validateChatRequest(await readJsonBody(req), limits);
    checkModel(c.model);
    if (!chatTemplate) throw badRequest(`model "${served.id}" has no chat template (no chat_template in its tokenizer_config.json, no chat_template.jinja); start serve with --chat-template FILE, or use /v1/completions`, null, 'no_chat_template');
    // The template writes the special tokens itself (apply_chat_template tokenizes without adding them).
    const ids = served.tokenizer.encode(chatTemplate.render(c.messages), { addBos: false });
    if (ids.length === 0) throw badRequest('the chat template rendered these messages as an empty prompt', 'messages');
    const maxTokens = c.maxTokens ?? Math.max(0, served.contextLength - ids.length);
    checkTokenLimits([ids], maxTokens, served);
    const r: CompletionRequest = { ...c, prompts: [{ kind: 'ids', ids }], maxTokens, echo: false };
    await answer(res, [ids], r, CHAT_SHAPE, 'chatcmpl');
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const allow = (m: string): void => { if (method !== m) throw Object.assign(new ApiError(405, `${method} is not allowed on ${path}; use ${m}`, null, 'method_not_allowed'), { allow: m }); };
    if (path === '/v1/completions') {
      allow('POST');
      await completions(req, res);
    } else if (path === '/v1/chat/completions') {
      allow('POST');
      await chat(req, res);
    } else if (path === '/v1/models') {
      allow('GET');
      sendJson(res, 200, { object: 'list', data: [modelCard] });
    } else if (path.startsWith('/v1/models/')) {
      allow('GET');
      const want = decodeURIComponent(path.slice('/v1/models/'.length));
      if (want !== served.id) throw new ApiError(404, `model "${want}" is not served here; this server serves "${served.id}"`, 'model', 'model_not_found');
      sendJson(res, 200, modelCard);
    } else if (path === '/health') {
      allow('GET');
      sendJson(res, 200, { status: 'ok', model: served.id, busy: queue.busy, running: queue.running, queued: queue.pending, steps: batcher.steps, sequenceSteps: batcher.sequenceSteps });
    } else {
      throw new ApiError(404, `no route ${method} ${path}; the API is /v1/completions, /v1/chat/completions and /v1/models`, null, 'not_found');
    }
  }

  const server = createServer((req, res) => {
    route(req, res).catch((e: unknown) => {
      if (e instanceof QueueFullError) {
        sendError(res, new ApiError(503, `the server is busy: ${e.message}; retry later`, null, 'queue_full'), { 'Retry-After': '1' });
      } else if (e instanceof ApiError) {
        const allowHeader = (e as ApiError & { allow?: string }).allow;
        sendError(res, e, allowHeader ? { Allow: allowHeader } : e.status === 413 ? { Connection: 'close' } : {});
      } else {
        log(`internal error: ${(e as Error)?.stack ?? String(e)}`);
        sendError(res, new ApiError(500, `internal error: ${(e as Error)?.message ?? String(e)}`, null, 'internal_error'));
      }
    });
  });
  // Long generations must not be cut by the default request timeout.
  server.requestTimeout = 0;

  return new Promise((resolve, reject) => {
    const failed = (e: NodeJS.ErrnoException): void => reject(listenError(e, host, port));
    server.once('error', failed);
    server.listen(port, host, () => {
      server.off('error', failed);
      const a = server.address() as AddressInfo;
      const h = a.family === 'IPv6' ? `[${a.address}]` : a.address;
      resolve({
        server, port: a.port, url: `http://${h}:${a.port}`,
        close: () => new Promise<void>((res2) => { server.closeAllConnections(); server.close(() => res2()); }),
      });
    });
  });
}

/** One line for why the server could not listen (the raw error names neither cause nor fix). */
function listenError(e: NodeJS.ErrnoException, host: string, port: number): Error {
  const where = `${host}:${port}`;
  if (e.code === 'EADDRINUSE') return new Error(`port ${port} is already in use on ${host} (another server listens on ${where}); choose another --port, or --port 0 for a free one`);
  if (e.code === 'EACCES') return new Error(`not allowed to listen on ${where} (ports below 1024 need privileges); choose another --port`);
  if (e.code === 'EADDRNOTAVAIL') return new Error(`cannot listen on ${where}: ${host} is not an address of this machine (--host)`);
  return new Error(`cannot listen on ${where}: ${e.message}`);
}
