// Next-token choice: greedy at temperature 0, otherwise softmax(logits / T) restricted to the
// smallest set of most likely tokens whose mass reaches top-p (nucleus), drawn with a seeded RNG.

/** xoshiro128** seeded through splitmix32: small, fast, and the same stream on every platform. */
export class Rng {
  private s0: number; private s1: number; private s2: number; private s3: number;

  constructor(seed: number) {
    let x = seed >>> 0;
    const split = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = split(); this.s1 = split(); this.s2 = split(); this.s3 = split();
  }

  /** Uniform 32-bit unsigned integer. */
  nextU32(): number {
    const r = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 ^= this.s0; this.s3 ^= this.s1; this.s1 ^= this.s2; this.s0 ^= this.s3;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    this.s0 >>>= 0; this.s1 >>>= 0;
    return r;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextU32() / 4294967296;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export interface SampleOptions {
  /** 0 → greedy (argmax). */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 keeps the whole distribution. */
  topP: number;
}

export function argmax(x: Float32Array): number {
  let best = 0, bv = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i]! > bv) { bv = x[i]!; best = i; }
  return best;
}

export function sampleToken(logits: Float32Array, opts: SampleOptions, rng: Rng): number {
  const { temperature, topP } = opts;
  if (!(temperature >= 0)) throw new Error(`temperature must be ≥ 0, got ${temperature}`);
  if (!(topP > 0 && topP <= 1)) throw new Error(`top-p must be in (0, 1], got ${topP}`);
  if (temperature === 0) return argmax(logits);
  const n = logits.length;
  const max = logits[argmax(logits)]!;
  const p = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) { const e = Math.exp((logits[i]! - max) / temperature); p[i] = e; sum += e; }
  const r = rng.next();
  if (topP >= 1) {
    let acc = 0;
    const target = r * sum;
    for (let i = 0; i < n; i++) { acc += p[i]!; if (acc > target) return i; }
    return n - 1;
  }
  // Tokens with probability below (1 − topP)/(n − 1) can never be inside the nucleus (the
  // rest would already exceed topP), so only the survivors need sorting.
  const cutoff = ((1 - topP) / (n - 1)) * sum;
  const cand: number[] = [];
  for (let i = 0; i < n; i++) if (p[i]! >= cutoff) cand.push(i);
  cand.sort((a, b) => p[b]! - p[a]! || a - b);
  let mass = 0, last = cand.length - 1;
  for (let j = 0; j < cand.length; j++) {
    mass += p[cand[j]!]!;
    if (mass >= topP * sum) { last = j; break; }
  }
  const target = r * mass;
  let acc = 0;
  for (let j = 0; j <= last; j++) { acc += p[cand[j]!]!; if (acc > target) return cand[j]!; }
  return cand[last]!;
}
