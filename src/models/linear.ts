// y = x·Wᵀ (+ b) with W [out, in] kept in its checkpoint dtype; the kernels widen it on the fly.
// One token (decode) goes through GEMV, which is bound by reading W; several go through the GEMM.
// W may also be q8_0/q4_0 blocks (Linear<QuantDType>, e.g. from quantizeTensor or
// GgufFile.readWeight): the same kernels take it, rounding x to 16-bit blocks (Kernels.gemv).
import { kernels } from '../kernels/index.js';
import type { FloatDType, WeightData, WeightDType } from '../kernels/types.js';
import { dataLength, isQuantDType, type Tensor, type WeightSource } from '../tensor.js';
import { requireTensor, requireWeight, widen } from './weights.js';

export class Linear<D extends WeightDType = WeightDType> {
  readonly weight: Tensor<D>;
  readonly bias: Float32Array | null;
  readonly outFeatures: number;
  readonly inFeatures: number;

  constructor(weight: Tensor<D>, bias: Float32Array | null = null) {
    if (weight.shape.length !== 2) throw new Error(`a linear weight must be 2-D, got [${weight.shape.join(', ')}]`);
    this.weight = weight;
    this.outFeatures = weight.shape[0]!;
    this.inFeatures = weight.shape[1]!;
    if (isQuantDType(weight.dtype)) {
      if (this.inFeatures % 32 !== 0) throw new Error(`a ${weight.dtype} linear weight needs rows of a multiple of 32 elements, got [${weight.shape.join(', ')}]`);
      const need = dataLength(weight.dtype, this.outFeatures * this.inFeatures);
      if (!(weight.data instanceof Uint8Array) || weight.data.length !== need) throw new Error(`a ${weight.dtype} [${weight.shape.join(', ')}] weight needs ${need} bytes of blocks`);
    }
    if (bias && bias.length !== this.outFeatures) throw new Error(`bias of ${bias.length} for ${this.outFeatures} outputs`);
    this.bias = bias;
  }

  /**
   * Loads `${name}.weight` [out, in] and `${name}.bias` [out]. bias: 'required' fails when absent,
   * 'optional' loads it when present (checkpoints are the authority on what exists).
   */
  static load(src: WeightSource, name: string, out: number, inp: number, bias: 'required' | 'optional'): Linear<WeightDType> {
    const w = requireWeight(src, `${name}.weight`, [out, inp]);
    const bName = `${name}.bias`;
    if (bias === 'required' && !src.has(bName)) throw new Error(`checkpoint has no tensor "${bName}" (the config says the projection has a bias)`);
    const b = src.has(bName) ? widen(requireTensor(src, bName, [out])) : null;
    return new Linear<WeightDType>(w, b);
  }

  paramCount(): number {
    return this.outFeatures * this.inFeatures + (this.bias?.length ?? 0);
  }

  /** Bytes a forward reads of this projection's parameters (weight as stored, f32 bias). */
  weightBytes(): number {
    return this.weight.data.byteLength + (this.bias?.byteLength ?? 0);
  }

  /** Floating-point operations for T tokens (2 per multiply-add). */
  flops(T: number): number {
    return 2 * T * this.outFeatures * this.inFeatures;
  }

  /** y [T×out] += b for T rows (no-op without a bias). */
  addBias(y: Float32Array, T: number): void {
    const b = this.bias;
    if (!b) return;
    const N = this.outFeatures;
    for (let t = 0; t < T; t++) {
      const o = t * N;
      for (let j = 0; j < N; j++) y[o + j]! += b[j]!;
    }
  }

  /** y [T×out] = x [T×in] · Wᵀ (+ b). */
  forward(x: Float32Array, T: number, y: Float32Array): void {
    const N = this.outFeatures, K = this.inFeatures;
    const k = kernels();
    if (T === 1) k.gemv(this.weight.data, this.weight.dtype, x, y, N, K);
    else k.matmul(x, this.weight.data, this.weight.dtype, y, T, N, K, true);
    this.addBias(y, T);
  }
}

/**
 * Several projections of the same input (q/k/v): ys[i] = x·W_iᵀ (+ b_i). A single token goes
 * through one fused GEMV call (one pass, one parallel region) when the weights share a dtype.
 */
export class SharedInputLinears {
  readonly linears: readonly Linear<WeightDType>[];
  // Reused argument arrays (refreshed every call, so a replaced weight tensor is picked up).
  private readonly weights: WeightData[];
  private readonly outs: number[];

  constructor(linears: readonly Linear<WeightDType>[]) {
    if (linears.length === 0) throw new Error('SharedInputLinears needs at least one projection');
    const K = linears[0]!.inFeatures;
    if (linears.some((l) => l.inFeatures !== K)) throw new Error('SharedInputLinears: projections take different input widths');
    this.linears = linears;
    this.weights = linears.map((l) => l.weight.data);
    this.outs = linears.map((l) => l.outFeatures);
  }

  forward(x: Float32Array, T: number, ys: readonly Float32Array[]): void {
    const ls = this.linears;
    if (T === 1 && ls.length <= 8) {
      const dt = ls[0]!.weight.dtype;
      let same = true;
      for (let i = 0; i < ls.length; i++) {
        this.weights[i] = ls[i]!.weight.data;
        if (ls[i]!.weight.dtype !== dt) same = false;
      }
      if (same) {
        kernels().gemvMulti(this.weights, dt, x, ys, this.outs, ls[0]!.inFeatures);
        for (let i = 0; i < ls.length; i++) ls[i]!.addBias(ys[i]!, 1);
        return;
      }
    }
    for (let i = 0; i < ls.length; i++) ls[i]!.forward(x, T, ys[i]!);
  }
}
