// The trainable mixture-of-experts MLP (Mixtral routing, models/moe.ts; docs/methods.md#moe).
//   forward:  l = x·W_gᵀ;  S, w = top-k of softmax(l), renormalised;  y_j = SwiGLU_j(x);
//             out = Σ_{j∈S} w_j y_j
//   backward: the selection S is piecewise constant in the parameters, so it carries no gradient;
//             w_j = p_j / Σ_S p = exp(l_j) / Σ_{i∈S} exp(l_i) is a softmax over the selected
//             logits, hence with g_j = ⟨dOut, y_j⟩:
//               dl_j = w_j (g_j − Σ_{i∈S} w_i g_i)  (j ∈ S),  dl_j = 0 otherwise;
//             dy_j = w_j · dOut through expert j (the SwiGLU backward of mlp.ts) on its own tokens;
//             dx = dl·W_g + Σ_j dx_j.
// Rows are grouped by expert (groupByExpert), so each expert's GEMMs run on its tokens only.
import { groupByExpert, routeTopK, type ExpertGroups, type MoeNames, type MoeShape } from '../../models/moe.js';
import type { TrainBackend, Vec } from '../backend.js';
import type { Param, ParamStore } from '../params.js';
import { LinearLayer } from './linear.js';
import type { TrainMlp } from './mlp.js';

interface Expert {
  gate: LinearLayer;
  up: LinearLayer;
  down: LinearLayer;
}

export class MoeLayer implements TrainMlp {
  readonly router: LinearLayer;
  readonly experts: readonly Expert[];
  private T = -1;
  // Activations of the last forward: logits, routing, and per routed row (expert order) the
  // gathered input, gate/up pre-activations, the SwiGLU product and the expert output.
  private logits!: Vec; private idx!: Int32Array; private w!: Float64Array; private groups!: ExpertGroups;
  private xr!: Vec; private g!: Vec; private u!: Vec; private h!: Vec; private y!: Vec;
  // Gradient scratch.
  private dl!: Vec; private dy!: Vec; private dh!: Vec; private dxr!: Vec; private gSel!: Float64Array;

  constructor(private readonly be: TrainBackend, ps: ParamStore, names: MoeNames, readonly s: MoeShape) {
    const D = s.hidden, I = s.expertInter;
    const lin = (name: string, out: number, inp: number): LinearLayer => {
      if (ps.has(`${name}.bias`)) throw new Error(`checkpoint has a tensor "${name}.bias"; mixture-of-experts layers have no biases`);
      return LinearLayer.load(ps, name, out, inp);
    };
    this.router = lin(names.router, s.numExperts, D);
    this.experts = Array.from({ length: s.numExperts }, (_, e) => {
      const n = names.expert(e);
      return { gate: lin(n.gate, I, D), up: lin(n.up, I, D), down: lin(n.down, D, I) };
    });
  }

  params(): Param[] {
    return [this.router, ...this.experts.flatMap((x) => [x.gate, x.up, x.down])].flatMap((l) => l.params());
  }

  private ensure(T: number): void {
    if (T === this.T) return;
    const { hidden: D, expertInter: I, numExperts: E, topK: k } = this.s, be = this.be, R = T * k;
    this.logits = be.alloc(T * E); this.idx = new Int32Array(R); this.w = new Float64Array(R);
    this.groups = { offsets: new Int32Array(E + 1), token: new Int32Array(R), weight: new Float64Array(R), row: new Int32Array(R) };
    this.xr = be.alloc(R * D); this.g = be.alloc(R * I); this.u = be.alloc(R * I); this.h = be.alloc(R * I); this.y = be.alloc(R * D);
    this.dl = be.alloc(T * E); this.dy = be.alloc(R * D); this.dh = be.alloc(R * I); this.dxr = be.alloc(R * D); this.gSel = new Float64Array(R);
    this.T = T;
  }

