// MHA2MLA attention (docs/methods.md#mha2mla; engine: models/mha2mla-attention.ts) in its decompressed
// (training) form. Each KV head g keeps a 2r-dim RoPE key rotating at its own r source
// frequencies; one latent c shared by the layer carries the NoPE keys and the values:
//   q = x Wqᵀ [T, H, d], head layout [rope 2r (interleaved) | nope d − 2r], RoPE at g's frequencies
//   k_rope = x W_krᵀ [T, G, 2r] (RoPE per g);  c = x W_downᵀ [T, R]
//   k_nope = c W_upKᵀ (+b) [T, G, d − 2r];  v = c W_upVᵀ (+b) [T, G, d]
//   k^g = [k_rope^g | k_nope^g];  a = grouped attn(q, k, v) with scale d^−½;  out = a Woᵀ
// Backward reverses the steps; the latent collects the gradients of both up-projections.
import type { RopeTable } from '../../models/rope.js';
import type { TrainBackend, Vec } from '../backend.js';
import type { Param, ParamStore } from '../params.js';
import type { RowLayout, TrainAttention } from './attention.js';
import { CausalAttention } from './causal-attention.js';
import { LinearLayer } from './linear.js';
import { ropeRotate } from './rope.js';

export interface Mha2mlaTrainShape {
  hidden: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** r: RoPE pairs per KV head. */
  ropePairs: number;
  kvLoraRank: number;
}

export class Mha2mlaAttentionLayer implements TrainAttention {
  readonly q: LinearLayer;
  readonly kRope: LinearLayer | null;
  readonly down: LinearLayer;
  readonly upK: LinearLayer;
  readonly upV: LinearLayer;
  readonly o: LinearLayer;
  private readonly core: CausalAttention;
  private T = -1;
  // Activations of the last forward (q and rope keys after RoPE).
  private qa!: Vec; private kr!: Vec; private c!: Vec; private kn!: Vec; private keys!: Vec; private vals!: Vec; private mixed!: Vec;
  // Gradient scratch.
  private dm!: Vec; private dq!: Vec; private dkeys!: Vec; private dvals!: Vec; private dkr!: Vec; private dkn!: Vec; private dc!: Vec;

  /** ropes: one table per KV head with its r kept frequencies (models/mha2mla-attention.ts perHeadRopeTables). */
  constructor(private readonly be: TrainBackend, ps: ParamStore, prefix: string, readonly s: Mha2mlaTrainShape, private readonly ropes: readonly RopeTable[]) {
    const { hidden: D, nHeads: H, nKvHeads: G, headDim: d, ropePairs: r, kvLoraRank: R } = s;
    if (ropes.length !== G || ropes.some((t) => t.half !== r)) throw new Error(`expected ${G} RoPE tables of ${r} pairs`);
    this.q = LinearLayer.load(ps, `${prefix}.q_proj`, H * d, D);
    this.kRope = r > 0 ? LinearLayer.load(ps, `${prefix}.k_r_proj`, G * 2 * r, D) : null;
    this.down = LinearLayer.load(ps, `${prefix}.kv_proj.down_kv`, R, D);
    this.upK = LinearLayer.load(ps, `${prefix}.kv_proj.up_k`, G * (d - 2 * r), R);
    this.upV = LinearLayer.load(ps, `${prefix}.kv_proj.up_v`, G * d, R);
    this.o = LinearLayer.load(ps, `${prefix}.o_proj`, D, H * d);
    this.core = new CausalAttention(be, { nHeads: H, nKvHeads: G, dK: d, dV: d, scale: 1 / Math.sqrt(d) });
  }

  params(): Param[] {
    return [this.q, this.kRope, this.down, this.upK, this.upV, this.o].flatMap((l) => (l ? l.params() : []));
  }

