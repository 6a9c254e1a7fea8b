// transmla export <mla-folder> --target deepseek-v3|deepseek-v2|gguf --out PATH: stock-engine exports of a
// converted (exact MLA) folder.
import { resolve } from 'node:path';
import { bool, int, num, onePositional, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { checkExportOutput, EXPORT_TARGETS, exportModel, type ExportTarget } from '../../export/targets.js';
import { DEFAULT_MAX_BIAS_RESIDUAL } from '../../convert/stock-bias.js';
import type { WeightDType } from '../../kernels/types.js';
import { isWeightDType } from '../../tensor.js';
import { evalTexts } from './convert-mha2mla.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';

export const EXPORT_USAGE =
  '  --target deepseek-v3: a folder stock DeepSeek-V3 code loads (no custom keys): kv_a_layernorm (q_a_layernorm)\n' +
  '    calibrated on --calib (default: the calibration file recorded in transmla.json) with kv_b_proj refit;\n' +
  '    prints and records the perplexity of the exact and the stock-semantics model side by side. A mixture-of-\n' +
  '    experts (Mixtral) source becomes the DeepSeek-V2 MoE layout instead (docs/stock-engines.md#moe-routing).\n' +
  '  --target deepseek-v2: the same, for mixture-of-experts sources only.\n' +
  '  --target gguf: a llama.cpp GGUF (--outtype f32|f16|bf16|q8_0|q4_0; q8_0/q4_0 quantize as llama-quantize does\n' +
  '    without an importance matrix): deepseek2 for MLA folders (experts included), through the strict export if\n' +
  '    needed; llama/qwen2/qwen3 for the source families.\n' +
  '  --max-bias-residual X: stock DeepSeek-V3 has no attention biases; those that do not drop out exactly\n' +
  '    (Qwen2\'s query, RoPE-key and value biases) are folded into the weights by calibration, and a layer whose\n' +
  `    fold leaves a relative error above X in a projection is refused (default ${DEFAULT_MAX_BIAS_RESIDUAL}; docs/methods.md#bias-fold).\n`;

export function outType(v: string | undefined): WeightDType | undefined {
  if (v === undefined) return undefined;
  if (!isWeightDType(v)) throw new UsageError(`--outtype must be f32, f16, bf16, q8_0 or q4_0, got "${v}"`);
  return v;
}

export function target(v: string | undefined): ExportTarget {
  if (!v) throw new UsageError(`--target is required (${EXPORT_TARGETS.join(' or ')})`);
  if (!(EXPORT_TARGETS as readonly string[]).includes(v)) throw new UsageError(`--target must be ${EXPORT_TARGETS.join(' or ')}, got "${v}"`);
  return v as ExportTarget;
}

export const command: Command = {
  usage: 'transmla export <mla-folder> --target deepseek-v3|deepseek-v2|gguf --out PATH [--calib FILE] [--calib-samples 128]\n' +
    '    [--calib-seqlen 256] [--seed 42] [--eval-text FILE[,FILE…]] [--eval-ctx N] [--eval-chunks N] [--outtype f32|f16|bf16|q8_0|q4_0]\n' +
    `    [--max-bias-residual ${DEFAULT_MAX_BIAS_RESIDUAL}] [--overwrite] [--json]\n` + EXPORT_USAGE,
  async run(argv) {
    const p = parseArgs(argv, {
      target: 'string', out: 'string', calib: 'string', 'calib-samples': 'string', 'calib-seqlen': 'string', seed: 'string',
      'eval-text': 'string', 'eval-ctx': 'string', 'eval-chunks': 'string', outtype: 'string', 'max-bias-residual': 'string', overwrite: 'boolean', json: 'boolean', ...HUB_FLAGS,
    });
    const spec = onePositional(p, 'MLA folder');
    const out = str(p, 'out');
    if (!out) throw new UsageError('--out PATH is required');
    const json = bool(p, 'json');
    const tgt = target(str(p, 'target'));
    // Before a Hub model is fetched (exportModel checks again, against the inputs).
    checkExportOutput(tgt, resolve(out), bool(p, 'overwrite'));
    const r = await exportModel({
      target: tgt,
      out: resolve(out),
      overwrite: bool(p, 'overwrite'),
      calib: str(p, 'calib'),
      calibSamples: int(p, 'calib-samples', undefined, 1),
      calibSeqLen: int(p, 'calib-seqlen', undefined, 2),
      seed: int(p, 'seed', undefined),
      evalTexts: evalTexts(str(p, 'eval-text')),
      evalCtx: int(p, 'eval-ctx', undefined, 2),
      evalChunks: int(p, 'eval-chunks', undefined, 1),
      outType: outType(str(p, 'outtype')),
      maxBiasResidual: num(p, 'max-bias-residual', undefined, { ge: 0 }),
      // Last, so every flag is checked before a Hub model is fetched.
      model: await modelArg(spec, p),
      log: (line) => (json ? process.stderr : process.stdout).write(line + '\n'),
    });
    if (json) console.log(JSON.stringify({ target: r.target, output: r.output, stock: r.stock, gguf: r.gguf && { ...r.gguf, tensorNames: undefined } }, null, 2));
  },
};
