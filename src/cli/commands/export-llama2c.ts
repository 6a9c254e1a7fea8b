// transmla export-llama2c <hf-folder> --out model.bin: HF llama folder → llama2.c checkpoint.
import { bool, int, onePositional, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { exportLlama2c } from '../../export/llama2c.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';
import { checkOutputFile } from '../../io/atomic-dir.js';

export const command: Command = {
  usage: 'transmla export-llama2c <hf-folder> --out <model.bin> [--revision REV] [--version 0|1] [--overwrite]',
  async run(argv) {
    const p = parseArgs(argv, { out: 'string', version: 'string', overwrite: 'boolean', ...HUB_FLAGS });
    const spec = onePositional(p, 'model folder');
    const out = str(p, 'out');
    if (!out) throw new UsageError('--out is required');
    const version = int(p, 'version', 0);
    if (version !== 0 && version !== 1) throw new UsageError('--version must be 0 or 1');
    // Before a Hub model is fetched.
    checkOutputFile(out, { overwrite: bool(p, 'overwrite') });
    const r = exportLlama2c(await modelArg(spec, p), out, { version, overwrite: bool(p, 'overwrite') });
    for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
    console.log(`wrote ${out}: llama2.c v${r.header.version}, dim ${r.header.dim}, ${r.header.nLayers} layers`);
  },
};
