// Flags of the commands that run the engine (ppl, generate, inspect, serve, bench): how weights
// and the KV cache are stored while the model runs.
import type { FloatDType, QuantDType } from '../kernels/types.js';
import { str, UsageError, type ParsedArgs } from './args.js';

export const ENGINE_FLAGS = { weights: 'string', 'kv-dtype': 'string' } as const;

export const ENGINE_HELP =
  '  --weights q8_0|q4_0: quantize the weight matrices at load (llama.cpp\'s block formats, bit-identical to\n' +
  '    llama-quantize without an importance matrix); a Q8_0/Q4_0 GGUF runs quantized without it.\n' +
  '  --kv-dtype f16|bf16|f32: how the KV cache (an MLA model\'s latent cache too) stores its rows (default f16,\n' +
  '    as llama.cpp; --kv-quant, for MLA latents, takes precedence).';

export interface EngineFlags {
  weights: QuantDType | null;
  kvDtype: FloatDType;
}

/** The --weights and --kv-dtype of a command line (`defaultKv`: the cache dtype without the flag). */
export function engineFlags(p: ParsedArgs, defaultKv: FloatDType = 'f16'): EngineFlags {
  const w = str(p, 'weights');
  if (w !== undefined && w !== 'q8_0' && w !== 'q4_0') throw new UsageError(`--weights must be q8_0 or q4_0, got "${w}"`);
  const kv = str(p, 'kv-dtype') ?? defaultKv;
  if (kv !== 'f16' && kv !== 'bf16' && kv !== 'f32') throw new UsageError(`--kv-dtype must be f16, bf16 or f32, got "${kv}"`);
  return { weights: w ?? null, kvDtype: kv };
}
