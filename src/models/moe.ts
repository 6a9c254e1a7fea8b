// The mixture-of-experts MLP (Mixtral's routing; docs/methods.md#moe):
//   p = softmax(x·W_gᵀ) over all E experts;  S = the k largest p (ties: the lower expert index);
//   w_j = p_j / Σ_{i∈S} p_i;  out = Σ_{j∈S} w_j · down_j(silu(gate_j(x)) ∘ up_j(x)).
// This is the order of transformers' MixtralSparseMoeBlock.forward (softmax in float32, topk,
// divide by the sum; huggingface/transformers src/transformers/models/mixtral/modeling_mixtral.py
// @00d4b3d2) and of llama.cpp's build_moe_ffn with LLM_FFN_SILU, norm_w and SOFTMAX gating
// (ggml-org/llama.cpp src/models/llama.cpp @069be0ae). The tokens of a batch are grouped by
// expert and each expert runs its GEMMs on its own tokens only: an expert's matrices are read
// only for tokens routed to it, and one decode step reads k of the E experts.
import type { WeightSource } from '../tensor.js';
import { Linear } from './linear.js';
import { SwiGluMlp, type Mlp } from './mlp.js';
import { requireTensor } from './weights.js';
import type { Workspace } from './workspace.js';

/** Where a checkpoint keeps the router and the experts of one layer (their `.weight` tensors). */
export interface MoeNames {
  router: string;
  expert(e: number): { gate: string; up: string; down: string };
}

/** Mixtral: `block_sparse_moe.gate`, `block_sparse_moe.experts.N.{w1 (gate), w3 (up), w2 (down)}`. */
export function mixtralMoeNames(layerPrefix: string): MoeNames {
  const p = `${layerPrefix}.block_sparse_moe`;
  return { router: `${p}.gate`, expert: (e) => ({ gate: `${p}.experts.${e}.w1`, up: `${p}.experts.${e}.w3`, down: `${p}.experts.${e}.w2` }) };
}

/** DeepSeek-V2/V3 routed experts: `mlp.gate`, `mlp.experts.N.{gate,up,down}_proj`. */
export function deepseekMoeNames(layerPrefix: string): MoeNames {
  const p = `${layerPrefix}.mlp`;
  return { router: `${p}.gate`, expert: (e) => ({ gate: `${p}.experts.${e}.gate_proj`, up: `${p}.experts.${e}.up_proj`, down: `${p}.experts.${e}.down_proj` }) };
}

/** The widths of an MoE block. */
export interface MoeShape {
  hidden: number;
  /** Width of each expert's SwiGLU. */
  expertInter: number;
  numExperts: number;
  /** Experts per token (num_experts_per_tok). */
  topK: number;
}

/**
 * Mixtral routing of T tokens from router logits [T×E]: idx [T×k] the selected experts of each
 * token by decreasing probability, w [T×k] their renormalised weights (summing to 1 per token).
 */
export function routeTopK(logits: ArrayLike<number>, T: number, E: number, k: number, idx: Int32Array, w: Float64Array): void {
  if (k < 1 || k > E) throw new Error(`top-${k} routing over ${E} experts`);
  const p = new Float64Array(E);
  for (let t = 0; t < T; t++) {
    const o = t * E;
    let mx = -Infinity;
    for (let e = 0; e < E; e++) mx = Math.max(mx, logits[o + e]!);
    let z = 0;
    for (let e = 0; e < E; e++) { p[e] = Math.exp(logits[o + e]! - mx); z += p[e]!; }
    for (let e = 0; e < E; e++) p[e]! /= z;
    // Selection by repeated maximum: k is small (2 in Mixtral); strict > keeps the lower index on ties.
    let sum = 0;
    for (let j = 0; j < k; j++) {
      let best = -1;
      for (let e = 0; e < E; e++) {
        if (p[e]! < 0) continue;
        if (best < 0 || p[e]! > p[best]!) best = e;
      }
      idx[t * k + j] = best;
      w[t * k + j] = p[best]!;
      sum += p[best]!;
      p[best] = -1;
    }
    for (let j = 0; j < k; j++) w[t * k + j]! /= sum;
  }
}

/**
 * Tokens grouped by expert: the routed rows r = 0..T·k−1 in expert order, expert e owning rows
 * offsets[e]..offsets[e+1]−1; token[r] and weight[r] say whose row it is and with what weight;
 * row[t·k + j] is the row of token t's j-th choice.
 */
export interface ExpertGroups {
  offsets: Int32Array;
  token: Int32Array;
  weight: Float64Array;
  row: Int32Array;
}

export function groupByExpert(idx: Int32Array, w: Float64Array, T: number, E: number, k: number, g?: ExpertGroups): ExpertGroups {
  const R = T * k;
  const out: ExpertGroups = g && g.token.length >= R && g.offsets.length === E + 1
    ? g : { offsets: new Int32Array(E + 1), token: new Int32Array(R), weight: new Float64Array(R), row: new Int32Array(R) };
  const off = out.offsets;
  off.fill(0);
  for (let q = 0; q < R; q++) off[idx[q]! + 1]!++;
  for (let e = 0; e < E; e++) off[e + 1]! += off[e]!;
  const fill = off.slice(0, E);
  // A stable counting sort: tokens keep their order inside an expert's group.
  for (let q = 0; q < R; q++) {
    const r = fill[idx[q]!]!++;
    out.row[q] = r;
    out.token[r] = Math.floor(q / k);
    out.weight[r] = w[q]!;
  }
  return out;
}

