// y = x·Wᵀ + b over T rows, W stored [out, in] as in the checkpoint.
//   forward:  y  = x·Wᵀ (+ b)                 NT GEMM
//   backward: dx = dy·W                        NN GEMM
//             dW += dyᵀ·x                      TN GEMM (skipped when W is frozen)
//             db += Σ_t dy[t]
import type { TrainBackend, Vec } from '../backend.js';
import type { Param, ParamStore } from '../params.js';

export class LinearLayer {
  readonly out: number;
  readonly inp: number;

  constructor(readonly w: Param, readonly b: Param | null) {
    if (w.shape.length !== 2) throw new Error(`${w.name}: a linear weight must be 2-D`);
    this.out = w.shape[0]!;
    this.inp = w.shape[1]!;
    if (b && (b.shape.length !== 1 || b.shape[0] !== this.out)) throw new Error(`${b.name}: bias of shape [${b.shape.join(', ')}] for ${this.out} outputs`);
  }

  /** `${name}.weight` [out, in] and, when the checkpoint has it, `${name}.bias` [out]. */
  static load(ps: ParamStore, name: string, out: number, inp: number): LinearLayer {
    return new LinearLayer(ps.get(`${name}.weight`, [out, inp]), ps.optional(`${name}.bias`, [out]));
  }

  params(): Param[] {
    return this.b ? [this.w, this.b] : [this.w];
  }

  forward(be: TrainBackend, x: Vec, T: number, y: Vec): void {
    be.nt(x, this.w.data, y, T, this.out, this.inp, false);
    const b = this.b?.data;
    if (!b) return;
    const N = this.out;
    for (let t = 0; t < T; t++) for (let j = 0; j < N; j++) y[t * N + j]! += b[j]!;
  }

  /**
   * Gradients for input x [T×in] and output gradient dy [T×out]. dx (when given) is written,
   * or added to when accumulateDx; parameter gradients are always accumulated.
   */
  backward(be: TrainBackend, x: Vec, dy: Vec, T: number, dx: Vec | null, accumulateDx = false): void {
    const N = this.out, K = this.inp;
    if (dx) be.nn(dy, this.w.data, dx, T, K, N, accumulateDx);
    const gw = this.w.grad;
    if (gw) be.tn(dy, x, gw, N, K, T, true);
    const gb = this.b?.grad;
    if (gb) for (let t = 0; t < T; t++) for (let j = 0; j < N; j++) gb[j]! += dy[t * N + j]!;
  }
}
