// Token embedding: x[t] = E[token[t]];  backward: dE[token[t]] += dx[t] (only when E is trained).
import type { Vec } from '../backend.js';
import type { Param } from '../params.js';

export class EmbeddingLayer {
  readonly vocab: number;
  readonly dim: number;

  constructor(readonly e: Param) {
    if (e.shape.length !== 2) throw new Error(`${e.name}: an embedding table must be 2-D`);
    this.vocab = e.shape[0]!;
    this.dim = e.shape[1]!;
  }

  forward(tokens: Int32Array, T: number, x: Vec): void {
    const D = this.dim, E = this.e.data;
    for (let t = 0; t < T; t++) {
      const id = tokens[t]!;
      if (!(id >= 0 && id < this.vocab)) throw new Error(`token id ${id} outside the vocabulary [0, ${this.vocab})`);
      x.set(E.subarray(id * D, (id + 1) * D), t * D);
    }
  }

  backward(tokens: Int32Array, T: number, dx: Vec): void {
    const g = this.e.grad;
    if (!g) return;
    const D = this.dim;
    for (let t = 0; t < T; t++) {
      const o = tokens[t]! * D;
      for (let i = 0; i < D; i++) g[o + i]! += dx[t * D + i]!;
    }
  }
}