/** How inspect names a mixture-of-experts MLP (the built layer and the header-only inspect agree). */
export function moeSummary(numExperts: number, expertInter: number, topK: number): string {
  return `MoE: ${numExperts} experts × ${expertInter}, top-${topK}`;
}

export class MoeMlp implements Mlp {
  readonly router: Linear;
  readonly experts: readonly SwiGluMlp[];
  readonly topK: number;
  private idx = new Int32Array(0);
  private w = new Float64Array(0);
  private groups: ExpertGroups | undefined;

  constructor(router: Linear, experts: readonly SwiGluMlp[], topK: number) {
    const E = experts.length, D = router.inFeatures;
    if (router.outFeatures !== E) throw new Error(`router has ${router.outFeatures} outputs for ${E} experts`);
    if (!Number.isInteger(topK) || topK < 1 || topK > E) throw new Error(`top-${topK} routing needs 1..${E} experts per token`);
    for (const x of experts) if (x.gate.inFeatures !== D || x.down.outFeatures !== D) throw new Error(`an expert does not map hidden size ${D} to itself`);
    this.router = router;
    this.experts = experts;
    this.topK = topK;
  }

  /** Loads the router and experts of one layer under `names` (no biases: neither Mixtral nor DeepSeek has them). */
  static load(src: WeightSource, names: MoeNames, s: MoeShape): MoeMlp {
    const D = s.hidden, I = s.expertInter;
    const lin = (name: string, out: number, inp: number): Linear => {
      if (src.has(`${name}.bias`)) throw new Error(`checkpoint has a tensor "${name}.bias"; mixture-of-experts layers have no biases`);
      return new Linear(requireTensor(src, `${name}.weight`, [out, inp]));
    };
    const experts: SwiGluMlp[] = [];
    for (let e = 0; e < s.numExperts; e++) {
      const n = names.expert(e);
      experts.push(new SwiGluMlp(lin(n.gate, I, D), lin(n.up, I, D), lin(n.down, D, I)));
    }
    return new MoeMlp(lin(names.router, s.numExperts, D), experts, s.topK);
  }

  get numExperts(): number {
    return this.experts.length;
  }

  /** Router plus k of the E experts per token. */
  flops(T: number): number {
    return this.router.flops(T) + this.topK * this.meanExpert((x) => x.flops(T));
  }

  paramCount(): number {
    return this.experts.reduce((n, x) => n + x.paramCount(), this.router.paramCount());
  }

  /** One token reads the router and the k experts it is routed to. */
  decodeWeightBytes(): number {
    return this.router.weightBytes() + this.topK * this.meanExpert((x) => x.decodeWeightBytes());
  }

  summary(): string {
    return moeSummary(this.numExperts, this.experts[0]!.gate.outFeatures, this.topK);
  }

  private meanExpert(f: (x: SwiGluMlp) => number): number {
    // Experts of one layer have one shape; the mean is exact then and fair otherwise.
    return this.experts.reduce((n, x) => n + f(x), 0) / this.experts.length;
  }

  /** The routing of the last forward: selected experts [T×k] and their weights (tests, inspection). */
  lastRouting(T: number): { idx: Int32Array; weights: Float64Array } {
    return { idx: this.idx.slice(0, T * this.topK), weights: this.w.slice(0, T * this.topK) };
  }

  forward(x: Float32Array, T: number, out: Float32Array, ws: Workspace): void {
    const E = this.numExperts, k = this.topK, D = this.router.inFeatures;
    const logits = ws.get('moe.logits', T * E);
    this.router.forward(x, T, logits);
    if (this.idx.length < T * k) { this.idx = new Int32Array(T * k); this.w = new Float64Array(T * k); }
    routeTopK(logits, T, E, k, this.idx, this.w);
    const g = this.groups = groupByExpert(this.idx, this.w, T, E, k, this.groups);
    out.fill(0, 0, T * D);
    for (let e = 0; e < E; e++) {
      const r0 = g.offsets[e]!, n = g.offsets[e + 1]! - r0;
      if (n === 0) continue;
      // One token alone needs no gather (decode: the expert reads x directly).
      let xe: Float32Array;
      if (T === 1) xe = x.subarray(0, D);
      else {
        xe = ws.get('moe.x', n * D);
        for (let i = 0; i < n; i++) { const t = g.token[r0 + i]!; xe.set(x.subarray(t * D, (t + 1) * D), i * D); }
      }
      const ye = ws.get('moe.y', n * D);
      this.experts[e]!.forward(xe, n, ye, ws);
      for (let i = 0; i < n; i++) {
        const o = g.token[r0 + i]! * D, wt = g.weight[r0 + i]!, yo = i * D;
        for (let j = 0; j < D; j++) out[o + j]! += wt * ye[yo + j]!;
      }
    }
  }
}
