// transmla serve <model>: OpenAI-compatible /v1/completions and /v1/models over HTTP.
import { int, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { loadServedModel } from '../../serve/model.js';
import { startServer } from '../../serve/server.js';

export const command: Command = {
  summary: 'Serve a model over an OpenAI-compatible HTTP API (/v1/completions, /v1/models), e.g. for lm-eval',
  usage: 'transmla serve <model> [--port 8000] [--host 127.0.0.1] [--name ID] [--ctx N] [--max-body-bytes 1048576]\n' +
    '    [--max-prompts 64] [--max-queued 256] [--tokenizer PATH] [--quiet]\n' +
    '  Requests run one at a time in arrival order. --ctx caps prompt + max_tokens (default: the model\'s\n' +
    '  max_position_embeddings). Text prompts get a BOS when the tokenizer config asks for one; token-id\n' +
    '  prompts are used as given. Errors: 400 malformed, 404 unknown model/route, 413 body too large,\n' +
    '  422 too many tokens or ids outside the vocabulary, 503 queue full.',
  async run(argv) {
    const p = parseArgs(argv, {
      port: 'string', host: 'string', name: 'string', ctx: 'string', 'max-body-bytes': 'string', 'max-prompts': 'string',
      'max-queued': 'string', tokenizer: 'string', quiet: 'boolean',
    });
    if (p.positionals.length !== 1) throw new UsageError('expected exactly one model path');
    const port = int(p, 'port', 8000, 0)!;
    if (port > 65535) throw new UsageError(`--port must be ≤ 65535, got ${port}`);
    const served = loadServedModel(p.positionals[0]!, { name: str(p, 'name'), contextLength: int(p, 'ctx', undefined, 1), tokenizer: str(p, 'tokenizer') });
    const quiet = p.flags.get('quiet') === true;
    const running = await startServer(served, port, str(p, 'host') ?? '127.0.0.1', {
      maxBodyBytes: int(p, 'max-body-bytes', undefined, 1),
      maxPrompts: int(p, 'max-prompts', undefined, 1),
      maxQueued: int(p, 'max-queued', undefined, 0),
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
