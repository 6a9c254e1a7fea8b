// transmla import-llama2c model.bin --tokenizer tok.bin --out dir: llama2.c checkpoint → HF llama folder.
import { bool, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { importLlama2c } from '../../export/llama2c.js';

export const command: Command = {
  usage: 'transmla import-llama2c <model.bin> --tokenizer <tok.bin|tok.model> --out <dir> [--overwrite]',
  async run(argv) {
    const p = parseArgs(argv, { tokenizer: 'string', out: 'string', overwrite: 'boolean' });
    if (p.positionals.length !== 1) throw new UsageError('expected exactly one llama2.c .bin file');
    const tokenizer = str(p, 'tokenizer');
    const out = str(p, 'out');
    if (!tokenizer) throw new UsageError('--tokenizer is required');
    if (!out) throw new UsageError('--out is required');
    const r = await importLlama2c(p.positionals[0]!, tokenizer, out, { overwrite: bool(p, 'overwrite') });
    const h = r.header;
    console.log(`wrote ${r.outDir}: llama2.c v${h.version}, dim ${h.dim}, ${h.nLayers} layers, ${h.nHeads}/${h.nKvHeads} heads, vocab ${h.vocabSize}`);
    console.log(`files: ${r.files.join(', ')}`);
  },
};
