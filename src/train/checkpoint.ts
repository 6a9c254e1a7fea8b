// A training checkpoint is a Hugging Face folder any loader takes, plus the trainer's state
// beside it:
//   config.json, model.safetensors (in the source dtype, the source's tensor set: a tied head the
//     source stores twice is written twice), tokenizer/generation files, and the source's
//     transmla.json (conversion report) and bench.json when it had them: unchanged from the source;
//   README.md: the source's model card with a fine-tuning section (card.ts), when it had one;
//   report.html: redrawn from transmla.json (+ bench.json);
//   trainer/optimizer.safetensors: AdamW moments `exp_avg.<name>` / `exp_avg_sq.<name>` (fp32) for the
//     trained tensors, and the fp32 master weights `master.<name>` of trained tensors stored
//     narrower than fp32 (so a resumed run starts from exactly the same numbers; frozen ones
//     widen back exactly from the model file);
//     metadata `step` = AdamW's t;
//   trainer_state.json: step, options, data fingerprint, loss/eval history.
// Written all-or-nothing through withAtomicDir, replacing the previous checkpoint in place.
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { withAtomicDir } from '../io/atomic-dir.js';
import { openCheckpoint, writeCheckpoint } from '../io/checkpoint.js';
import { writeHfFolderExtras } from '../io/hf-folder.js';
import { writeSafetensors, type NamedTensor } from '../io/safetensors.js';
import { kernels } from '../kernels/index.js';
import type { FloatDType } from '../kernels/types.js';
import type { Tensor, WeightSource } from '../tensor.js';
import type { AdamW } from './adamw.js';
import type { ParamStore } from './params.js';

/**
 * In a subfolder: vLLM and SGLang load every *.safetensors at the top of a folder without an
 * index as weights, so the optimizer's tensors must not sit beside model.safetensors.
 */
export const OPTIMIZER_FILE = 'trainer/optimizer.safetensors';
/** Where checkpoints written before the subfolder kept it (still resumed from). */
const LEGACY_OPTIMIZER_FILE = 'optimizer.safetensors';

/** The optimizer state of a checkpoint folder (the legacy top-level file if that is what it has). */
function optimizerPath(dir: string): string {
  const p = join(dir, OPTIMIZER_FILE);
  return !existsSync(p) && existsSync(join(dir, LEGACY_OPTIMIZER_FILE)) ? join(dir, LEGACY_OPTIMIZER_FILE) : p;
}
export const STATE_FILE = 'trainer_state.json';

export interface SaveOptions {
  dir: string;
  /** Folder whose config.json, tokenizer files, transmla.json and bench.json are carried over. */
  sourceDir: string;
  /** Text files to write (the model card); report.html is redrawn when the folder has a transmla.json. */
  files?: { name: string; text: string }[];
  /** Inputs the output must not be or contain (the model trained from, unless resuming in place; data files). */
  protect?: string | readonly string[];
  overwrite: boolean;
  params: ParamStore;
  optimizer: AdamW;
  state: object;
}

/** A parameter's master values as a checkpoint tensor of `dtype`. */
function asTensor(data: Float32Array, shape: readonly number[], dtype: FloatDType): Tensor {
  if (dtype === 'f32') return { dtype, shape: [...shape], data: data.slice() };
  const bits = new Uint16Array(data.length);
  kernels().fromF32(data, dtype, bits);
  return { dtype, shape: [...shape], data: bits };
}

