// Llama attention (MHA, GQA, MQA): q, k, v projections, RoPE on q and k, causal attention with
// H query heads over G KV heads, o projection.
//   forward:  q = x Wqᵀ, k = x Wkᵀ, v = x Wvᵀ; RoPE(q), RoPE(k); a = attn(q, k, v); out = a Woᵀ
//   backward: da = dOut Wo; (dq, dk, dv) = attn⁻(da); RoPE⁻¹(dq), RoPE⁻¹(dk);
//             dx = dq Wq + dk Wk + dv Wv
import type { RopeLayout, RopeTable } from '../../models/rope.js';
import type { TrainBackend, Vec } from '../backend.js';
import type { Param, ParamStore } from '../params.js';
import type { RowLayout, TrainAttention } from './attention.js';
import { CausalAttention } from './causal-attention.js';
import { LinearLayer } from './linear.js';
import { ropeRotate } from './rope.js';

export interface GqaShape {
  hidden: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
}

export class GqaAttentionLayer implements TrainAttention {
  readonly q: LinearLayer;
  readonly k: LinearLayer;
  readonly v: LinearLayer;
  readonly o: LinearLayer;
  private readonly core: CausalAttention;
  private T = -1;
  // Activations of the last forward (q and k after RoPE).
  private qa!: Vec; private ka!: Vec; private va!: Vec; private mixed!: Vec;
  // Gradient scratch.
  private dq!: Vec; private dk!: Vec; private dv!: Vec; private dm!: Vec;

  constructor(private readonly be: TrainBackend, ps: ParamStore, prefix: string, readonly s: GqaShape, private readonly rope: RopeTable, private readonly layout: RopeLayout) {
    const { hidden: D, nHeads: H, nKvHeads: G, headDim: d } = s;
    if (rope.dim !== d) throw new Error(`RoPE table of dim ${rope.dim} for heads of dim ${d}`);
    this.q = LinearLayer.load(ps, `${prefix}.q_proj`, H * d, D);
    this.k = LinearLayer.load(ps, `${prefix}.k_proj`, G * d, D);
    this.v = LinearLayer.load(ps, `${prefix}.v_proj`, G * d, D);
    this.o = LinearLayer.load(ps, `${prefix}.o_proj`, D, H * d);
    this.core = new CausalAttention(be, { nHeads: H, nKvHeads: G, dK: d, dV: d, scale: 1 / Math.sqrt(d) });
  }

  params(): Param[] {
    return [this.q, this.k, this.v, this.o].flatMap((l) => l.params());
  }

  private ensure(T: number): void {
    if (T === this.T) return;
    const { nHeads: H, nKvHeads: G, headDim: d } = this.s, be = this.be;
    this.qa = be.alloc(T * H * d); this.ka = be.alloc(T * G * d); this.va = be.alloc(T * G * d); this.mixed = be.alloc(T * H * d);
    this.dq = be.alloc(T * H * d); this.dk = be.alloc(T * G * d); this.dv = be.alloc(T * G * d); this.dm = be.alloc(T * H * d);
    this.T = T;
  }

  forward(x: Vec, row: RowLayout, out: Vec): void {
    const { T, positions, segments } = row;
    const { nHeads: H, nKvHeads: G, headDim: d } = this.s, be = this.be;
    this.ensure(T);
    this.q.forward(be, x, T, this.qa);
    this.k.forward(be, x, T, this.ka);
    this.v.forward(be, x, T, this.va);
    ropeRotate(this.qa, T, H, d, 0, positions, this.rope, this.layout, false);
    ropeRotate(this.ka, T, G, d, 0, positions, this.rope, this.layout, false);
    this.core.forward(this.qa, this.ka, this.va, T, segments, this.mixed);
    this.o.forward(be, this.mixed, T, out);
  }

  backward(x: Vec, row: RowLayout, dOut: Vec, dx: Vec): void {
    const { T, positions, segments } = row;
    const { nHeads: H, nKvHeads: G, headDim: d } = this.s, be = this.be;
    this.o.backward(be, this.mixed, dOut, T, this.dm);
    this.core.backward(this.qa, this.ka, this.va, T, segments, this.dm, this.dq, this.dk, this.dv);
    ropeRotate(this.dq, T, H, d, 0, positions, this.rope, this.layout, true);
    ropeRotate(this.dk, T, G, d, 0, positions, this.rope, this.layout, true);
    this.q.backward(be, x, this.dq, T, dx, false);
    this.k.backward(be, x, this.dk, T, dx, true);
    this.v.backward(be, x, this.dv, T, dx, true);
  }
}
