// A routed mixture of experts plus always-active shared experts (DeepSeek-V2/V3's DeepseekV2MoE:
// out = Σ routed + shared(x)); the shared experts of a layer are one SwiGLU n_shared·I wide.
// transmla's stock export writes one all-zero shared expert (arch/deepseek-moe.ts says why).
import type { Mlp } from './mlp.js';
import type { MoeMlp } from './moe.js';
import type { SwiGluMlp } from './mlp.js';
import type { Workspace } from './workspace.js';

/** How inspect names routed experts plus a shared SwiGLU `width` wide (the built layer and the header-only inspect agree). */
export function sharedMoeSummary(routed: string, width: number): string {
  return `${routed} + shared expert × ${width}`;
}

export class SharedExpertMoe implements Mlp {
  constructor(readonly routed: MoeMlp, readonly shared: SwiGluMlp) {
    if (shared.gate.inFeatures !== routed.router.inFeatures) throw new Error('the shared expert and the routed experts have different hidden sizes');
  }

  forward(x: Float32Array, T: number, out: Float32Array, ws: Workspace): void {
    this.routed.forward(x, T, out, ws);
    const D = this.routed.router.inFeatures;
    const y = ws.get('moe.shared', T * D);
    this.shared.forward(x, T, y, ws);
    for (let i = 0; i < T * D; i++) out[i]! += y[i]!;
  }

  flops(T: number): number {
    return this.routed.flops(T) + this.shared.flops(T) + T * this.routed.router.inFeatures;
  }

  paramCount(): number {
    return this.routed.paramCount() + this.shared.paramCount();
  }

  decodeWeightBytes(): number {
    return this.routed.decodeWeightBytes() + this.shared.decodeWeightBytes();
  }

  summary(): string {
    return sharedMoeSummary(this.routed.summary(), this.shared.gate.outFeatures);
  }
}
