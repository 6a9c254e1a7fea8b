// transmla serve <model>: OpenAI-compatible /v1/completions, /v1/chat/completions and /v1/models over HTTP.
import { int, onePositional, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { chatTemplateFolder, ggufChatTemplate, loadChatTemplate } from '../../serve/chat.js';
import { loadServedModel } from '../../serve/model.js';
import { startServer } from '../../serve/server.js';
import { parseHubId } from '../../io/hub.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';

export const command: Command = {
  usage: 'transmla serve <model> [--revision REV] [--port 8000] [--host 127.0.0.1] [--name ID] [--ctx N] [--max-body-bytes 1048576]\n' +
    '    [--max-prompts 64] [--max-n 16] [--max-concurrent 16] [--max-queued 256] [--tokenizer PATH] [--chat-template FILE] [--quiet]\n' +
    '  Up to --max-concurrent requests run together: every choice is a sequence with its own KV cache and their\n' +
    '  forwards are batched into shared steps (continuous batching); later requests wait in arrival order.\n' +
    '  /v1/chat/completions renders messages with the model\'s chat template (tokenizer_config.json chat_template,\n' +
    '  chat_template.jinja, beside the tokenizer; a GGUF\'s tokenizer.chat_template) or --chat-template FILE (.jinja,\n' +
    '  or .json with "chat_template").\n' +
    '  Sampling: temperature, top_p, top_k, min_p, repetition/presence/frequency penalties, seed, n (≤ --max-n).\n' +
    '  --ctx caps prompt + max_tokens (default: the model\'s\n' +
    '  max_position_embeddings). Text prompts get a BOS when the tokenizer config asks for one; token-id\n' +
    '  prompts are used as given. Errors: 400 malformed, 404 unknown model/route, 413 body too large,\n' +
    '  422 too many tokens or ids outside the vocabulary, 503 queue full.',
  async run(argv) {
    const p = parseArgs(argv, {
      port: 'string', host: 'string', name: 'string', ctx: 'string', 'max-body-bytes': 'string', 'max-prompts': 'string',
      'max-queued': 'string', 'max-n': 'string', 'max-concurrent': 'string', 'chat-template': 'string', tokenizer: 'string', quiet: 'boolean', ...HUB_FLAGS,
    });
    const spec = onePositional(p, 'model');
    const port = int(p, 'port', 8000, 0)!;
    if (port > 65535) throw new UsageError(`--port must be ≤ 65535, got ${port}`);
    const contextLength = int(p, 'ctx', undefined, 1);
    const limits = {
      maxBodyBytes: int(p, 'max-body-bytes', undefined, 1), maxPrompts: int(p, 'max-prompts', undefined, 1), maxQueued: int(p, 'max-queued', undefined, 0),
      maxN: int(p, 'max-n', undefined, 1), maxConcurrent: int(p, 'max-concurrent', undefined, 1),
    };
    const path = await modelArg(spec, p);
    // A Hub model is served under its id (as vLLM does), not its cache folder's commit hash.
    const name = str(p, 'name') ?? (path !== spec ? parseHubId(spec)?.repo : undefined);
    const served = loadServedModel(path, { name, contextLength, tokenizer: str(p, 'tokenizer') });
    // The tokenizer's folder first (as transformers takes the tokenizer's template), then a GGUF's own.
    const chatTemplate = loadChatTemplate(chatTemplateFolder(path, str(p, 'tokenizer')), str(p, 'chat-template'))
      ?? (path.endsWith('.gguf') ? ggufChatTemplate(path) : null);
    const quiet = p.flags.get('quiet') === true;
    const running = await startServer(served, port, str(p, 'host') ?? '127.0.0.1', {
      ...limits, chatTemplate,
      log: quiet ? undefined : (line) => process.stderr.write(`${line}\n`),
    });
    process.stderr.write(`serving "${served.id}" (context ${served.contextLength} tokens${chatTemplate ? '' : '; no chat template: /v1/chat/completions answers 400'}) on ${running.url}/v1 — Ctrl-C stops\n`);
    await new Promise<void>((resolve) => {
      const stop = (): void => { void running.close().then(resolve); };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
  },
};
