// Picks the kernel backend once per process: the native addon when it loads, else the
// TypeScript reference. TRANSMLA_REQUIRE_NATIVE=1 makes a missing addon fatal (CI uses it);
// TRANSMLA_KERNELS=ts forces the reference (useful to compare).
import { loadNativeKernels } from './native.js';
import { tsKernels } from './ts.js';
import type { Kernels } from './types.js';

export type { Kernels, FloatData, FloatDType, HalfDType, QuantDType, WeightData, WeightDType, EighResult, AttentionArgs } from './types.js';
export { tsKernels } from './ts.js';
export { loadNativeKernels } from './native.js';

let chosen: Kernels | undefined;

export function kernels(): Kernels {
  if (chosen) return chosen;
  if (process.env.TRANSMLA_KERNELS === 'ts') {
    if (process.env.TRANSMLA_REQUIRE_NATIVE === '1') throw new Error('TRANSMLA_KERNELS=ts contradicts TRANSMLA_REQUIRE_NATIVE=1');
    return (chosen = tsKernels);
  }
  const native = loadNativeKernels();
  if (native.kernels) return (chosen = native.kernels);
  if (process.env.TRANSMLA_REQUIRE_NATIVE === '1') {
    throw new Error(`TRANSMLA_REQUIRE_NATIVE=1 but the native addon did not load: ${native.error}. Run \`npm ci\` (or \`npm run build\`) and read the build output.`);
  }
  if (!warned) {
    warned = true;
    process.stderr.write(`transmla: native addon unavailable (${native.error}); using the TypeScript kernels (slow).\n`);
  }
  return (chosen = tsKernels);
}
let warned = false;
