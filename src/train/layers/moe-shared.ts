// Routed experts plus the always-active shared experts (DeepSeek-V2/V3's MoE block; the engine's
// counterpart is models/moe-shared.ts): out = MoE(x) + shared(x), so both gradients add.
import type { TrainBackend, Vec } from '../backend.js';
import type { Param } from '../params.js';
import type { MlpLayer, TrainMlp } from './mlp.js';
import type { MoeLayer } from './moe.js';

export class SharedExpertMoeLayer implements TrainMlp {
  private T = -1;
  private y!: Vec;
  private dx2!: Vec;

  constructor(private readonly be: TrainBackend, readonly routed: MoeLayer, readonly shared: MlpLayer, private readonly hidden: number) {}

  private ensure(T: number): void {
    if (T === this.T) return;
    this.y = this.be.alloc(T * this.hidden);
    this.dx2 = this.be.alloc(T * this.hidden);
    this.T = T;
  }

  forward(x: Vec, T: number, out: Vec): void {
    this.ensure(T);
    this.routed.forward(x, T, out);
    this.shared.forward(x, T, this.y);
    for (let i = 0; i < T * this.hidden; i++) out[i]! += this.y[i]!;
  }

  backward(x: Vec, T: number, dOut: Vec, dx: Vec): void {
    this.ensure(T);
    this.routed.backward(x, T, dOut, dx);
    this.shared.backward(x, T, dOut, this.dx2);
    for (let i = 0; i < T * this.hidden; i++) dx[i]! += this.dx2[i]!;
  }

  params(): Param[] {
    return [...this.routed.params(), ...this.shared.params()];
  }
}
