// DeepSeek MLA in its decompressed (training) form, docs/methods.md#mla-target:
//   q  = x Wqᵀ  (or q_b(norm?(q_a(x))))             [T, H, d_n + d_R], RoPE on each head's last d_R
//   kva = x W_kvaᵀ = [c (r) | k_pe (d_R)],  c ← kv_a_layernorm(c) when the checkpoint has one
//   k_pe ← RoPE(k_pe): one rope key shared by every head
//   [k_nope^h | v^h] = c W_kvbᵀ                     [T, H, d_n + d_v]
//   k^h = [k_nope^h | k_pe];  a = attn(q, k, v) with scale (d_n + d_R)^−½;  out = a Woᵀ
// Backward runs the same steps in reverse; the shared k_pe collects the sum of all heads'
// rope-key gradients. (The absorbed form is an inference-time rewrite of the same function.)
import type { MlaShape } from '../../models/mla-attention.js';
import type { RopeLayout, RopeTable } from '../../models/rope.js';
import type { TrainBackend, Vec } from '../backend.js';
import type { Param, ParamStore } from '../params.js';
import type { RowLayout, TrainAttention } from './attention.js';
import { CausalAttention } from './causal-attention.js';
import { LinearLayer } from './linear.js';
import { RmsNormLayer } from './rmsnorm.js';
import { ropeRotate } from './rope.js';

export interface MlaTrainShape extends MlaShape {
  hidden: number;
  normEps: number;
}

export class MlaAttentionLayer implements TrainAttention {
  readonly q: LinearLayer | null;
  readonly qA: LinearLayer | null;
  readonly qANorm: RmsNormLayer | null;
  readonly qB: LinearLayer | null;
  readonly kvA: LinearLayer;
  readonly kvANorm: RmsNormLayer | null;
  readonly kvB: LinearLayer;
  readonly o: LinearLayer;
  private readonly core: CausalAttention;
  private T = -1;
  // Activations of the last forward.
  private ql!: Vec; private qln!: Vec; private qlr!: Vec; private qa!: Vec; private kva!: Vec;
  private c!: Vec; private cn!: Vec; private cr!: Vec; private kv!: Vec; private keys!: Vec; private vals!: Vec; private mixed!: Vec;
  // Gradient scratch.
  private dm!: Vec; private dq!: Vec; private dkeys!: Vec; private dvals!: Vec; private dkv!: Vec;
  private dcn!: Vec; private dc!: Vec; private dkva!: Vec; private dql!: Vec; private dqln!: Vec;

  constructor(private readonly be: TrainBackend, ps: ParamStore, prefix: string, readonly s: MlaTrainShape, private readonly rope: RopeTable, private readonly layout: RopeLayout) {
    const { hidden: D, nHeads: H, qkNopeHeadDim: dn, qkRopeHeadDim: dR, vHeadDim: dv, kvLoraRank: r, qLoraRank: rq } = s;
    if (rope.dim !== dR) throw new Error(`RoPE table of dim ${rope.dim} for qk_rope_head_dim ${dR}`);
    const qOut = H * (dn + dR);
    const norm = (name: string, n: number): RmsNormLayer | null => {
      const w = ps.optional(name, [n]);
      return w ? new RmsNormLayer(w, s.normEps) : null;
    };
    if (rq === null) {
      this.q = LinearLayer.load(ps, `${prefix}.q_proj`, qOut, D);
      this.qA = this.qB = this.qANorm = null;
    } else {
      this.q = null;
      this.qA = LinearLayer.load(ps, `${prefix}.q_a_proj`, rq, D);
      this.qANorm = norm(`${prefix}.q_a_layernorm.weight`, rq);
      this.qB = LinearLayer.load(ps, `${prefix}.q_b_proj`, qOut, rq);
    }
    this.kvA = LinearLayer.load(ps, `${prefix}.kv_a_proj_with_mqa`, r + dR, D);
    this.kvANorm = norm(`${prefix}.kv_a_layernorm.weight`, r);
    this.kvB = LinearLayer.load(ps, `${prefix}.kv_b_proj`, H * (dn + dv), r);
    this.o = LinearLayer.load(ps, `${prefix}.o_proj`, D, H * dv);
    this.core = new CausalAttention(be, { nHeads: H, nKvHeads: H, dK: dn + dR, dV: dv, scale: 1 / Math.sqrt(dn + dR) });
  }

  params(): Param[] {
    const out: Param[] = [];
    for (const l of [this.q, this.qA, this.qB, this.kvA, this.kvB, this.o]) if (l) out.push(...l.params());
    for (const n of [this.qANorm, this.kvANorm]) if (n) out.push(n.w);
    return out;
  }

