// The top of the model: final RMSNorm, the LM head (the embedding matrix when tied) and the
// loss. Forward and backward are fused: the loss gradient is known as soon as the logits are.
//   h = norm(x);  z = h·Wᵀ;  dz = ∂L/∂z (loss.ts);  dh = dz·W;  dW += dzᵀ·h;  dx = norm⁻(dh)
import type { TrainBackend, Vec } from '../backend.js';
import { lossAndGrad, type LossSums } from '../loss.js';
import type { Param } from '../params.js';
import { LinearLayer } from './linear.js';
import { RmsNormLayer } from './rmsnorm.js';

export interface LossSpec {
  targets: Int32Array;
  teacher: Float32Array | null;
  /** Distillation weight α in [0, 1]. */
  alpha: number;
  /** Multiplies the gradient (1 / positions scored in the whole batch: the batch mean). */
  scale: number;
}

export class HeadLossLayer {
  readonly norm: RmsNormLayer;
  readonly head: LinearLayer;
  private T = -1;
  private h!: Vec; private r!: Vec; private logits!: Vec; private dh!: Vec;

  constructor(private readonly be: TrainBackend, normW: Param, headW: Param, eps: number) {
    this.norm = new RmsNormLayer(normW, eps);
    this.head = new LinearLayer(headW, null);
  }

  private ensure(T: number): void {
    if (T === this.T) return;
    const D = this.norm.D, V = this.head.out, be = this.be;
    this.h = be.alloc(T * D); this.r = be.alloc(T); this.dh = be.alloc(T * D); this.logits = be.alloc(T * V);
    this.T = T;
  }

  /** Logits [T×V] of x (a view, valid until the next call). */
  logitsOf(x: Vec, T: number): Vec {
    this.ensure(T);
    this.norm.forward(x, T, this.h, this.r);
    this.head.forward(this.be, this.h, T, this.logits);
    return this.logits;
  }

  /** Loss sums for x [T×D]; dx [T×D] receives (is overwritten with) the gradient w.r.t. x. */
  forwardBackward(x: Vec, T: number, loss: LossSpec, dx: Vec, sums: LossSums): void {
    const V = this.head.out;
    const z = this.logitsOf(x, T);
    lossAndGrad(z, T, V, loss.targets, loss.teacher, loss.alpha, loss.scale, sums);
    this.head.backward(this.be, this.h, z, T, this.dh);
    dx.fill(0, 0, T * this.norm.D);
    this.norm.backward(x, this.r, this.dh, T, dx);
  }
}