export async function saveTrainingCheckpoint(o: SaveOptions): Promise<void> {
  const { params, optimizer } = o;
  if (params.backend.precision !== 'f32') throw new Error('checkpoints are written from fp32 master weights');
  await withAtomicDir(o.dir, { overwrite: o.overwrite, source: o.protect }, async (tmp) => {
    // The tensor set the model was loaded with: its parameters, and the stored copies of them
    // (a tied head the strict export writes as lm_head.weight: stock engines need it).
    const model = function* (): Generator<NamedTensor> {
      for (const p of params.list) yield { name: p.name, tensor: asTensor(p.data as Float32Array, p.shape, p.dtype) };
      for (const a of params.aliases) yield { name: a.name, tensor: asTensor(a.of.data as Float32Array, a.of.shape, a.dtype) };
    };
    await writeCheckpoint(tmp, model());
    copyFileSync(join(o.sourceDir, 'config.json'), join(tmp, 'config.json'));
    writeHfFolderExtras(o.sourceDir, tmp);
    // Speeds do not change with the weights' values, so the benchmark stays valid.
    for (const f of ['transmla.json', 'bench.json']) if (existsSync(join(o.sourceDir, f))) copyFileSync(join(o.sourceDir, f), join(tmp, f));
    for (const f of o.files ?? []) writeFileSync(join(tmp, f.name), f.text);
    if (existsSync(join(tmp, 'transmla.json'))) {
      const { writeReport } = await import('../report/report.js');
      await writeReport(tmp);
    }
    const opt: NamedTensor[] = [];
    for (const p of optimizer.params) {
      opt.push({ name: `exp_avg.${p.name}`, tensor: { dtype: 'f32', shape: [...p.shape], data: optimizer.m.get(p.name) as Float32Array } });
      opt.push({ name: `exp_avg_sq.${p.name}`, tensor: { dtype: 'f32', shape: [...p.shape], data: optimizer.v.get(p.name) as Float32Array } });
    }
    for (const p of params.list) if (p.dtype !== 'f32' && p.grad) opt.push({ name: `master.${p.name}`, tensor: { dtype: 'f32', shape: [...p.shape], data: p.data as Float32Array } });
    mkdirSync(join(tmp, dirname(OPTIMIZER_FILE)));
    writeSafetensors(join(tmp, OPTIMIZER_FILE), opt, { step: String(optimizer.t), format_note: 'transmla AdamW state: exp_avg/exp_avg_sq per trained tensor; master.* = fp32 weights of trained tensors stored narrower' });
    writeFileSync(join(tmp, STATE_FILE), JSON.stringify(o.state, null, 2) + '\n');
  });
}

/** The trainer state saved beside a checkpoint (parsed JSON; the caller checks its fields). */
export function readTrainerState(dir: string): Record<string, unknown> {
  const path = join(dir, STATE_FILE);
  if (!existsSync(path)) throw new Error(`${dir} has no ${STATE_FILE}: not a transmla training checkpoint`);
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${path}: not valid JSON: ${(e as Error).message}`);
  }
}

/**
 * The weights to resume from: the checkpoint's tensors, with the fp32 master copies from
 * optimizer.safetensors in place of narrowed ones when present.
 */
export function resumeWeights(dir: string): { src: WeightSource; dtypeOf(name: string): FloatDType; close(): void } {
  const optPath = optimizerPath(dir);
  if (!existsSync(optPath)) throw new Error(`${dir} has no ${OPTIMIZER_FILE}: cannot resume`);
  const model = openCheckpoint(dir);
  const opt = openCheckpoint(optPath);
  return {
    src: {
      names: () => model.names(),
      has: (n) => model.has(n),
      get: (n) => (opt.has(`master.${n}`) ? opt.get(`master.${n}`) : model.get(n)),
    },
    dtypeOf: (n) => {
      const dt = model.info(n).dtype;
      if (dt === 'F32') return 'f32';
      if (dt === 'BF16') return 'bf16';
      if (dt === 'F16') return 'f16';
      throw new Error(`${dir}: tensor "${n}" has dtype ${dt}, not a float type`);
    },
    close: () => { model.close(); opt.close(); },
  };
}

/** Loads AdamW's moments and step count from a checkpoint folder into `optimizer`. */
export function loadOptimizerState(dir: string, optimizer: AdamW): void {
  const ck = openCheckpoint(optimizerPath(dir));
  try {
    const t = Number(ck.metadata.step);
    if (!Number.isInteger(t) || t < 0) throw new Error(`${dir}/${OPTIMIZER_FILE}: metadata "step" is missing or invalid`);
    optimizer.t = t;
    for (const p of optimizer.params) {
      for (const [key, dst] of [['exp_avg', optimizer.m.get(p.name)!], ['exp_avg_sq', optimizer.v.get(p.name)!]] as const) {
        const name = `${key}.${p.name}`;
        if (!ck.has(name)) throw new Error(`${dir}/${OPTIMIZER_FILE} has no "${name}" (was it saved with another --train selection?)`);
        const t32 = ck.get(name);
        if (t32.dtype !== 'f32' || t32.data.length !== dst.length) throw new Error(`${dir}/${OPTIMIZER_FILE}: "${name}" does not match the parameter`);
        dst.set(t32.data as Float32Array);
      }
    }
  } finally {
    ck.close();
  }
}
