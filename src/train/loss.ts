// The training loss at one position with target y, student logits z and (optionally) teacher
// logits z_t:
//   L = (1 − α)·CE + α·KL,   CE = −log p_s(y),   KL(p_t ‖ p_s) = Σ_v p_t(v)·(log p_t(v) − log p_s(v))
//   ∂L/∂z = p_s − (1 − α)·onehot(y) − α·p_t
// (temperature 1: the teacher's own next-token distribution). Positions without a target
// (document ends, padding) contribute nothing and get zero gradient.
import type { Vec } from './backend.js';

export interface LossSums {
  /** Σ CE over the positions scored (nats). */
  ce: number;
  /** Σ KL to the teacher over the same positions (0 without a teacher). */
  kl: number;
  /** Positions scored. */
  count: number;
}

export function emptySums(): LossSums {
  return { ce: 0, kl: 0, count: 0 };
}

/**
 * logits [T×V] are replaced by scale·∂L/∂logits; sums accumulate CE and KL. teacher: [T×V]
 * logits on the same positions, or null (then α must be 0).
 */
export function lossAndGrad(
  logits: Vec, T: number, V: number, targets: Int32Array,
  teacher: Float32Array | null, alpha: number, scale: number, sums: LossSums,
): void {
  if (alpha !== 0 && !teacher) throw new Error('a distillation weight needs teacher logits');
  for (let t = 0; t < T; t++) {
    const o = t * V, y = targets[t]!;
    if (y < 0) {
      logits.fill(0, o, o + V);
      continue;
    }
    if (y >= V) throw new Error(`target id ${y} outside the vocabulary [0, ${V})`);
    let mx = -Infinity;
    for (let v = 0; v < V; v++) mx = Math.max(mx, logits[o + v]!);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(logits[o + v]! - mx);
    const lse = mx + Math.log(z);
    sums.ce += lse - logits[o + y]!;
    sums.count++;
    if (!teacher) {
      for (let v = 0; v < V; v++) logits[o + v] = scale * Math.exp(logits[o + v]! - lse);
      logits[o + y]! -= scale;
      continue;
    }
    let tm = -Infinity;
    for (let v = 0; v < V; v++) tm = Math.max(tm, teacher[o + v]!);
    let tz = 0;
    for (let v = 0; v < V; v++) tz += Math.exp(teacher[o + v]! - tm);
    const tlse = tm + Math.log(tz);
    let kl = 0;
    for (let v = 0; v < V; v++) {
      const ls = logits[o + v]! - lse, lt = teacher[o + v]! - tlse;
      const pt = Math.exp(lt);
      kl += pt * (lt - ls);
      logits[o + v] = scale * (Math.exp(ls) - alpha * pt);
    }
    logits[o + y]! -= scale * (1 - alpha);
    sums.kl += kl;
  }
}
