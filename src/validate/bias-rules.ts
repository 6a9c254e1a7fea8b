// Bias tensors in a DeepSeek-V3 folder: which engine keeps and which drops each one
// (docs/stock-engines.md#biases, where the sources are cited with their commits):
// - transformers DeepseekV3Attention builds q_a_proj, kv_a_proj_with_mqa and o_proj with
//   bias=config.attention_bias and q_proj, q_b_proj, kv_b_proj (and the MLP) with bias=False; a
//   checkpoint bias without a parameter is dropped as an unexpected key;
// - vLLM and SGLang build every attention and MLP projection with bias=False, and their
//   load_weights skip any ".bias" name that has no parameter ("Skip loading extra bias for GPTQ
//   models"): every bias is dropped, silently;
// - llama.cpp's deepseek2 creates no bias tensor and uses none in its graph; convert_hf_to_gguf.py
//   maps a bias to a GGUF tensor (the tensor map tries ".weight" and ".bias") and the loader then
//   stops with "wrong number of tensors": the file does not load.
import { BIASED_WITH_ATTENTION_BIAS } from '../arch/deepseek-stock.js';
import { EXPORT_FIX, type BiasFate, type EngineId, type Finding, type FolderFacts, type Impact } from './findings.js';

const BIAS = /^model\.layers\.\d+\.((?:self_attn|mlp)\.[a-z_]+\.bias)$/;

/** Every layer-bias tensor kind (self_attn.q_proj.bias, …) with its number of layers. */
function biasKinds(f: FolderFacts): Map<string, number> {
  const kinds = new Map<string, number>();
  for (const n of f.tensors.keys()) {
    const m = BIAS.exec(n);
    if (m) kinds.set(m[1]!, (kinds.get(m[1]!) ?? 0) + 1);
  }
  return kinds;
}

const listed = (kinds: string[], counts: Map<string, number>): string => kinds.map((k) => `${k} (${counts.get(k)} layer${counts.get(k) === 1 ? '' : 's'})`).join(', ');

/** Attention/MLP biases: per engine, the bias tensors it keeps, drops, or refuses to load. */
export function checkBiases(c: Record<string, unknown>, f: FolderFacts): Finding[] {
  const counts = biasKinds(f);
  if (counts.size === 0) return [];
  const kinds = [...counts.keys()].sort();
  const hfReads = (k: string): boolean => c.attention_bias === true && BIASED_WITH_ATTENTION_BIAS.some((x) => k === `self_attn.${x}.bias`);
  const fate: Record<EngineId, BiasFate> = {
    transformers: { keeps: kinds.filter(hfReads), drops: kinds.filter((k) => !hfReads(k)), refuses: [] },
    vllm: { keeps: [], drops: kinds, refuses: [] },
    sglang: { keeps: [], drops: kinds, refuses: [] },
    'llama.cpp': { keeps: [], drops: [], refuses: kinds },
  };
  const hf = fate.transformers;
  const hfWhy = `it builds q_a_proj, kv_a_proj_with_mqa and o_proj with bias=attention_bias (here ${JSON.stringify(c.attention_bias ?? false)}) and every other projection without one; a bias with no parameter is an unexpected key (a warning)`;
  const effect: Partial<Record<EngineId, string>> = {
    transformers: [hf.keeps.length > 0 && `keeps ${listed(hf.keeps, counts)}`, hf.drops.length > 0 && `drops ${listed(hf.drops, counts)}`].filter(Boolean).join('; ') + ` (${hfWhy})`,
    vllm: `drops ${listed(kinds, counts)} (every projection is built with bias=False and load_weights skips a ".bias" with no parameter, silently)`,
    sglang: `drops ${listed(kinds, counts)} (every projection is built with bias=False and load_weights skips a ".bias" with no parameter, silently)`,
    'llama.cpp': `keeps none: convert_hf_to_gguf.py writes ${listed(kinds, counts)} as GGUF tensors the deepseek2 graph never creates, and loading stops with "wrong number of tensors"`,
  };
  const impact: Partial<Record<EngineId, Impact>> = {
    transformers: hf.drops.length > 0 ? 'incorrect' : 'note', vllm: 'incorrect', sglang: 'incorrect', 'llama.cpp': 'will-not-load',
  };
  return [{
    rule: 'biases',
    impact,
    message: `${[...counts.values()].reduce((a, b) => a + b, 0)} bias tensor(s) (${kinds.join(', ')}); stock DeepSeek projections have no biases (transformers: some, with attention_bias)`,
    effect,
    biases: fate,
    fix: `${EXPORT_FIX} (drops the biases that drop out of the softmax exactly and folds the rest into the weights by calibration)`,
  }];
}
