// transmla serve <model>: OpenAI-compatible /v1/completions and /v1/models over HTTP.
import { int, onePositional, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { loadServedModel } from '../../serve/model.js';
import { startServer } from '../../serve/server.js';
import { parseHubId } from '../../io/hub.js';
import { ENGINE_FLAGS, ENGINE_HELP, engineFlags } from '../engine-flags.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';

export const command: Command = {
  usage: 'transmla serve <model> [--revision REV] [--port 8000] [--host 127.0.0.1] [--name ID] [--ctx N] [--max-body-bytes 1048576]\n' +
    '    [--max-prompts 64] [--max-queued 256] [--tokenizer PATH] [--weights q8_0|q4_0] [--kv-dtype f16|bf16|f32] [--quiet]\n' +
    '  Requests run one at a time in arrival order. --ctx caps prompt + max_tokens (default: the model\'s\n' +
    '  max_position_embeddings). Text prompts get a BOS when the tokenizer config asks for one; token-id\n' +
    '  prompts are used as given. Errors: 400 malformed, 404 unknown model/route, 413 body too large,\n' +
    '  422 too many tokens or ids outside the vocabulary, 503 queue full.\n' + ENGINE_HELP,
  async run(argv) {
    const p = parseArgs(argv, {
      port: 'string', host: 'string', name: 'string', ctx: 'string', 'max-body-bytes': 'string', 'max-prompts': 'string',
      'max-queued': 'string', tokenizer: 'string', quiet: 'boolean', ...ENGINE_FLAGS, ...HUB_FLAGS,
    });
    const spec = onePositional(p, 'model');
    const port = int(p, 'port', 8000, 0)!;
    if (port > 65535) throw new UsageError(`--port must be ≤ 65535, got ${port}`);
    const contextLength = int(p, 'ctx', undefined, 1);
    const limits = { maxBodyBytes: int(p, 'max-body-bytes', undefined, 1), maxPrompts: int(p, 'max-prompts', undefined, 1), maxQueued: int(p, 'max-queued', undefined, 0) };
    const path = await modelArg(spec, p);
    // A Hub model is served under its id (as vLLM does), not its cache folder's commit hash.
    const name = str(p, 'name') ?? (path !== spec ? parseHubId(spec)?.repo : undefined);
    const served = loadServedModel(path, { name, contextLength, tokenizer: str(p, 'tokenizer'), ...engineFlags(p) });
    const quiet = p.flags.get('quiet') === true;
    const running = await startServer(served, port, str(p, 'host') ?? '127.0.0.1', {
      ...limits,
      log: quiet ? undefined : (line) => process.stderr.write(`${line}\n`),
    });
    process.stderr.write(`serving "${served.id}" (context ${served.contextLength} tokens) on ${running.url}/v1 — Ctrl-C stops\n`);
    await new Promise<void>((resolve) => {
      const stop = (): void => { void running.close().then(resolve); };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
  },
};