  private ensure(T: number): void {
    if (T === this.T) return;
    const { nHeads: H, nKvHeads: G, headDim: d, ropePairs: r, kvLoraRank: R } = this.s, be = this.be;
    const dn = d - 2 * r;
    this.qa = be.alloc(T * H * d); this.dq = be.alloc(T * H * d);
    this.kr = be.alloc(T * G * 2 * r); this.dkr = be.alloc(T * G * 2 * r);
    this.c = be.alloc(T * R); this.dc = be.alloc(T * R);
    this.kn = be.alloc(T * G * dn); this.dkn = be.alloc(T * G * dn);
    this.keys = be.alloc(T * G * d); this.dkeys = be.alloc(T * G * d);
    this.vals = be.alloc(T * G * d); this.dvals = be.alloc(T * G * d);
    this.mixed = be.alloc(T * H * d); this.dm = be.alloc(T * H * d);
    this.T = T;
  }

  /** RoPE (or its inverse) on the queries of every group and on the rope keys. */
  private rotate(q: Vec, kr: Vec, T: number, positions: Int32Array, inverse: boolean): void {
    const { nHeads: H, nKvHeads: G, headDim: d, ropePairs: r } = this.s, n = H / G;
    if (r === 0) return;
    for (let g = 0; g < G; g++) {
      const table = this.ropes[g]!;
      ropeRotate(q, T, H, d, 0, positions, table, 'interleaved', inverse, [g * n, (g + 1) * n]);
      ropeRotate(kr, T, G, 2 * r, 0, positions, table, 'interleaved', inverse, [g, g + 1]);
    }
  }

  forward(x: Vec, row: RowLayout, out: Vec): void {
    const { T, positions, segments } = row;
    const { nKvHeads: G, headDim: d, ropePairs: r } = this.s, be = this.be;
    const dn = d - 2 * r;
    this.ensure(T);
    this.q.forward(be, x, T, this.qa);
    if (this.kRope) this.kRope.forward(be, x, T, this.kr);
    this.rotate(this.qa, this.kr, T, positions, false);
    this.down.forward(be, x, T, this.c);
    this.upK.forward(be, this.c, T, this.kn);
    this.upV.forward(be, this.c, T, this.vals);
    const keys = this.keys, kr = this.kr, kn = this.kn;
    for (let t = 0; t < T; t++) {
      for (let g = 0; g < G; g++) {
        const o = (t * G + g) * d;
        for (let i = 0; i < 2 * r; i++) keys[o + i] = kr[(t * G + g) * 2 * r + i]!;
        for (let i = 0; i < dn; i++) keys[o + 2 * r + i] = kn[(t * G + g) * dn + i]!;
      }
    }
    this.core.forward(this.qa, keys, this.vals, T, segments, this.mixed);
    this.o.forward(be, this.mixed, T, out);
  }

  backward(x: Vec, row: RowLayout, dOut: Vec, dx: Vec): void {
    const { T, positions, segments } = row;
    const { nKvHeads: G, headDim: d, ropePairs: r } = this.s, be = this.be;
    const dn = d - 2 * r;
    this.o.backward(be, this.mixed, dOut, T, this.dm);
    this.core.backward(this.qa, this.keys, this.vals, T, segments, this.dm, this.dq, this.dkeys, this.dvals);
    const dkeys = this.dkeys, dkr = this.dkr, dkn = this.dkn;
    for (let t = 0; t < T; t++) {
      for (let g = 0; g < G; g++) {
        const o = (t * G + g) * d;
        for (let i = 0; i < 2 * r; i++) dkr[(t * G + g) * 2 * r + i] = dkeys[o + i]!;
        for (let i = 0; i < dn; i++) dkn[(t * G + g) * dn + i] = dkeys[o + 2 * r + i]!;
      }
    }
    this.rotate(this.dq, dkr, T, positions, true);
    this.upK.backward(be, this.c, dkn, T, this.dc, false);
    this.upV.backward(be, this.c, this.dvals, T, this.dc, true);
    this.down.backward(be, x, this.dc, T, dx, false);
    if (this.kRope) this.kRope.backward(be, x, dkr, T, dx, true);
    this.q.backward(be, x, this.dq, T, dx, true);
  }
}
