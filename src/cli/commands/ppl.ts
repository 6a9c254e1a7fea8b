// transmla ppl <model> --text FILE: perplexity in the GPTQ/TransMLA convention.
import { bool, int, onePositional, parseArgs, required, str } from '../args.js';
import type { Command } from '../command.js';
import { createProgress } from '../../io/progress.js';
import { defaultPplContext, perplexity, readEvalText, textModeFor, tokenizeEnough } from '../../eval/perplexity.js';
import { kvQuantName, parseKvQuant } from '../../models/latent-quant.js';
import { loadModel } from '../../arch/load.js';
import { ENGINE_FLAGS, ENGINE_HELP, engineFlags } from '../engine-flags.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';

export const command: Command = {
  usage: 'transmla ppl <model> --text FILE(.txt|.jsonl) [--revision REV] [--ctx N] [--max-chunks N] [--lines] [--no-bos] [--tokenizer PATH] [--kv-quant Q] [--weights q8_0|q4_0] [--kv-dtype f16|bf16|f32] [--json]\n' +
    '  --ctx: tokens per chunk; default the model\'s trained window (max_position_embeddings, or its sliding_window\n' +
    '    if smaller), at most 2048.\n' +
    '  .jsonl: documents are the "text" fields, joined with "\\n\\n"; .txt is read as is.\n' +
    '  --lines: every line is a document joined with "\\n\\n" (WikiText-2 read through HF datasets, as the papers do).\n' +
    '  --max-chunks N: score the first N chunks; only as much of the text is tokenized as they need.\n' +
    '  --kv-quant int8|int4[:gN|:token]: quantize an MLA model\'s latent cache (codes + one f16 scale per N values, default N = 32).\n' + ENGINE_HELP + '\n  ppl keeps an f32 cache unless --kv-dtype says otherwise (the converter\'s perplexities use f32).',
  async run(argv) {
    const p = parseArgs(argv, { text: 'string', ctx: 'string', 'max-chunks': 'string', lines: 'boolean', 'no-bos': 'boolean', tokenizer: 'string', 'kv-quant': 'string', json: 'boolean', ...ENGINE_FLAGS, ...HUB_FLAGS });
    const spec = onePositional(p, 'model');
    const textPath = required(p, 'text', 'FILE');
    const ctxFlag = int(p, 'ctx', undefined, 2);
    const maxChunks = int(p, 'max-chunks', undefined, 1);
    const kvQuant = parseKvQuant(str(p, 'kv-quant') ?? 'none');
    // A measurement: f32 cache unless asked, so it equals the converter's and the library's figures.
    const engine = engineFlags(p, 'f32');
    const mode = bool(p, 'lines') ? 'lines' : textModeFor(textPath);
    // Read before the model loads: a wrong path fails in a moment, not after a download.
    const { text, documents } = readEvalText(textPath, mode);
    const { model, tokenizer } = loadModel(await modelArg(spec, p), { tokenizer: str(p, 'tokenizer'), kvQuant, ...engine });
    if (!tokenizer) throw new Error('the model has no tokenizer; pass --tokenizer PATH');
    const ctx = ctxFlag ?? defaultPplContext(model);
    const window = model.slidingWindow;
    if (window !== null && ctx > window) {
      throw new Error(`--ctx ${ctx} exceeds the model's sliding_window (${window} tokens): the engine implements full attention only, so this perplexity would be wrong; use --ctx ${window} or less`);
    }
    if (window !== null) process.stderr.write(`note: the model declares sliding_window ${window} ≥ --ctx ${ctx}, so full attention is exact here\n`);
    if (ctx > model.config.maxPositionEmbeddings) {
      process.stderr.write(`warning: --ctx ${ctx} exceeds the model's ${model.config.maxPositionEmbeddings} trained positions\n`);
    }
    const t0 = performance.now();
    const tokens = await tokenizeEnough(tokenizer, text, maxChunks === undefined ? undefined : maxChunks * ctx, bool(p, 'no-bos') ? false : tokenizer.addBosByDefault);
    const tokMs = performance.now() - t0;
    const bar = createProgress({ label: 'ppl', total: 0, unit: 'tokens' });
    const t1 = performance.now();
    const r = await perplexity(model, tokens.ids, tokens.bos, {
      ctx, maxChunks,
      onProgress: (done, total) => bar.update(done, total),
    });
    bar.finish();
    const secs = (performance.now() - t1) / 1000;
    const tokenized = { chars: tokens.chars, ofChars: text.length, complete: tokens.complete, seconds: tokMs / 1000 };
    if (bool(p, 'json')) {
      console.log(JSON.stringify({ ...r, text: textPath, textMode: mode, documents, tokenized, kvQuant: kvQuantName(kvQuant), seconds: secs }, null, 2));
      return;
    }
    console.log(`ppl ${r.ppl.toFixed(4)}  (mean NLL ${r.nll.toFixed(5)} nats over ${r.predictions} predictions)`);
    const how = mode === 'file' ? 'the file as is' : mode === 'jsonl' ? 'JSONL "text" fields joined with "\\n\\n"' : 'lines joined with "\\n\\n"';
    const part = tokens.complete ? `${r.textTokens} tokens` : `${r.textTokens} tokens from the first ${(100 * tokens.chars / text.length).toFixed(1)} % of the text (as far as the chunks need)`;
    console.log(`text: ${textPath}, ${documents} documents (${how}), ${part} (tokenized in ${(tokMs / 1000).toFixed(1)} s)`);
    console.log(`chunks: ${r.chunks}${tokens.complete ? ` of ${r.chunksAvailable}` : ''} × ${ctx} tokens, ${(r.chunks * ctx / secs).toFixed(0)} tokens/s`);
    if (kvQuant) console.log(`latent cache: ${kvQuantName(kvQuant)} (dequantized on read)`);
    console.log(`convention: ${r.convention}`);
  },
};
