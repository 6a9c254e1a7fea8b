// A model folder as a llama.cpp GGUF, whatever its family: the family says whether it has a
// llama.cpp form (Family.ggufExport); the writer of that form is picked here.
import { join } from 'node:path';
import { readConfigJson } from '../arch/args.js';
import { familyOf, readConfig } from '../arch/registry.js';
import { openCheckpoint } from '../io/checkpoint.js';
import type { WeightDType } from '../kernels/types.js';
import { exportDeepseek2Gguf } from './gguf-deepseek2.js';
import { exportLlamaGguf } from './gguf-llama.js';
import { exportMixtralGguf } from './gguf-mixtral.js';
import type { MixtralArgs } from '../arch/mixtral.js';

/** Why `path` (a folder, .gguf or .bin) cannot become a GGUF, or null when it can. */
export function ggufExportUnsupported(path: string): string | null {
  if (path.endsWith('.gguf')) return null;
  if (path.endsWith('.bin')) return 'llama2.c checkpoints are not exported to GGUF here (import it to a Hugging Face folder first)';
  try {
    const { family } = familyOf(readConfigJson(path), join(path, 'config.json'));
    const s = typeof family.ggufExport === 'function' ? family.ggufExport(readConfig(path)) : family.ggufExport;
    return s === true ? null : s;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Writes the folder `path` as a GGUF at `out` (matrices at `outType`, default the checkpoint's dtype). */
export function exportFolderGguf(path: string, out: string, outType?: WeightDType): void {
  const why = ggufExportUnsupported(path);
  if (why) throw new Error(why);
  const args = readConfig(path);
  if (args.family === 'deepseek') {
    exportDeepseek2Gguf(out, path, { outType });
    return;
  }
  const ck = openCheckpoint(path);
  try {
    if (args.family === 'mixtral') exportMixtralGguf(out, args as MixtralArgs, ck, path, { outType });
    else exportLlamaGguf(out, args, ck, path, { outType });
  } finally {
    ck.close();
  }
}
