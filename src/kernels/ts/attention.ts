// Causal softmax attention over a KV cache, in float64 per score, one query head at a time.
// An f16/bf16 cache is widened element by element through the 65536-entry tables.
import type { AttentionArgs } from '../types.js';
import { BF16_TO_F32, F16_TO_F32 } from './half.js';

export function attention(a: AttentionArgs): void {
  const { q, tq, nHeads, nKvHeads, headDimK: dk, headDimV: dv, k, kTokenStride: ks, v, vTokenStride: vs, pos0, scale, out } = a;
  const kvDType = a.kvDType ?? 'f32';
  if (kvDType !== 'f32' && kvDType !== 'f16' && kvDType !== 'bf16') throw new Error(`attention: kvDType must be 'f32', 'f16' or 'bf16', got ${String(kvDType)}`);
  const want = kvDType === 'f32' ? Float32Array : Uint16Array;
  if (!(k instanceof want) || !(v instanceof want)) throw new Error(`attention: a ${kvDType} cache needs k and v as ${want.name}`);
  // Widening table for a half cache (null: read the f32 values directly).
  const wt = kvDType === 'f16' ? F16_TO_F32 : kvDType === 'bf16' ? BF16_TO_F32 : null;
  for (const [name, x] of Object.entries({ tq, nHeads, nKvHeads, headDimK: dk, headDimV: dv, kTokenStride: ks, vTokenStride: vs, pos0 })) {
    if (!Number.isInteger(x) || x < 0) throw new Error(`attention: ${name} must be a non-negative integer, got ${x}`);
  }
  if (nKvHeads === 0 || nHeads % nKvHeads !== 0) throw new Error(`attention: nHeads (${nHeads}) must be a positive multiple of nKvHeads (${nKvHeads})`);
  if (tq === 0 || nHeads === 0) return;
  const nKeys = pos0 + tq;
  if (q.length < tq * nHeads * dk) throw new Error(`attention: q holds ${q.length} values, needs tq*nHeads*headDimK = ${tq * nHeads * dk}`);
  if (out.length < tq * nHeads * dv) throw new Error(`attention: out holds ${out.length} values, needs tq*nHeads*headDimV = ${tq * nHeads * dv}`);
  const kNeed = (nKeys - 1) * ks + nKvHeads * dk;
  const vNeed = (nKeys - 1) * vs + nKvHeads * dv;
  if (k.length < kNeed) throw new Error(`attention: k holds ${k.length} values, needs ${kNeed} for ${nKeys} keys`);
  if (v.length < vNeed) throw new Error(`attention: v holds ${v.length} values, needs ${vNeed} for ${nKeys} keys`);

  const group = nHeads / nKvHeads;
  const p = new Float64Array(nKeys);
  const acc = new Float64Array(dv);
  for (let i = 0; i < tq; i++) {
    const last = pos0 + i; // query i sees keys 0..last
    for (let h = 0; h < nHeads; h++) {
      const g = Math.floor(h / group);
      const qo = (i * nHeads + h) * dk;
      let max = -Infinity;
      for (let t = 0; t <= last; t++) {
        const ko = t * ks + g * dk;
        let s = 0;
        if (wt) for (let j = 0; j < dk; j++) s += q[qo + j] * wt[k[ko + j]];
        else for (let j = 0; j < dk; j++) s += q[qo + j] * k[ko + j];
        s *= scale;
        p[t] = s;
        if (s > max) max = s;
      }
      // Subtracting the max keeps exp() in range; the largest weight is exactly 1.
      let sum = 0;
      for (let t = 0; t <= last; t++) {
        const w = Math.exp(p[t] - max);
        p[t] = w;
        sum += w;
      }
      acc.fill(0);
      for (let t = 0; t <= last; t++) {
        const w = p[t];
        const vo = t * vs + g * dv;
        if (wt) for (let j = 0; j < dv; j++) acc[j] += w * wt[v[vo + j]];
        else for (let j = 0; j < dv; j++) acc[j] += w * v[vo + j];
      }
      const oo = (i * nHeads + h) * dv;
      const inv = 1 / sum;
      for (let j = 0; j < dv; j++) out[oo + j] = acc[j] * inv;
    }
  }
}
