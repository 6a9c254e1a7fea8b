// The arithmetic the trainer's layers are written against: one array type (Vec) and the three
// GEMM shapes backward needs. Two backends share every line of layer code:
// - 'f32': training. NN, NT and TN all go to the kernels (native addon when built; the TN
//   kernel packs Aᵀ directly, ~1.7× faster than transposing into scratch and running NN);
// - 'f64': gradient checks. Plain loops in float64, so finite differences are exact to ~1e-9.
// Every GEMM adds 2·M·N·K to `flops`, which is how achieved GFLOP/s is measured.
import { kernels } from '../kernels/index.js';

export type Vec = Float32Array | Float64Array;
export type Precision = 'f32' | 'f64';

export interface TrainBackend {
  readonly precision: Precision;
  /** Floating-point operations executed by the GEMMs below since creation (2 per multiply-add). */
  flops: number;
  alloc(n: number): Vec;
  /** C[M×N] (+)= A[M×K] · B[K×N]. */
  nn(A: Vec, B: Vec, C: Vec, M: number, N: number, K: number, accumulate: boolean): void;
  /** C[M×N] (+)= A[M×K] · B[N×K]ᵀ. */
  nt(A: Vec, B: Vec, C: Vec, M: number, N: number, K: number, accumulate: boolean): void;
  /** C[M×N] (+)= A[K×M]ᵀ · B[K×N]  (weight gradients: dW = dYᵀ·X). */
  tn(A: Vec, B: Vec, C: Vec, M: number, N: number, K: number, accumulate: boolean): void;
}

class F32Backend implements TrainBackend {
  readonly precision = 'f32' as const;
  flops = 0;
  alloc(n: number): Vec {
    return new Float32Array(n);
  }

  nn(A: Vec, B: Vec, C: Vec, M: number, N: number, K: number, accumulate: boolean): void {
    this.flops += 2 * M * N * K;
    kernels().matmul(A as Float32Array, B as Float32Array, 'f32', C as Float32Array, M, N, K, false, accumulate);
  }

  nt(A: Vec, B: Vec, C: Vec, M: number, N: number, K: number, accumulate: boolean): void {
    this.flops += 2 * M * N * K;
    kernels().matmul(A as Float32Array, B as Float32Array, 'f32', C as Float32Array, M, N, K, true, accumulate);
  }

  tn(A: Vec, B: Vec, C: Vec, M: number, N: number, K: number, accumulate: boolean): void {
    this.flops += 2 * M * N * K;
    kernels().matmulTN(A as Float32Array, B as Float32Array, C as Float32Array, M, N, K, accumulate);
  }
}

class F64Backend implements TrainBackend {
  readonly precision = 'f64' as const;
  flops = 0;

  alloc(n: number): Vec {
    return new Float64Array(n);
  }

  nn(A: Vec, B: Vec, C: Vec, M: number, N: number, K: number, accumulate: boolean): void {
    this.flops += 2 * M * N * K;
    if (!accumulate) C.fill(0, 0, M * N);
    for (let i = 0; i < M; i++) {
      for (let k = 0; k < K; k++) {
        const a = A[i * K + k]!;
        if (a === 0) continue;
        for (let j = 0; j < N; j++) C[i * N + j]! += a * B[k * N + j]!;
      }
    }
  }

  nt(A: Vec, B: Vec, C: Vec, M: number, N: number, K: number, accumulate: boolean): void {
    this.flops += 2 * M * N * K;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += A[i * K + k]! * B[j * K + k]!;
        C[i * N + j] = accumulate ? C[i * N + j]! + s : s;
      }
    }
  }

  tn(A: Vec, B: Vec, C: Vec, M: number, N: number, K: number, accumulate: boolean): void {
    this.flops += 2 * M * N * K;
    if (!accumulate) C.fill(0, 0, M * N);
    for (let k = 0; k < K; k++) {
      for (let i = 0; i < M; i++) {
        const a = A[k * M + i]!;
        if (a === 0) continue;
        for (let j = 0; j < N; j++) C[i * N + j]! += a * B[k * N + j]!;
      }
    }
  }
}

export function createBackend(precision: Precision): TrainBackend {
  return precision === 'f32' ? new F32Backend() : new F64Backend();
}
