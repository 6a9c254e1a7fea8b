// Mixture-of-experts layers of a DeepSeek-V2/V3 folder: the expert tensors, and which engines
// compute the routing the config states — for a folder transmla converted from Mixtral, Mixtral's
// routing (softmax over all experts, top-k, weights renormalised to 1, no scale). What each engine
// reads is cited in arch/deepseek-moe.ts and docs/stock-engines.md#moe-routing:
//   vLLM reads scoring_func, norm_topk_prob, routed_scaling_factor, n_group/topk_group, and
//     n_shared_experts (none when null);
//   SGLang reads the same, but needs n_shared_experts ≥ 1 (null fails in DeepseekV2MoE);
//   transformers' DeepseekV2Moe never renormalises the top-k weights and always adds
//     shared_experts(x) (null fails); its DeepseekV3 scores with a sigmoid;
//   llama.cpp via convert_hf_to_gguf.py: expert_shared_count = n_shared_experts (null fails),
//     softmax gating by default for deepseek2, expert_weights_norm = norm_topk_prob,
//     expert_weights_scale = routed_scaling_factor.
import { ALL, type EngineId, type Finding, type MlaDims, type TensorFact } from './findings.js';

const ENGINE_IDS: readonly EngineId[] = ['transformers', 'vllm', 'sglang', 'llama.cpp'];

/** The routing a config states, as vLLM (the reference reader of these keys) computes it. */
interface Routing {
  scoring: string;
  renorm: boolean;
  scale: number;
  topK: number;
  groups: number;
  shared: number | null;
}

function routingOf(c: Record<string, unknown>): Routing {
  return {
    scoring: typeof c.scoring_func === 'string' ? c.scoring_func : 'softmax',
    renorm: c.norm_topk_prob === true,
    scale: typeof c.routed_scaling_factor === 'number' ? c.routed_scaling_factor : 1,
    topK: typeof c.num_experts_per_tok === 'number' ? c.num_experts_per_tok : 1,
    groups: typeof c.n_group === 'number' ? c.n_group : 1,
    shared: typeof c.n_shared_experts === 'number' ? c.n_shared_experts : null,
  };
}

/** Mixtral's routing: softmax, top-k renormalised (at k = 1 too: the one weight is then 1, not its probability), unscaled. */
function isMixtral(r: Routing, topkMethod: unknown): boolean {
  return r.scoring === 'softmax' && r.renorm && r.scale === 1 && r.groups === 1 && (topkMethod === undefined || topkMethod === null || topkMethod === 'greedy' || topkMethod === 'group_limited_greedy');
}

