// transmla generate <model> --prompt "...": streams a continuation to stdout, stats to stderr.
import { bool, int, num, onePositional, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { eosIds, generate } from '../../models/generate.js';
import { parseKvQuant } from '../../models/latent-quant.js';
import { loadModel } from '../../arch/load.js';
import { ENGINE_FLAGS, ENGINE_HELP, engineFlags } from '../engine-flags.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';

export const command: Command = {
  usage: 'transmla generate <model> --prompt "..." [--revision REV] [--max-tokens 256] [--temperature 1.0] [--top-p 0.9] [--seed S] [--no-bos] [--tokenizer PATH] [--kv-quant Q] [--weights q8_0|q4_0] [--kv-dtype f16|bf16|f32] [--quiet]\n' +
    '  --temperature 0 is greedy. --quiet leaves out the prompt echo and the statistics line.\n' +
    '  --kv-quant int8|int4[:gN|:token]: quantize an MLA model\'s latent cache (codes + one f16 scale per N values, default 32).\n' + ENGINE_HELP,
  async run(argv) {
    const p = parseArgs(argv, {
      prompt: 'string', 'max-tokens': 'string', temperature: 'string', 'top-p': 'string', seed: 'string',
      'no-bos': 'boolean', tokenizer: 'string', 'kv-quant': 'string', quiet: 'boolean', ...ENGINE_FLAGS, ...HUB_FLAGS,
    });
    const spec = onePositional(p, 'model');
    const prompt = str(p, 'prompt') ?? '';
    const maxTokens = int(p, 'max-tokens', 256, 1)!;
    const temperature = num(p, 'temperature', 1.0, { ge: 0 })!;
    const topP = num(p, 'top-p', 0.9, { gt: 0, le: 1 })!;
    // A fixed default would make every unseeded run identical; the seed is printed to repeat one.
    const seed = int(p, 'seed', Math.floor(Math.random() * 2 ** 31))!;
    const quiet = bool(p, 'quiet');
    const kvQuant = parseKvQuant(str(p, 'kv-quant') ?? 'none');
    const engine = engineFlags(p);
    const { model, tokenizer } = loadModel(await modelArg(spec, p), { tokenizer: str(p, 'tokenizer'), kvQuant, ...engine });
    if (!tokenizer) throw new Error('the model has no tokenizer; pass --tokenizer PATH');
    const bos = !bool(p, 'no-bos') && tokenizer.bosId !== null;
    const ids = tokenizer.encode(prompt, { addBos: bos });
    if (ids.length === 0) throw new UsageError('the prompt is empty and there is no BOS token to start from; give --prompt');
    const limit = model.config.maxPositionEmbeddings;
    if (ids.length + maxTokens > limit) process.stderr.write(`warning: ${ids.length} + ${maxTokens} tokens exceed the model's ${limit} trained positions\n`);
    const window = model.slidingWindow;
    if (window !== null && ids.length + maxTokens > window) {
      throw new UsageError(`${ids.length} prompt + ${maxTokens} new tokens exceed the model's sliding_window of ${window} tokens; ` +
        `the engine implements full attention only, so tokens past position ${window} would be wrong: lower --max-tokens to ${Math.max(0, window - ids.length)} or less`);
    }
    const stop = new Set(eosIds(model.config.eosTokenId));
    if (tokenizer.eosId !== null) stop.add(tokenizer.eosId);
    if (!quiet) process.stdout.write(prompt);
    const dec = tokenizer.createStreamDecoder(ids);
    const gen = generate(model, ids, { maxTokens, temperature, topP, seed, stopIds: [...stop] });
    for (;;) {
      const r = await gen.next();
      if (r.done) {
        // Let stdout (a pipe is asynchronous) drain so the statistics line comes after the text.
        await new Promise<void>((res) => process.stdout.write(dec.flush() + '\n', () => res()));
        const s = r.value;
        if (!quiet) {
          const pre = s.promptTokens / Math.max(s.prefillMs / 1000, 1e-9);
          const d = s.generated > 1 ? (s.generated - 1) / (s.decodeMs / 1000) : 0;
          process.stderr.write(`[${s.generated} tokens, stopped by ${s.stoppedBy}; prompt ${s.promptTokens} tokens at ${pre.toFixed(0)} tok/s, ` +
            `decode ${d.toFixed(1)} tok/s; seed ${seed}, temperature ${temperature}, top-p ${topP}]\n`);
        }
        return;
      }
      process.stdout.write(dec.push(r.value));
    }
  },
};
