// Rotary position embedding: (layouts and scaling: docs/methods.md#rope-layouts, #rope-scaling) frequencies (with linear / llama3 scaling), a growable
// cos/sin table, and application in the two layouts in use:
//   'half'        — HF Llama "rotate half": element i pairs with i + dim/2 (GPT-NeoX style);
//   'interleaved' — adjacent pairs (2i, 2i+1): llama2.c, Meta's original code, DeepSeek MLA.
// Both rotate pair i by angle pos·invFreq[i]; they differ only in which elements form pair i.

export type RopeLayout = 'half' | 'interleaved';

/** HF rope_scaling of the kinds the engine computes (parsed in arch/args.ts). */
export type RopeScaling =
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number };

/** invFreq[i] = theta^(−2i/dim) for i < dim/2, then scaled as HF's rope_init_fn does. */
export function ropeInvFreq(dim: number, theta: number, scaling: RopeScaling | null = null): Float64Array {
  if (dim % 2 !== 0) throw new Error(`RoPE dimension must be even, got ${dim}`);
  const half = dim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(theta, (2 * i) / dim);
  if (!scaling) return inv;
  if (scaling.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i]! /= scaling.factor;
    return inv;
  }
  // llama3: long wavelengths are slowed by `factor`, short ones kept, the band between
  // interpolated smoothly in 1/wavelength (transformers' _compute_llama3_parameters).
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: oldCtx } = scaling;
  const lowFreqWavelen = oldCtx / lowFreqFactor;
  const highFreqWavelen = oldCtx / highFreqFactor;
  for (let i = 0; i < half; i++) {
    const f = inv[i]!;
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) continue;
    if (wavelen > lowFreqWavelen) { inv[i] = f / factor; continue; }
    const smooth = (oldCtx / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
    inv[i] = (1 - smooth) * (f / factor) + smooth * f;
  }
  return inv;
}

/** cos/sin of pos·invFreq[i], computed in float64 and stored f32, grown on demand. */
export class RopeTable {
  readonly dim: number;
  readonly half: number;
  private readonly invFreq: Float64Array;
  /** Multiplies every cos/sin (YaRN's attention factor; 1 otherwise). */
  readonly amplitude: number;
  private positions = 0;
  cos = new Float32Array(0);
  sin = new Float32Array(0);

  constructor(invFreq: Float64Array, amplitude = 1) {
    this.invFreq = invFreq;
    this.amplitude = amplitude;
    this.half = invFreq.length;
    this.dim = 2 * this.half;
  }

  static create(dim: number, theta: number, scaling: RopeScaling | null = null): RopeTable {
    return new RopeTable(ropeInvFreq(dim, theta, scaling));
  }

  /** Makes rows 0..n−1 available. Doubles capacity so decode does not recompute per token. */
  ensure(n: number): void {
    if (n <= this.positions) return;
    const cap = Math.max(n, 2 * this.positions, 256);
    const h = this.half;
    const cos = new Float32Array(cap * h);
    const sin = new Float32Array(cap * h);
    cos.set(this.cos);
    sin.set(this.sin);
    for (let p = this.positions; p < cap; p++) {
      for (let i = 0; i < h; i++) {
        const a = p * this.invFreq[i]!;
        cos[p * h + i] = this.amplitude * Math.cos(a);
        sin[p * h + i] = this.amplitude * Math.sin(a);
      }
    }
    this.cos = cos;
    this.sin = sin;
    this.positions = cap;
  }
}

/**
 * Rotates, in place, `table.dim` elements of every head of T tokens at positions pos0..pos0+T−1.
 * x is [T, nHeads, headStride]; the rotated slice of a head starts at `offset` within it
 * (0 for a plain head; d_nope for MLA's [nope | rope] query heads).
 */
export function applyRope(
  x: Float32Array, T: number, nHeads: number, headStride: number,
  table: RopeTable, pos0: number, layout: RopeLayout, offset = 0,
): void {
  const h = table.half;
  if (offset + 2 * h > headStride) throw new Error(`RoPE slice ${offset}+${2 * h} exceeds head width ${headStride}`);
  table.ensure(pos0 + T);
  const { cos, sin } = table;
  const tokenStride = nHeads * headStride;
  for (let t = 0; t < T; t++) {
    const c0 = (pos0 + t) * h;
    for (let hd = 0; hd < nHeads; hd++) {
      const base = t * tokenStride + hd * headStride + offset;
      if (layout === 'half') {
        for (let i = 0; i < h; i++) {
          const c = cos[c0 + i]!, s = sin[c0 + i]!;
          const a = x[base + i]!, b = x[base + h + i]!;
          x[base + i] = a * c - b * s;
          x[base + h + i] = b * c + a * s;
        }
      } else {
        for (let i = 0; i < h; i++) {
          const c = cos[c0 + i]!, s = sin[c0 + i]!;
          const a = x[base + 2 * i]!, b = x[base + 2 * i + 1]!;
          x[base + 2 * i] = a * c - b * s;
          x[base + 2 * i + 1] = b * c + a * s;
        }
      }
    }
  }
}
