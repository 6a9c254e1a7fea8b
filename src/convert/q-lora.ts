// Stage 5 (optional) — query low rank (docs/methods.md#q-lora): PCA of the
// source query outputs W_Q·[x;1] (H·d features, uncentered, bias included as TransMLA's hooks
// capture it). q_a = R_qᵀ·W_Q and q_b = R_q per head, with q_b's RoPE rows absorbing the key
// up-projection exactly as q_proj's do; assembleMla builds both. No q_a_layernorm is added:
// an RMSNorm cannot be an identity, and this variant is the exact one.
import { pca } from '../linalg/pca.js';
import { PCA_DAMP, type LatentLayer, type QueryBasis } from './latent-layer.js';

/** qCov: [(H·d)²] uncentered covariance of L's query outputs. */
export function queryBasis(L: LatentLayer, qCov: Float64Array, rank: number): QueryBasis {
  const n = L.nHeads * L.headDim;
  if (!Number.isInteger(rank) || rank < 1 || rank > Math.min(n, L.hidden)) {
    throw new Error(`q_lora_rank must be an integer in [1, min(H·d, hidden) = ${Math.min(n, L.hidden)}], got ${rank}`);
  }
  if (qCov.length !== n * n) throw new Error(`query covariance has ${qCov.length} values, expected ${n}²`);
  return { R: pca(qCov, n, { damp: PCA_DAMP, k: rank }).components, rank };
}