  private ensure(T: number): void {
    if (T === this.T) return;
    const { nHeads: H, qkNopeHeadDim: dn, qkRopeHeadDim: dR, vHeadDim: dv, kvLoraRank: r } = this.s, be = this.be;
    const rq = this.s.qLoraRank ?? 0, qh = dn + dR;
    this.ql = be.alloc(T * rq); this.qln = be.alloc(T * rq); this.qlr = be.alloc(T); this.dql = be.alloc(T * rq); this.dqln = be.alloc(T * rq);
    this.qa = be.alloc(T * H * qh); this.dq = be.alloc(T * H * qh);
    this.kva = be.alloc(T * (r + dR)); this.dkva = be.alloc(T * (r + dR));
    this.c = be.alloc(T * r); this.cn = be.alloc(T * r); this.cr = be.alloc(T); this.dcn = be.alloc(T * r); this.dc = be.alloc(T * r);
    this.kv = be.alloc(T * H * (dn + dv)); this.dkv = be.alloc(T * H * (dn + dv));
    this.keys = be.alloc(T * H * qh); this.dkeys = be.alloc(T * H * qh);
    this.vals = be.alloc(T * H * dv); this.dvals = be.alloc(T * H * dv);
    this.mixed = be.alloc(T * H * dv); this.dm = be.alloc(T * H * dv);
    this.T = T;
  }

  forward(x: Vec, row: RowLayout, out: Vec): void {
    const { T, positions, segments } = row;
    const { nHeads: H, qkNopeHeadDim: dn, qkRopeHeadDim: dR, vHeadDim: dv, kvLoraRank: r } = this.s, be = this.be;
    const qh = dn + dR, w = r + dR, hw = dn + dv;
    this.ensure(T);
    // Queries.
    if (this.q) {
      this.q.forward(be, x, T, this.qa);
    } else {
      this.qA!.forward(be, x, T, this.ql);
      if (this.qANorm) this.qANorm.forward(this.ql, T, this.qln, this.qlr);
      this.qB!.forward(be, this.qANorm ? this.qln : this.ql, T, this.qa);
    }
    ropeRotate(this.qa, T, H, qh, dn, positions, this.rope, this.layout, false);
    // Latent and rope key.
    const kva = this.kva, c = this.c;
    this.kvA.forward(be, x, T, kva);
    for (let t = 0; t < T; t++) for (let i = 0; i < r; i++) c[t * r + i] = kva[t * w + i]!;
    if (this.kvANorm) this.kvANorm.forward(c, T, this.cn, this.cr);
    ropeRotate(kva, T, 1, w, r, positions, this.rope, this.layout, false);
    // Per-head keys and values from the latent.
    const kv = this.kv, keys = this.keys, vals = this.vals;
    this.kvB.forward(be, this.kvANorm ? this.cn : c, T, kv);
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const src = (t * H + h) * hw, ko = (t * H + h) * qh, vo = (t * H + h) * dv;
        for (let i = 0; i < dn; i++) keys[ko + i] = kv[src + i]!;
        for (let i = 0; i < dR; i++) keys[ko + dn + i] = kva[t * w + r + i]!;
        for (let i = 0; i < dv; i++) vals[vo + i] = kv[src + dn + i]!;
      }
    }
    this.core.forward(this.qa, keys, vals, T, segments, this.mixed);
    this.o.forward(be, this.mixed, T, out);
  }

  backward(x: Vec, row: RowLayout, dOut: Vec, dx: Vec): void {
    const { T, positions, segments } = row;
    const { nHeads: H, qkNopeHeadDim: dn, qkRopeHeadDim: dR, vHeadDim: dv, kvLoraRank: r } = this.s, be = this.be;
    const qh = dn + dR, w = r + dR, hw = dn + dv;
    this.o.backward(be, this.mixed, dOut, T, this.dm);
    const dq = this.dq, dkeys = this.dkeys, dvals = this.dvals, dkv = this.dkv, dkva = this.dkva;
    this.core.backward(this.qa, this.keys, this.vals, T, segments, this.dm, dq, dkeys, dvals);
    // Split key/value gradients back into kv_b outputs and the shared rope key.
    dkva.fill(0);
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const dst = (t * H + h) * hw, ko = (t * H + h) * qh, vo = (t * H + h) * dv;
        for (let i = 0; i < dn; i++) dkv[dst + i] = dkeys[ko + i]!;
        for (let i = 0; i < dR; i++) dkva[t * w + r + i]! += dkeys[ko + dn + i]!;
        for (let i = 0; i < dv; i++) dkv[dst + dn + i] = dvals[vo + i]!;
      }
    }
    ropeRotate(dkva, T, 1, w, r, positions, this.rope, this.layout, true);
    // Latent.
    this.kvB.backward(be, this.kvANorm ? this.cn : this.c, dkv, T, this.dcn);
    let dc = this.dcn;
    if (this.kvANorm) {
      dc = this.dc;
      dc.fill(0, 0, T * r);
      this.kvANorm.backward(this.c, this.cr, this.dcn, T, dc);
    }
    for (let t = 0; t < T; t++) for (let i = 0; i < r; i++) dkva[t * w + i] = dc[t * r + i]!;
    this.kvA.backward(be, x, dkva, T, dx, false);
    // Queries.
    ropeRotate(dq, T, H, qh, dn, positions, this.rope, this.layout, true);
    if (this.q) {
      this.q.backward(be, x, dq, T, dx, true);
    } else {
      const rq = this.s.qLoraRank!;
      this.qB!.backward(be, this.qANorm ? this.qln : this.ql, dq, T, this.dqln);
      let dql = this.dqln;
      if (this.qANorm) {
        dql = this.dql;
        dql.fill(0, 0, T * rq);
        this.qANorm.backward(this.ql, this.qlr, this.dqln, T, dql);
      }
      this.qA!.backward(be, x, dql, T, dx, true);
    }
  }
}
