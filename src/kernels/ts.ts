// The pure-TypeScript kernels: the fallback when the native addon is missing, and the
// oracle the native kernels are tested against. Semantics are documented in ./types.ts.
import type { Kernels } from './types.js';
import { attention } from './ts/attention.js';
import { eigh } from './ts/eigh.js';
import { dgemm, dgemmSeq, fidelityRows } from './ts/f64.js';
import { gramAccumulate } from './ts/gram.js';
import { fromF32 as halfFromF32, toF32 as halfToF32 } from './ts/half.js';
import { addInPlace, gemv, gemvMulti, gemvSwiGlu, matmul, matmulTN, rmsNorm, siluMul } from './ts/matmul.js';
import { dequantizeQ4_0, dequantizeQ8_0, quantizeQ4_0, quantizeQ8_0 } from './ts/quant.js';

const toF32: Kernels['toF32'] = (src, type, dst) => {
  if (type === 'q8_0' || type === 'q4_0') {
    if (!(src instanceof Uint8Array)) throw new Error(`toF32: ${type} blocks must be a Uint8Array`);
    if (type === 'q8_0') dequantizeQ8_0(src, dst);
    else dequantizeQ4_0(src, dst);
    return;
  }
  if (!(src instanceof Uint16Array)) throw new Error(`toF32: ${String(type)} bits must be a Uint16Array`);
  halfToF32(src, type, dst);
};

const fromF32: Kernels['fromF32'] = (src, type, dst) => {
  if (type === 'q8_0' || type === 'q4_0') {
    if (!(dst instanceof Uint8Array)) throw new Error(`fromF32: ${type} blocks must be written to a Uint8Array`);
    if (type === 'q8_0') quantizeQ8_0(src, dst);
    else quantizeQ4_0(src, dst);
    return;
  }
  if (!(dst instanceof Uint16Array)) throw new Error(`fromF32: ${String(type)} bits must be written to a Uint16Array`);
  halfFromF32(src, type, dst);
};

export const tsKernels: Kernels = Object.freeze({
  backend: 'ts' as const,
  matmul,
  matmulTN,
  gemv,
  gemvMulti,
  gemvSwiGlu,
  siluMul,
  rmsNorm,
  addInPlace,
  toF32,
  fromF32,
  gramAccumulate,
  eigh,
  attention,
  dgemm,
  dgemmSeq,
  fidelityRows,
});
