// The training loss at one position (docs/methods.md#fine-tuning) with target y, student logits z and (optionally) teacher
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
 * logits on the same positions, or null (then α must be 0). One exp per vocabulary entry for
 * the student and one for the teacher (the cost of this function is those exps).
 */
export function lossAndGrad(
  logits: Vec, T: number, V: number, targets: Int32Array,
  teacher: Float32Array | null, alpha: number, scale: number, sums: LossSums,
): void {
  if (alpha !== 0 && !teacher) throw new Error('a distillation weight needs teacher logits');
  if (teacher && (scratch === null || scratch.length < V)) scratch = new Float64Array(V);
  const pt = scratch;
  for (let t = 0; t < T; t++) {
    const o = t * V, y = targets[t]!;
    if (y < 0) {
      logits.fill(0, o, o + V);
      continue;
    }
    if (y >= V) throw new Error(`target id ${y} outside the vocabulary [0, ${V})`);
    // Teacher: p_t into scratch, and its log-normaliser.
    let tlse = 0;
    if (teacher) {
      let tm = -Infinity;
      for (let v = 0; v < V; v++) { const x = teacher[o + v]!; if (x > tm) tm = x; }
      let tz = 0;
      for (let v = 0; v < V; v++) { const e = Math.exp(teacher[o + v]! - tm); pt![v] = e; tz += e; }
      const inv = 1 / tz;
      for (let v = 0; v < V; v++) pt![v]! *= inv;
      tlse = tm + Math.log(tz);
    }
    // Student: exp(z − max) replaces z; KL's Σ p_t·z and Σ p_t·log p_t are taken on the way.
    let mx = -Infinity;
    for (let v = 0; v < V; v++) { const x = logits[o + v]!; if (x > mx) mx = x; }
    const zy = logits[o + y]!;
    let z = 0, ptz = 0, ptlt = 0, ptSum = 0;
    if (teacher) {
      for (let v = 0; v < V; v++) {
        const x = logits[o + v]!, p = pt![v]!;
        ptz += p * x;
        ptlt += p * (teacher[o + v]! - tlse);
        ptSum += p;
        const e = Math.exp(x - mx);
        logits[o + v] = e;
        z += e;
      }
    } else {
      for (let v = 0; v < V; v++) { const e = Math.exp(logits[o + v]! - mx); logits[o + v] = e; z += e; }
    }
    const lse = mx + Math.log(z);
    sums.ce += lse - zy;
    sums.count++;
    const inv = scale / z;
    if (teacher) {
      // KL = Σ p_t·log p_t − Σ p_t·(z − lse).
      sums.kl += ptlt - (ptz - lse * ptSum);
      const a = scale * alpha;
      for (let v = 0; v < V; v++) logits[o + v] = logits[o + v]! * inv - a * pt![v]!;
    } else {
      for (let v = 0; v < V; v++) logits[o + v]! *= inv;
    }
    logits[o + y]! -= scale * (1 - alpha);
  }
}

/** p_t of one row (grown to the largest vocabulary seen). */
let scratch: Float64Array | null = null;
