// Stock-engine export targets, for `transmla export <mla-folder> --target …` and
// `transmla convert … --target …`:
//   deepseek-v3  a folder stock DeepSeek-V3 code loads (export-deepseek-v3.ts);
//   deepseek-v2  the same export for a mixture-of-experts source: the DeepSeek-V2 MoE layout;
//   gguf         a llama.cpp deepseek2 GGUF (io/gguf-deepseek2.ts), through the strict export
//                when the folder is the exact variant (llama.cpp runs stock semantics).
// Intermediate folders live beside the output and are removed afterwards.
import { rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { exportDeepseek2Gguf, type Deepseek2GgufResult } from '../export/gguf-deepseek2.js';
import { mlaSemantics } from '../arch/deepseek.js';
import { readConfig } from '../arch/registry.js';
import { exportFolderGguf, ggufExportUnsupported } from './gguf.js';
import type { WeightDType } from '../kernels/types.js';
import { convertModel, type ConversionResult, type ConvertOptions } from '../convert/transmla.js';
import type { StockExportReport } from '../schema/transmla-json.js';
import { exportDeepseekV3, type StockExportOptions } from './deepseek-v3.js';
import { OptionError } from '../option-error.js';
import { checkOutputDir, checkOutputFile } from '../io/atomic-dir.js';
import { sourceMoe } from '../arch/deepseek-moe.js';

export type ExportTarget = 'deepseek-v3' | 'deepseek-v2' | 'gguf';
export const EXPORT_TARGETS: readonly ExportTarget[] = ['deepseek-v3', 'deepseek-v2', 'gguf'];

/**
 * The stock folder's layout follows the source: DeepSeek-V3 with dense MLPs, the DeepSeek-V2 MoE
 * layout for a mixture-of-experts source (arch/deepseek-moe.ts: transformers' DeepseekV3 scores
 * experts with a sigmoid, so an MoE folder is V2). --target deepseek-v2 asks for the MoE layout.
 */
function checkStockTarget(target: ExportTarget, model: string): void {
  if (target !== 'deepseek-v2') return;
  if (!sourceMoe(readConfig(model))) throw new OptionError(`--target deepseek-v2 is the mixture-of-experts layout; ${model} has dense MLPs, whose stock folder is --target deepseek-v3`);
}

export interface ExportOptions extends StockExportOptions {
  target: ExportTarget;
  /** GGUF tensor type (default: the checkpoint's dtype). */
  outType?: WeightDType;
}

export interface ExportResult {
  target: ExportTarget;
  output: string;
  /** The strict export's report (null when a stock folder went straight to GGUF). */
  stock: StockExportReport | null;
  gguf: Deepseek2GgufResult | null;
}

function scratch(out: string, tag: string): string {
  return join(dirname(resolve(out)), `.${tag}-${process.pid}-${Date.now().toString(36)}`);
}

/**
 * An intermediate step's log without the lines naming its scratch folder or that folder's own
 * temp sibling ("saved …", "report …", report warnings): it is deleted, not a result.
 */
function scratchQuiet(log: ((line: string) => void) | undefined, tmp: string): ((line: string) => void) | undefined {
  const name = basename(tmp);
  return log && ((line) => { if (!line.includes(name)) log(line); });
}

/** Refuses a bad output for `target` before any work: a folder for deepseek-v3/v2, a file for gguf. */
export function checkExportOutput(target: ExportTarget, out: string, overwrite: boolean, inputs: readonly string[] = []): void {
  if (target === 'deepseek-v3' || target === 'deepseek-v2') checkOutputDir(out, { overwrite, source: inputs });
  else checkOutputFile(out, { overwrite, source: inputs });
}

export async function exportModel(o: ExportOptions): Promise<ExportResult> {
  if (!EXPORT_TARGETS.includes(o.target)) throw new OptionError(`--target must be one of ${EXPORT_TARGETS.join(', ')}, got "${String(o.target)}"`);
  checkStockTarget(o.target, o.model);
  if (o.target === 'deepseek-v3' || o.target === 'deepseek-v2') {
    const stock = await exportDeepseekV3(o);
    return { target: o.target, output: resolve(o.out), stock, gguf: null };
  }
  checkExportOutput(o.target, o.out, o.overwrite ?? false, [o.model]);
  if (readConfig(o.model).family !== 'deepseek' && ggufExportUnsupported(o.model) === null) {
    // A source-family folder (Llama, Qwen2/3, Mistral, Mixtral) has its own llama.cpp architecture.
    exportFolderGguf(o.model, resolve(o.out), o.outType);
    o.log?.(`wrote ${resolve(o.out)} (${o.outType ?? 'checkpoint dtype'})`);
    return { target: o.target, output: resolve(o.out), stock: null, gguf: null };
  }
  let stock: StockExportReport | null = null;
  let folder = o.model;
  const tmp = scratch(o.out, 'transmla-ds3');
  try {
    if (mlaSemantics(o.model) === 'exact') {
      stock = await exportDeepseekV3({ ...o, out: tmp, log: scratchQuiet(o.log, tmp) });
      folder = tmp;
    }
    // Named after the folder exported, not the scratch folder between.
    const gguf = exportDeepseek2Gguf(resolve(o.out), folder, { outType: o.outType, name: basename(resolve(o.model)) });
    o.log?.(`wrote ${resolve(o.out)} (deepseek2, ${gguf.outType}, ${gguf.tensorNames.length} tensors)`);
    return { target: o.target, output: resolve(o.out), stock, gguf };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * convert straight to `target`: the stock DeepSeek-V3 folder (the default variant, in one
 * sweep), and for gguf that folder as a deepseek2 GGUF (the folder is an intermediate).
 */
export async function convertToTarget(c: ConvertOptions & { out: string }, e: Pick<ExportOptions, 'target' | 'outType'>): Promise<{ conversion: ConversionResult; export: ExportResult }> {
  if (!EXPORT_TARGETS.includes(e.target)) throw new OptionError(`--target must be one of ${EXPORT_TARGETS.join(', ')}, got "${String(e.target)}"`);
  if (c.variant === 'exact') throw new OptionError('--target writes a stock export; --variant exact cannot be combined with it');
  checkStockTarget(e.target, c.model);
  if (e.target === 'deepseek-v3' || e.target === 'deepseek-v2') {
    const conversion = await convertModel({ ...c, variant: 'stock' });
    return { conversion, export: { target: e.target, output: resolve(c.out), stock: conversion.stockExport, gguf: null } };
  }
  checkExportOutput(e.target, c.out, c.overwrite ?? false, [c.model, c.calib]);
  const tmp = scratch(c.out, 'transmla-ds3');
  try {
    const conversion = await convertModel({ ...c, out: tmp, overwrite: false, variant: 'stock', log: scratchQuiet(c.log, tmp) });
    const gguf = exportDeepseek2Gguf(resolve(c.out), tmp, { outType: e.outType, name: basename(resolve(c.model)) });
    c.log?.(`wrote ${resolve(c.out)} (deepseek2, ${gguf.outType}, ${gguf.tensorNames.length} tensors)`);
    return { conversion, export: { target: e.target, output: resolve(c.out), stock: conversion.stockExport, gguf } };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
