// The mixture-of-experts tensors of a stock export (arch/deepseek-moe.ts): a Mixtral layer's
// router and experts keep their values under DeepSeek-V2's names, and each MoE layer gains the
// all-zero shared expert stock engines need (it adds exactly 0 to the layer's output).
//   block_sparse_moe.gate          → mlp.gate
//   block_sparse_moe.experts.N.w1  → mlp.experts.N.gate_proj   (w3 → up_proj, w2 → down_proj)
//   (new)                          → mlp.shared_experts.{gate,up,down}_proj, zeros, I·n_shared wide
import type { Checkpoint } from '../io/checkpoint.js';
import type { NamedTensor } from '../io/safetensors.js';
import type { Tensor } from '../tensor.js';
import { STOCK_SHARED_EXPERTS } from '../arch/deepseek-moe.js';

const KIND: Record<string, string> = { w1: 'gate_proj', w3: 'up_proj', w2: 'down_proj' };

/** A Mixtral MoE tensor's DeepSeek-V2 name (other names unchanged). */
export function deepseekMoeName(name: string): string {
  const g = /^(model\.layers\.\d+)\.block_sparse_moe\.gate\.weight$/.exec(name);
  if (g) return `${g[1]}.mlp.gate.weight`;
  const e = /^(model\.layers\.\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$/.exec(name);
  if (e) return `${e[1]}.mlp.experts.${e[2]}.${KIND[e[3]!]}.weight`;
  return name;
}

/** Layer index when `name` is a Mixtral router (where the layer's shared expert is added). */
export function mixtralRouterLayer(name: string): number | null {
  const g = /^model\.layers\.(\d+)\.block_sparse_moe\.gate\.weight$/.exec(name);
  return g ? Number(g[1]) : null;
}

function zeros(shape: number[], dtype: Tensor['dtype']): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype, shape, data: dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n) } as Tensor;
}

/** Layer l's all-zero shared expert, as wide and of the dtype of its expert 0 (read from the header only). */
export function* zeroSharedExpert(ck: Checkpoint, l: number): Generator<NamedTensor> {
  const w1 = `model.layers.${l}.block_sparse_moe.experts.0.w1.weight`;
  if (!ck.has(w1)) throw new Error(`${ck.dir}: no ${w1} for layer ${l}'s shared expert to take its width from`);
  const info = ck.info(w1);
  const [I, D] = info.shape as [number, number];
  const dtype: Tensor['dtype'] = info.dtype === 'BF16' ? 'bf16' : info.dtype === 'F16' ? 'f16' : 'f32';
  const W = I * STOCK_SHARED_EXPERTS, p = `model.layers.${l}.mlp.shared_experts`;
  // One at a time: for Mixtral-8x7B widths each is 117 MB in bf16.
  yield { name: `${p}.gate_proj.weight`, tensor: zeros([W, D], dtype) };
  yield { name: `${p}.up_proj.weight`, tensor: zeros([W, D], dtype) };
  yield { name: `${p}.down_proj.weight`, tensor: zeros([D, W], dtype) };
}
