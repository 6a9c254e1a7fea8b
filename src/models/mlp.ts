// The MLP seam of a decoder layer, and the dense SwiGLU block: down(silu(gate(x)) · up(x)).
import { kernels } from '../kernels/index.js';
import type { WeightSource } from '../tensor.js';
import { Linear } from './linear.js';
import { siluMul } from './ops.js';
import type { Workspace } from './workspace.js';

/** What a decoder layer needs of its feed-forward block (dense SwiGLU here; mixture-of-experts in moe.ts). */
export interface Mlp {
  /** out [T×D] = MLP(x [T×D]). */
  forward(x: Float32Array, T: number, out: Float32Array, ws: Workspace): void;
  /** Floating-point operations for T tokens. */
  flops(T: number): number;
  paramCount(): number;
  /** Bytes of weights one token's forward reads (the decode roofline). */
  decodeWeightBytes(): number;
  /** What `inspect` says of it after "MLP" (the width of a dense block). */
  summary(): string;
}

export class SwiGluMlp implements Mlp {
  readonly gate: Linear;
  readonly up: Linear;
  readonly down: Linear;

  constructor(gate: Linear, up: Linear, down: Linear) {
    const I = gate.outFeatures;
    if (up.outFeatures !== I || down.inFeatures !== I || up.inFeatures !== gate.inFeatures || down.outFeatures !== gate.inFeatures) {
      throw new Error('gate/up/down projections have inconsistent shapes');
    }
    this.gate = gate; this.up = up; this.down = down;
  }

  /** `${prefix}.{gate,up,down}_proj` [I, D], [I, D], [D, I]. */
  static load(src: WeightSource, prefix: string, D: number, I: number, mlpBias: boolean): SwiGluMlp {
    const bias = mlpBias ? 'required' : 'optional';
    return new SwiGluMlp(
      Linear.load(src, `${prefix}.gate_proj`, I, D, bias),
      Linear.load(src, `${prefix}.up_proj`, I, D, bias),
      Linear.load(src, `${prefix}.down_proj`, D, I, bias),
    );
  }

  flops(T: number): number {
    return this.gate.flops(T) + this.up.flops(T) + this.down.flops(T);
  }

  paramCount(): number {
    return this.gate.paramCount() + this.up.paramCount() + this.down.paramCount();
  }

  decodeWeightBytes(): number {
    return this.gate.weightBytes() + this.up.weightBytes() + this.down.weightBytes();
  }

  summary(): string {
    return String(this.gate.outFeatures);
  }

  /** out [T×D] = MLP(x [T×D]). */
  forward(x: Float32Array, T: number, out: Float32Array, ws: Workspace): void {
    const I = this.gate.outFeatures;
    const g = ws.get('mlp.gate', T * I);
    const gw = this.gate.weight, uw = this.up.weight;
    if (T === 1 && !this.gate.bias && !this.up.bias && gw.dtype === uw.dtype) {
      // One token: gate, up and silu·mul in one pass over both weights.
      kernels().gemvSwiGlu(gw.data, uw.data, gw.dtype, x, g, I, this.gate.inFeatures);
    } else {
      const u = ws.get('mlp.up', T * I);
      this.gate.forward(x, T, g);
      this.up.forward(x, T, u);
      siluMul(g, u, T * I);
    }
    this.down.forward(g, T, out);
  }
}
