// The pure-TypeScript kernels: the fallback when the native addon is missing, and the
// oracle the native kernels are tested against. Semantics are documented in ./types.ts.
import type { Kernels } from './types.js';
import { attention } from './ts/attention.js';
import { eigh } from './ts/eigh.js';
import { gramAccumulate } from './ts/gram.js';
import { fromF32, toF32 } from './ts/half.js';
import { gemv, gemvMulti, gemvSwiGlu, matmul, matmulTN, siluMul } from './ts/matmul.js';

export const tsKernels: Kernels = Object.freeze({
  backend: 'ts' as const,
  matmul,
  matmulTN,
  gemv,
  gemvMulti,
  gemvSwiGlu,
  siluMul,
  toF32,
  fromF32,
  gramAccumulate,
  eigh,
  attention,
});
