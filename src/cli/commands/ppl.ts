// transmla ppl <model> --text FILE: perplexity in the GPTQ/TransMLA convention.
import { bool, int, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { createProgress } from '../../io/progress.js';
import { loadModel } from '../../arch/load.js';
import { perplexity, readEvalText, textModeFor, tokenizeForPerplexity } from '../../eval/perplexity.js';
import { kvQuantName, parseKvQuant } from '../../models/latent-quant.js';

export const command: Command = {
  summary: 'Perplexity on a text (non-overlapping chunks, GPTQ/TransMLA convention)',
  usage: 'transmla ppl <model> --text FILE(.txt|.jsonl) [--ctx 2048] [--max-chunks N] [--lines] [--no-bos] [--tokenizer PATH] [--kv-quant Q] [--json]\n' +
    '  .jsonl: documents are the "text" fields, joined with "\\n\\n"; .txt is read as is.\n' +
    '  --lines: every line is a document joined with "\\n\\n" (WikiText-2 read through HF datasets, as the papers do).\n' +
    '  --kv-quant int8|int4[:gN|:token]: quantize an MLA model\'s latent cache (codes + one f16 scale per N values, default N = 32).',
  async run(argv) {
    const p = parseArgs(argv, { text: 'string', ctx: 'string', 'max-chunks': 'string', lines: 'boolean', 'no-bos': 'boolean', tokenizer: 'string', 'kv-quant': 'string', json: 'boolean' });
    if (p.positionals.length !== 1) throw new UsageError('expected exactly one model path');
    const textPath = str(p, 'text');
    if (!textPath) throw new UsageError('--text FILE is required');
    const ctx = int(p, 'ctx', 2048, 2)!;
    const maxChunks = int(p, 'max-chunks', undefined, 1);
    const kvQuant = parseKvQuant(str(p, 'kv-quant') ?? 'none');
    const { model, tokenizer } = loadModel(p.positionals[0]!, { tokenizer: str(p, 'tokenizer'), kvQuant });
    if (!tokenizer) throw new Error('the model has no tokenizer; pass --tokenizer PATH');
    const window = model.slidingWindow;
    if (window !== null && ctx > window) {
      throw new Error(`--ctx ${ctx} exceeds the model's sliding_window (${window} tokens): the engine implements full attention only, so this perplexity would be wrong; use --ctx ${window} or less`);
    }
    if (window !== null) process.stderr.write(`note: the model declares sliding_window ${window} ≥ --ctx ${ctx}, so full attention is exact here\n`);
    if (ctx > model.config.maxPositionEmbeddings) {
      process.stderr.write(`warning: --ctx ${ctx} exceeds the model's ${model.config.maxPositionEmbeddings} trained positions\n`);
    }
    const mode = bool(p, 'lines') ? 'lines' : textModeFor(textPath);
    const { text, documents } = readEvalText(textPath, mode);
    const t0 = performance.now();
    const { ids, bos } = tokenizeForPerplexity(tokenizer, text, bool(p, 'no-bos') ? false : tokenizer.addBosByDefault);
    const tokMs = performance.now() - t0;
    const bar = createProgress({ label: 'ppl', total: 0, unit: 'tokens' });
    const t1 = performance.now();
    const r = await perplexity(model, ids, bos, {
      ctx, maxChunks,
      onProgress: (done, total) => bar.update(done, total),
    });
    bar.finish();
    const secs = (performance.now() - t1) / 1000;
    if (bool(p, 'json')) {
      console.log(JSON.stringify({ ...r, text: textPath, textMode: mode, documents, kvQuant: kvQuantName(kvQuant), seconds: secs }, null, 2));
      return;
    }
    console.log(`ppl ${r.ppl.toFixed(4)}  (mean NLL ${r.nll.toFixed(5)} nats over ${r.predictions} predictions)`);
    const how = mode === 'file' ? 'the file as is' : mode === 'jsonl' ? 'JSONL "text" fields joined with "\\n\\n"' : 'lines joined with "\\n\\n"';
    console.log(`text: ${textPath}, ${documents} documents (${how}), ` +
      `${r.textTokens} tokens (tokenized in ${(tokMs / 1000).toFixed(1)} s)`);
    console.log(`chunks: ${r.chunks} of ${r.chunksAvailable} × ${ctx} tokens, ${(r.chunks * ctx / secs).toFixed(0)} tokens/s`);
    if (kvQuant) console.log(`latent cache: ${kvQuantName(kvQuant)} (dequantized on read)`);
    console.log(`convention: ${r.convention}`);
  },
};
