// Llama attention (MHA, GQA, MQA): q, k, v projections, RoPE on q and k, causal attention with
// H query heads over G KV heads, o projection.
//   forward:  q = x Wqᵀ, k = x Wkᵀ, v = x Wvᵀ; RoPE(q), RoPE(k); a = attn(q, k, v); out = a Woᵀ
//   backward: da = dOut Wo; (dq, dk, dv) = attn⁻(da); RoPE⁻¹(dq), RoPE⁻¹(dk);
//             dx = dq Wq + dk Wk + dv Wv
// Qwen3 (qkNormEps set; docs/methods.md#qk-norm): each head's q and k are RMS-normalised over
// head_dim (q_norm, k_norm weights [head_dim]) between the projection and RoPE; backward runs the
// RMSNorm backward per head row (rmsnorm.ts) between RoPE⁻¹ and the projections.
import type { RopeLayout, RopeTable } from '../../models/rope.js';
import type { TrainBackend, Vec } from '../backend.js';
import type { Param, ParamStore } from '../params.js';
import type { RowLayout, TrainAttention } from './attention.js';
import { CausalAttention } from './causal-attention.js';
import { LinearLayer } from './linear.js';
import { RmsNormLayer } from './rmsnorm.js';
import { ropeRotate } from './rope.js';

export interface GqaShape {
  hidden: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** Qwen3: per-head q_norm/k_norm with this ε (absent: no QK-norm). */
  qkNormEps?: number;
}

export class GqaAttentionLayer implements TrainAttention {
  readonly q: LinearLayer;
  readonly k: LinearLayer;
  readonly v: LinearLayer;
  readonly o: LinearLayer;
  readonly qNorm: RmsNormLayer | null;
  readonly kNorm: RmsNormLayer | null;
  private readonly core: CausalAttention;
  private T = -1;
  // Activations of the last forward (q and k after RoPE; with QK-norm also before the norm, and
  // each head row's reciprocal rms).
  private qa!: Vec; private ka!: Vec; private va!: Vec; private mixed!: Vec;
  private qp!: Vec; private kp!: Vec; private qr!: Vec; private kr!: Vec;
  // Gradient scratch.
  private dq!: Vec; private dk!: Vec; private dv!: Vec; private dm!: Vec; private dqp!: Vec; private dkp!: Vec;

  constructor(private readonly be: TrainBackend, ps: ParamStore, prefix: string, readonly s: GqaShape, private readonly rope: RopeTable, private readonly layout: RopeLayout) {
    const { hidden: D, nHeads: H, nKvHeads: G, headDim: d } = s;
    if (rope.dim !== d) throw new Error(`RoPE table of dim ${rope.dim} for heads of dim ${d}`);
    this.q = LinearLayer.load(ps, `${prefix}.q_proj`, H * d, D);
    this.k = LinearLayer.load(ps, `${prefix}.k_proj`, G * d, D);
    this.v = LinearLayer.load(ps, `${prefix}.v_proj`, G * d, D);
    this.o = LinearLayer.load(ps, `${prefix}.o_proj`, D, H * d);
    const eps = s.qkNormEps;
    this.qNorm = eps === undefined ? null : new RmsNormLayer(ps.get(`${prefix}.q_norm.weight`, [d]), eps);
    this.kNorm = eps === undefined ? null : new RmsNormLayer(ps.get(`${prefix}.k_norm.weight`, [d]), eps);
    this.core = new CausalAttention(be, { nHeads: H, nKvHeads: G, dK: d, dV: d, scale: 1 / Math.sqrt(d) });
  }

  params(): Param[] {
    const norms = this.qNorm && this.kNorm ? [this.qNorm.w, this.kNorm.w] : [];
    return [...[this.q, this.k, this.v, this.o].flatMap((l) => l.params()), ...norms];
  }

  private ensure(T: number): void {
    if (T === this.T) return;
    const { nHeads: H, nKvHeads: G, headDim: d } = this.s, be = this.be;
    this.qa = be.alloc(T * H * d); this.ka = be.alloc(T * G * d); this.va = be.alloc(T * G * d); this.mixed = be.alloc(T * H * d);
    this.dq = be.alloc(T * H * d); this.dk = be.alloc(T * G * d); this.dv = be.alloc(T * G * d); this.dm = be.alloc(T * H * d);
    if (this.qNorm) {
      this.qp = be.alloc(T * H * d); this.kp = be.alloc(T * G * d); this.qr = be.alloc(T * H); this.kr = be.alloc(T * G);
      this.dqp = be.alloc(T * H * d); this.dkp = be.alloc(T * G * d);
    }
    this.T = T;
  }

  forward(x: Vec, row: RowLayout, out: Vec): void {
    const { T, positions, segments } = row;
    const { nHeads: H, nKvHeads: G, headDim: d } = this.s, be = this.be;
    this.ensure(T);
    if (this.qNorm && this.kNorm) {
      this.q.forward(be, x, T, this.qp);
      this.k.forward(be, x, T, this.kp);
      this.qNorm.forward(this.qp, T * H, this.qa, this.qr);
      this.kNorm.forward(this.kp, T * G, this.ka, this.kr);
    } else {
      this.q.forward(be, x, T, this.qa);
      this.k.forward(be, x, T, this.ka);
    }
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
    let dq = this.dq, dk = this.dk;
    if (this.qNorm && this.kNorm) {
      // RmsNormLayer.backward accumulates into its dx.
      this.dqp.fill(0); this.dkp.fill(0);
      this.qNorm.backward(this.qp, this.qr, this.dq, T * H, this.dqp);
      this.kNorm.backward(this.kp, this.kr, this.dk, T * G, this.dkp);
      dq = this.dqp; dk = this.dkp;
    }
    this.q.backward(be, x, dq, T, dx, false);
    this.k.backward(be, x, dk, T, dx, true);
    this.v.backward(be, x, this.dv, T, dx, true);
  }
}
