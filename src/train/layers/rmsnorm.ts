// RMSNorm over rows of width D: y = x · r · w with r = (mean(x²) + eps)^−½ (kept per row).
//   backward: with g = dy∘w,  dx = r·g − x · r³ · (g·x) / D,   dw += Σ_t dy∘x·r
import type { Vec } from '../backend.js';
import type { Param } from '../params.js';

export class RmsNormLayer {
  readonly D: number;

  constructor(readonly w: Param, readonly eps: number) {
    if (w.shape.length !== 1) throw new Error(`${w.name}: a norm weight must be 1-D`);
    this.D = w.shape[0]!;
  }

  /** y[T×D] from x[T×D]; r[T] receives each row's reciprocal rms (for backward). */
  forward(x: Vec, T: number, y: Vec, r: Vec): void {
    const D = this.D, w = this.w.data;
    for (let t = 0; t < T; t++) {
      const o = t * D;
      let ss = 0;
      for (let i = 0; i < D; i++) { const v = x[o + i]!; ss += v * v; }
      const inv = 1 / Math.sqrt(ss / D + this.eps);
      r[t] = inv;
      for (let i = 0; i < D; i++) y[o + i] = x[o + i]! * inv * w[i]!;
    }
  }

  /** dx += gradient through the norm (the residual stream adds into it); dw accumulates. */
  backward(x: Vec, r: Vec, dy: Vec, T: number, dx: Vec): void {
    const D = this.D, w = this.w.data, gw = this.w.grad;
    for (let t = 0; t < T; t++) {
      const o = t * D, inv = r[t]!;
      let dot = 0;
      for (let i = 0; i < D; i++) dot += dy[o + i]! * w[i]! * x[o + i]!;
      const c = dot * inv * inv * inv / D;
      for (let i = 0; i < D; i++) dx[o + i]! += inv * dy[o + i]! * w[i]! - c * x[o + i]!;
      if (gw) for (let i = 0; i < D; i++) gw[i]! += dy[o + i]! * x[o + i]! * inv;
    }
  }
}
