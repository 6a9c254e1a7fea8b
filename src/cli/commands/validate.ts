// transmla validate <folder | file.gguf>: will stock engines load this checkpoint, compute what it
// means, and reach their fast MLA kernels? Exit 1 when a checked engine would not load it or
// would compute something else.
import { bool, onePositional, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { ENGINES, type EngineId } from '../../validate/rules.js';
import { formatValidateReport, validatePath } from '../../validate/validate.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';

export const command: Command = {
  usage: 'transmla validate <folder | file.gguf | Hub id> [--revision REV] [--engines transformers,vllm,sglang,llama.cpp] [--json]\n' +
    '  Reads config.json and the safetensors headers (no tensor data) and reports, engine by engine, whether the\n' +
    '  checkpoint loads, computes what it means, and reaches the fast MLA kernels, with the reason for each "no".\n' +
    '  Exit 1 when a checked engine would not load it or would compute something else.\n' +
    '  --engines: only these engines decide the exit code (all are still reported).',
  async run(argv) {
    const p = parseArgs(argv, { json: 'boolean', engines: 'string', ...HUB_FLAGS });
    const spec = onePositional(p, 'folder or .gguf file');
    const list = str(p, 'engines');
    let engines: EngineId[] | undefined;
    if (list !== undefined) {
      engines = list.split(',').map((s) => s.trim()).filter((s) => s !== '') as EngineId[];
      const bad = engines.filter((e) => !(ENGINES as readonly string[]).includes(e));
      if (bad.length > 0 || engines.length === 0) throw new UsageError(`--engines takes a comma-separated subset of ${ENGINES.join(', ')}, got "${list}"`);
    }
    // Stock checkpoints the engine does not run (e.g. MoE DeepSeek-V3) are still checked: no config filter.
    const r = validatePath(await modelArg(spec, p, { engineConfig: false }), { engines });
    console.log(bool(p, 'json') ? JSON.stringify(r, null, 2) : formatValidateReport(r));
    return r.ok ? 0 : 1;
  },
};
