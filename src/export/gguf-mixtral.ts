// A Hugging Face Mixtral model → llama.cpp GGUF: llama.cpp's "llama" architecture with the experts
// (arch/mixtral.ts has the facts and the tensor names, read from llama.cpp's converter): Llama's
// metadata and attention tensors, plus expert_count / expert_used_count, each layer's router
// (ffn_gate_inp) and its experts stacked into ffn_{gate,up,down}_exps.
import { MIXTRAL_GGUF_KEYS, mixtralGgufTensors, type MixtralArgs } from '../arch/mixtral.js';
import type { WeightSource } from '../tensor.js';
import { exportLlamaGguf, type LlamaGgufExportOptions, type LlamaGgufExportResult } from './gguf-llama.js';

export function exportMixtralGguf(outPath: string, config: MixtralArgs, weights: WeightSource, tokenizerDir: string, options: Omit<LlamaGgufExportOptions, 'arch' | 'variant'> = {}): LlamaGgufExportResult {
  const c = config;
  return exportLlamaGguf(outPath, c, weights, tokenizerDir, {
    ...options,
    arch: 'llama',
    variant: {
      tensors: (_c, arch, embedName) => mixtralGgufTensors(c, arch, embedName),
      metadata: (arch) => [
        { key: `${arch}.${MIXTRAL_GGUF_KEYS.expertCount}`, type: 'u32', value: c.moe.numExperts },
        { key: `${arch}.${MIXTRAL_GGUF_KEYS.expertUsedCount}`, type: 'u32', value: c.moe.topK },
      ],
    },
  });
}
