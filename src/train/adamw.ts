// AdamW (decoupled weight decay, Loshchilov & Hutter) on fp32 master weights, with global
// gradient-norm clipping. Per parameter with gradient g at step t (1-based):
//   m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
//   θ ← θ − lr·( m/(1−β1ᵗ) / (√(v/(1−β2ᵗ)) + ε) + wd·θ )       (wd only on matrices)
import type { TrainBackend, Vec } from './backend.js';
import type { Param } from './params.js';

export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export class AdamW {
  /** Completed update steps (t of the bias correction). */
  t = 0;
  readonly m = new Map<string, Vec>();
  readonly v = new Map<string, Vec>();

  constructor(readonly cfg: AdamWConfig, readonly params: readonly Param[], be: TrainBackend) {
    for (const p of params) {
      if (!p.grad) throw new Error(`${p.name} is frozen; the optimizer takes trained parameters only`);
      this.m.set(p.name, be.alloc(p.data.length));
      this.v.set(p.name, be.alloc(p.data.length));
    }
  }

  step(lr: number): void {
    const { beta1: b1, beta2: b2, eps, weightDecay: wd } = this.cfg;
    this.t++;
    const c1 = 1 / (1 - Math.pow(b1, this.t)), c2 = 1 / (1 - Math.pow(b2, this.t));
    for (const p of this.params) {
      const m = this.m.get(p.name)!, v = this.v.get(p.name)!, g = p.grad!, w = p.data;
      const decay = p.decay ? lr * wd : 0;
      for (let i = 0; i < w.length; i++) {
        const gi = g[i]!;
        const mi = b1 * m[i]! + (1 - b1) * gi;
        const vi = b2 * v[i]! + (1 - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i]! - lr * (mi * c1) / (Math.sqrt(vi * c2) + eps) - decay * w[i]!;
      }
    }
  }
}

/** Global L2 norm of the gradients (float64 sum); when above maxNorm (> 0), scales them down to it. Returns the norm before clipping. */
export function clipGradNorm(params: readonly Param[], maxNorm: number): number {
  let ss = 0;
  for (const p of params) {
    const g = p.grad!;
    for (let i = 0; i < g.length; i++) ss += g[i]! * g[i]!;
  }
  const norm = Math.sqrt(ss);
  if (maxNorm > 0 && norm > maxNorm) {
    const s = maxNorm / (norm + 1e-6);
    for (const p of params) {
      const g = p.grad!;
      for (let i = 0; i < g.length; i++) g[i]! *= s;
    }
  }
  return norm;
}
