// transmla inspect <model>: what the engine sees in a checkpoint, and what its KV cache costs.
import { bool, onePositional, parseArgs, str } from '../args.js';
import type { Command } from '../command.js';
import { formatModelReport, inspectModel } from '../../arch/describe.js';
import { parseKvQuant } from '../../models/latent-quant.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';

export const command: Command = {
  usage: 'transmla inspect <model> [--revision REV] [--kv-quant int8|int4[:gN|:token]] [--json]\n' +
    '  Reads config.json and the tensor headers only (no weights): parameters, dtypes and KV-cache bytes per token.\n' +
    '  --kv-quant: report the cache bytes of an MLA model with a quantized latent cache (codes + f16 scales).',
  async run(argv) {
    const p = parseArgs(argv, { json: 'boolean', 'kv-quant': 'string', ...HUB_FLAGS });
    const spec = onePositional(p, 'model');
    const kvQuant = parseKvQuant(str(p, 'kv-quant') ?? 'none');
    const d = inspectModel(await modelArg(spec, p), { kvQuant });
    console.log(bool(p, 'json') ? JSON.stringify(d, null, 2) : formatModelReport(d));
  },
};
