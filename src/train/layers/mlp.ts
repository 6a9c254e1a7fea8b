// SwiGLU feed-forward: out = down(silu(gate(x)) ∘ up(x)).
//   backward: dh = dOut·Wd;  dg = dh ∘ up ∘ silu'(g);  du = dh ∘ silu(g);  dx = dg·Wg + du·Wu
//   with silu'(g) = σ(g)·(1 + g·(1 − σ(g))).
import type { TrainBackend, Vec } from '../backend.js';
import type { Param, ParamStore } from '../params.js';
import { LinearLayer } from './linear.js';

/** What a decoder block needs from its feed-forward block in training. */
export interface TrainMlp {
  /** out [T×D] from x [T×D], keeping the activations backward needs. */
  forward(x: Vec, T: number, out: Vec): void;
  /** dx [T×D] from dOut, using the activations of the last forward on x (parameter gradients accumulate). */
  backward(x: Vec, T: number, dOut: Vec, dx: Vec): void;
  params(): Param[];
}

export class MlpLayer implements TrainMlp {
  readonly gate: LinearLayer;
  readonly up: LinearLayer;
  readonly down: LinearLayer;
  readonly inter: number;
  private T = -1;
  private g!: Vec; private u!: Vec; private h!: Vec; private dh!: Vec;

  constructor(private readonly be: TrainBackend, ps: ParamStore, prefix: string, hidden: number, inter: number) {
    this.gate = LinearLayer.load(ps, `${prefix}.gate_proj`, inter, hidden);
    this.up = LinearLayer.load(ps, `${prefix}.up_proj`, inter, hidden);
    this.down = LinearLayer.load(ps, `${prefix}.down_proj`, hidden, inter);
    this.inter = inter;
  }

  params(): Param[] {
    return [this.gate, this.up, this.down].flatMap((l) => l.params());
  }

  forward(x: Vec, T: number, out: Vec): void {
    const be = this.be, n = T * this.inter;
    if (T !== this.T) {
      this.g = be.alloc(n); this.u = be.alloc(n); this.h = be.alloc(n); this.dh = be.alloc(n);
      this.T = T;
    }
    const g = this.g, u = this.u, h = this.h;
    this.gate.forward(be, x, T, g);
    this.up.forward(be, x, T, u);
    for (let i = 0; i < n; i++) { const a = g[i]!; h[i] = (a / (1 + Math.exp(-a))) * u[i]!; }
    this.down.forward(be, h, T, out);
  }

  /** dx [T×D] written from dOut, using the activations of the last forward on x. */
  backward(x: Vec, T: number, dOut: Vec, dx: Vec): void {
    const be = this.be, n = T * this.inter;
    const g = this.g, u = this.u, dh = this.dh;
    this.down.backward(be, this.h, dOut, T, dh);
    // dh → (dg into dh, du into h): h is no longer needed once down's gradient is taken.
    const du = this.h;
    for (let i = 0; i < n; i++) {
      const a = g[i]!, sg = 1 / (1 + Math.exp(-a)), d = dh[i]!;
      du[i] = d * a * sg;
      dh[i] = d * u[i]! * sg * (1 + a * (1 - sg));
    }
    this.gate.backward(be, x, dh, T, dx, false);
    this.up.backward(be, x, du, T, dx, true);
  }
}
