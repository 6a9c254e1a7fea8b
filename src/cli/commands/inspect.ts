// transmla inspect <model>: what the engine sees in a checkpoint, and what its KV cache costs.
import { bool, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { describeModel, formatModelReport } from '../../arch/describe.js';
import { parseKvQuant } from '../../models/latent-quant.js';
import { loadModel } from '../../arch/load.js';

export const command: Command = {
  summary: 'Show architecture, parameter count, heads and KV-cache size of a model',
  usage: 'transmla inspect <model> [--kv-quant int8|int4[:gN|:token]] [--json]\n' +
    '  --kv-quant: report the cache bytes of an MLA model with a quantized latent cache (codes + f16 scales).',
  async run(argv) {
    const p = parseArgs(argv, { json: 'boolean', 'kv-quant': 'string' });
    if (p.positionals.length !== 1) throw new UsageError('expected exactly one model path');
    const loaded = loadModel(p.positionals[0]!, { kvQuant: parseKvQuant(str(p, 'kv-quant') ?? 'none') });
    const d = describeModel(loaded);
    console.log(bool(p, 'json') ? JSON.stringify(d, null, 2) : formatModelReport(d));
  },
};