/** Findings of the MoE layers l ≥ firstDense (called by checkMlpLayout when the folder has experts). */
export function checkMoe(c: Record<string, unknown>, d: MlaDims, tensors: ReadonlyMap<string, TensorFact>, firstDense: number): Finding[] {
  const out: Finding[] = [];
  const r = routingOf(c), mixtral = isMixtral(r, c.topk_method);
  const E = typeof c.n_routed_experts === 'number' ? c.n_routed_experts : 0;
  const I = typeof c.moe_intermediate_size === 'number' ? c.moe_intermediate_size : d.intermediate;
  // Expert tensors: router [E, D], E experts of width I, the shared expert n_shared·I wide.
  const missing: string[] = [], wrong: string[] = [];
  const want = (name: string, shape: number[]): void => {
    const t = tensors.get(name);
    if (!t) missing.push(name);
    else if (t.shape.length !== shape.length || t.shape.some((x, i) => x !== shape[i])) wrong.push(`${name} [${t.shape.join(', ')}] (expected [${shape.join(', ')}])`);
  };
  for (let l = firstDense; l < d.layers; l++) {
    const p = `model.layers.${l}.mlp`;
    want(`${p}.gate.weight`, [E, d.hidden]);
    for (let e = 0; e < E; e++) {
      want(`${p}.experts.${e}.gate_proj.weight`, [I, d.hidden]);
      want(`${p}.experts.${e}.up_proj.weight`, [I, d.hidden]);
      want(`${p}.experts.${e}.down_proj.weight`, [d.hidden, I]);
    }
    if (r.shared !== null && r.shared > 0) {
      const W = I * r.shared;
      want(`${p}.shared_experts.gate_proj.weight`, [W, d.hidden]);
      want(`${p}.shared_experts.up_proj.weight`, [W, d.hidden]);
      want(`${p}.shared_experts.down_proj.weight`, [d.hidden, W]);
    }
  }
  if (missing.length > 0 || wrong.length > 0) {
    out.push({
      rule: 'expert-tensors',
      impact: ALL('will-not-load'),
      message: `${missing.length} expert tensor(s) missing${missing.length ? ` (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ' …' : ''})` : ''}, ${wrong.length} of the wrong shape${wrong.length ? ` (${wrong.slice(0, 2).join(', ')})` : ''}`,
    });
  }
  if (r.shared === null) {
    out.push({
      rule: 'moe-shared-experts',
      impact: { transformers: 'will-not-load', sglang: 'will-not-load', 'llama.cpp': 'will-not-load' },
      message: 'n_shared_experts is null (no shared expert)',
      effect: {
        transformers: 'DeepseekV2Moe.forward adds self.shared_experts(x), which it did not build (AttributeError at the first forward)',
        sglang: 'DeepseekV2MoE calls shared_experts, which it built only for a non-null n_shared_experts (or adds None to top_k when fusing)',
        'llama.cpp': 'convert_hf_to_gguf.py writes expert_shared_count = None (fails); deepseek2 builds a shared expert in every MoE layer',
      },
      fix: 'write n_shared_experts 1 with an all-zero shared expert (what transmla convert writes): it adds exactly 0',
    });
  }
  // Which engines compute the routing the config states.
  const computes: Record<EngineId, boolean> = {
    vllm: true,
    sglang: true,
    transformers: c.model_type === 'deepseek_v3' ? r.scoring === 'sigmoid' : !r.renorm && r.scoring === 'softmax',
    'llama.cpp': r.scoring === 'softmax',
  };
  const why: Record<EngineId, string> = {
    vllm: 'FusedMoE with scoring_func, renormalize = norm_topk_prob, routed_scaling_factor',
    sglang: 'TopK with renormalize = norm_topk_prob, n_group/topk_group, routed_scaling_factor',
    transformers: c.model_type === 'deepseek_v3' ? 'DeepseekV3 scores experts with a sigmoid (noaux_tc), whatever scoring_func says' : 'DeepseekV2Moe takes softmax top-k weights × routed_scaling_factor and never renormalises them (norm_topk_prob is not read)',
    'llama.cpp': 'build_moe_ffn with softmax gating (deepseek2 default), expert_weights_norm = norm_topk_prob, expert_weights_scale = routed_scaling_factor',
  };
  const bad = ENGINE_IDS.filter((e) => !computes[e]);
  const routing = `${r.scoring} over ${E} experts, top-${r.topK}${r.renorm ? ' renormalised' : ''}${r.scale !== 1 ? ` × ${r.scale}` : ''}${mixtral ? ' (Mixtral\'s routing)' : ''}`;
  if (bad.length > 0) {
    out.push({
      rule: 'moe-routing',
      impact: Object.fromEntries(bad.map((e) => [e, 'incorrect'])),
      message: `the config states ${routing}; ${bad.join(', ')} compute${bad.length === 1 ? 's' : ''} other expert weights`,
      effect: Object.fromEntries(bad.map((e) => [e, why[e]])),
    });
  }
  const good = ENGINE_IDS.filter((e) => computes[e]);
  out.push({
    rule: 'moe-routing-engines',
    impact: Object.fromEntries(good.map((e) => [e, 'note'])),
    message: `${d.layers - firstDense} mixture-of-experts layer(s), ${routing}: computed as stated by ${good.join(', ')}`,
    effect: Object.fromEntries(good.map((e) => [e, why[e]])),
  });
  return out;
}