  forward(x: Vec, T: number, out: Vec): void {
    const { hidden: D, expertInter: I, numExperts: E, topK: k } = this.s, be = this.be;
    this.ensure(T);
    this.router.forward(be, x, T, this.logits);
    routeTopK(this.logits, T, E, k, this.idx, this.w);
    const gr = groupByExpert(this.idx, this.w, T, E, k, this.groups);
    const { xr, g, u, h, y } = this;
    for (let r = 0; r < T * k; r++) { const t = gr.token[r]!; xr.set(x.subarray(t * D, (t + 1) * D), r * D); }
    out.fill(0, 0, T * D);
    for (let e = 0; e < E; e++) {
      const r0 = gr.offsets[e]!, n = gr.offsets[e + 1]! - r0;
      if (n === 0) continue;
      const ex = this.experts[e]!;
      const xe = xr.subarray(r0 * D, (r0 + n) * D), ge = g.subarray(r0 * I, (r0 + n) * I), ue = u.subarray(r0 * I, (r0 + n) * I);
      const he = h.subarray(r0 * I, (r0 + n) * I), ye = y.subarray(r0 * D, (r0 + n) * D);
      ex.gate.forward(be, xe, n, ge);
      ex.up.forward(be, xe, n, ue);
      for (let i = 0; i < n * I; i++) { const a = ge[i]!; he[i] = (a / (1 + Math.exp(-a))) * ue[i]!; }
      ex.down.forward(be, he, n, ye);
    }
    for (let r = 0; r < T * k; r++) {
      const o = gr.token[r]! * D, wt = gr.weight[r]!;
      for (let j = 0; j < D; j++) out[o + j]! += wt * y[r * D + j]!;
    }
  }

  backward(x: Vec, T: number, dOut: Vec, dx: Vec): void {
    const { hidden: D, expertInter: I, numExperts: E, topK: k } = this.s, be = this.be, R = T * k;
    const gr = this.groups, { g, u, h, y, dl, dy, dh, dxr, xr } = this;
    // Router: g_r = ⟨dOut_t, y_r⟩ per routed row, then the softmax-over-S Jacobian per token.
    const gSel = this.gSel, rowOf = gr.row;
    for (let r = 0; r < R; r++) {
      const o = gr.token[r]! * D;
      let s = 0;
      for (let j = 0; j < D; j++) s += dOut[o + j]! * y[r * D + j]!;
      gSel[r] = s;
    }
    dl.fill(0, 0, T * E);
    for (let t = 0; t < T; t++) {
      let mean = 0;
      for (let j = 0; j < k; j++) mean += this.w[t * k + j]! * gSel[rowOf[t * k + j]!]!;
      for (let j = 0; j < k; j++) {
        const q = t * k + j;
        dl[t * E + this.idx[q]!] = this.w[q]! * (gSel[rowOf[q]!]! - mean);
      }
    }
    this.router.backward(be, x, dl, T, dx, false);
    // Experts, each on its own rows: dy_r = w_r · dOut_t.
    for (let r = 0; r < R; r++) {
      const o = gr.token[r]! * D, wt = gr.weight[r]!;
      for (let j = 0; j < D; j++) dy[r * D + j] = wt * dOut[o + j]!;
    }
    for (let e = 0; e < E; e++) {
      const r0 = gr.offsets[e]!, n = gr.offsets[e + 1]! - r0;
      if (n === 0) continue;
      const ex = this.experts[e]!;
      const sl = (v: Vec, w: number): Vec => v.subarray(r0 * w, (r0 + n) * w);
      const ge = sl(g, I), ue = sl(u, I), he = sl(h, I), dhe = sl(dh, I), xe = sl(xr, D), dxe = sl(dxr, D);
      ex.down.backward(be, he, sl(dy, D), n, dhe);
      // dh → (dg into dh, du into h): h is not needed again once down's gradient is taken.
      for (let i = 0; i < n * I; i++) {
        const a = ge[i]!, sg = 1 / (1 + Math.exp(-a)), d = dhe[i]!;
        he[i] = d * a * sg;
        dhe[i] = d * ue[i]! * sg * (1 + a * (1 - sg));
      }
      ex.gate.backward(be, xe, dhe, n, dxe, false);
      ex.up.backward(be, xe, he, n, dxe, true);
    }
    for (let r = 0; r < R; r++) {
      const o = gr.token[r]! * D;
      for (let j = 0; j < D; j++) dx[o + j]! += dxr[r * D + j]!;
    }
  }
}
