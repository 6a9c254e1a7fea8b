// RoPE on [T, heads, stride] activations with a position per token (positions restart at 0
// in every packed document). A rotation's gradient is the opposite rotation, so backward is
// the same routine with sin negated. Layouts as in the engine (models/rope.ts): 'half' pairs
// i with i + dim/2, 'interleaved' pairs 2i with 2i + 1; `offset` locates the rotated slice
// inside each head (d_nope for MLA's [nope | rope] queries, r for its [c | k_pe] rows);
// `heads` limits the rotation to heads [h0, h1) (MHA2MLA rotates each KV group at its own
// frequencies).
import type { RopeLayout, RopeTable } from '../../models/rope.js';
import type { Vec } from '../backend.js';

export function ropeRotate(
  x: Vec, T: number, nHeads: number, stride: number, offset: number,
  positions: Int32Array, table: RopeTable, layout: RopeLayout, inverse: boolean,
  heads: readonly [number, number] = [0, nHeads],
): void {
  const h = table.half;
  if (offset + 2 * h > stride) throw new Error(`RoPE slice ${offset}+${2 * h} exceeds head width ${stride}`);
  let maxPos = 0;
  for (let t = 0; t < T; t++) maxPos = Math.max(maxPos, positions[t]!);
  table.ensure(maxPos + 1);
  const { cos, sin } = table;
  const sgn = inverse ? -1 : 1;
  const i1 = layout === 'half' ? h : 1;
  const step = layout === 'half' ? 1 : 2;
  for (let t = 0; t < T; t++) {
    const c0 = positions[t]! * h;
    for (let hd = heads[0]; hd < heads[1]; hd++) {
      const base = (t * nHeads + hd) * stride + offset;
      for (let i = 0; i < h; i++) {
        const c = cos[c0 + i]!, s = sgn * sin[c0 + i]!;
        const ia = base + i * step, ib = ia + i1;
        const a = x[ia]!, b = x[ib]!;
        x[ia] = a * c - b * s;
        x[ib] = b * c + a * s;
      }
    }
  }
}
