// transmla inspect <model>: what the engine sees in a checkpoint, and what its KV cache costs.
import { bool, parseArgs, UsageError } from '../args.js';
import type { Command } from '../commands.js';
import { describeModel, formatModelReport } from '../../models/describe.js';
import { loadModel } from '../../models/load.js';

export const command: Command = {
  summary: 'Show architecture, parameter count, heads and KV-cache size of a model',
  usage: 'transmla inspect <model> [--json]',
  async run(argv) {
    const p = parseArgs(argv, { json: 'boolean' });
    if (p.positionals.length !== 1) throw new UsageError('expected exactly one model path');
    const loaded = loadModel(p.positionals[0]!);
    const d = describeModel(loaded);
    console.log(bool(p, 'json') ? JSON.stringify(d, null, 2) : formatModelReport(d));
  },
};
