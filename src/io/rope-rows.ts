// The one RoPE row permutation. A projection whose rows feed RoPE pairs them either rotate-half
// (HF Llama: element i with i + d/2) or adjacent (llama2.c, llama.cpp's llama arch, DeepSeek:
// 2i with 2i+1). Reordering the rows of W_q/W_k inside each head from one pairing to the other
// makes the other RoPE compute the same scores (docs/methods.md#rope-layouts).

/**
 * new[j] = old[perm[j]] turns a rotate-half block of `dim` rows into an interleaved one:
 * new row 2i ← old row i, new row 2i+1 ← old row i + dim/2.
 */
export function halfToInterleavedPerm(dim: number): Int32Array {
  const h = dim / 2;
  const perm = new Int32Array(dim);
  for (let i = 0; i < h; i++) { perm[2 * i] = i; perm[2 * i + 1] = i + h; }
  return perm;
}

export interface RopeRowBlocks {
  /** Number of blocks (heads). */
  blocks: number;
  /** Rows per block (default `dim`: the whole head is rotated). */
  stride?: number;
  /** First rotated row inside a block (default 0; d_nope for MLA's [nope | rope] query heads). */
  offset?: number;
  /** Rotated rows per block (even). */
  dim: number;
}

/**
 * A copy of the [rows × cols] matrix `data` (rows = blocks·stride; cols derived) with the `dim`
 * rotated rows of every block reordered to the `to` pairing. Works on raw bits of any dtype.
 */
export function permuteRopeRows<T extends Float32Array | Uint16Array | Float64Array | Uint8Array>(data: T, b: RopeRowBlocks, to: 'interleaved' | 'half'): T {
  const stride = b.stride ?? b.dim, offset = b.offset ?? 0, rows = b.blocks * stride;
  if (b.dim % 2 !== 0 || offset + b.dim > stride || rows === 0 || data.length % rows !== 0) {
    throw new RangeError(`cannot permute ${data.length} values as ${b.blocks} blocks of ${stride} rows with ${b.dim} RoPE rows at ${offset}`);
  }
  const cols = data.length / rows;
  const perm = halfToInterleavedPerm(b.dim);
  const out = data.slice() as T;
  for (let h = 0; h < b.blocks; h++) {
    const base = h * stride + offset;
    for (let j = 0; j < b.dim; j++) {
      // to interleaved: new row j ← old row perm[j]; to half: new row perm[j] ← old row j.
      const [dst, src] = to === 'interleaved' ? [base + j, base + perm[j]!] : [base + perm[j]!, base + j];
      out.set(data.subarray(src * cols, (src + 1) * cols), dst * cols);
    }
  }
  return out;
}
