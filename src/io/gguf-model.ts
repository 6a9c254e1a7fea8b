// A model's tensors in a GGUF file, under both names: reading llama.cpp tensors back as Hugging
// Face tensors, and writing HF tensors as llama.cpp ones. Which tensors a model has is its
// family's knowledge (arch/<family>.ts lists them as GgufTensorSpec); this file only moves them.
import type { FloatData, FloatDType } from '../kernels/types.js';
import { kernels } from '../kernels/index.js';
import { numel, type Tensor, type WeightSource } from '../tensor.js';
import { GgufError, type GgufFile, type GgufTensorInput } from './gguf.js';
import { permuteRopeRows } from './rope-rows.js';

/** One tensor of a GGUF model under both names. */
export interface GgufTensorSpec {
  gguf: string;
  hf: string;
  /** Row-major shape (HF convention). */
  shape: number[];
  /** Rows to permute between rotate-half (HF) and adjacent-pair (GGUF) order, per head. */
  rope?: { heads: number; headDim: number };
  /**
   * Reading only: the HF tensor is assembled from several GGUF tensors of one float type (e.g.
   * deepseek2's attn_k_b + attn_v_b → kv_b_proj); `gguf` is then the first part's name.
   * `join` moves elements only (it works on the stored bits of any float type).
   */
  parts?: { gguf: string; shape: number[] }[];
  join?: (parts: FloatData[]) => FloatData;
  /**
   * The GGUF tensor stacks `count` HF tensors of `shape` along a new leading dimension and this
   * one is entry `index` (llama.cpp's expert tensors, [n_expert, …]). The specs of one stacked
   * tensor come together, in index order.
   */
  stack?: { index: number; count: number };
}

/** The shape of the GGUF tensor a spec lives in. */
function ggufShape(s: GgufTensorSpec): number[] {
  return s.stack ? [s.stack.count, ...s.shape] : s.shape;
}

/** llama.cpp general.file_type for all-F32 / mostly-F16 / mostly-BF16 files. */
export const GGUF_FILE_TYPE: Record<FloatDType, number> = { f32: 0, f16: 1, bf16: 32 };

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The shortest decimal that rounds to the same f32 (so 1e-5 stored as f32 reads back as 1e-5). */
export function f32Decimal(x: number): number {
  for (let p = 1; p <= 9; p++) {
    const y = Number(x.toPrecision(p));
    if (Math.fround(y) === x) return y;
  }
  return x;
}

export function convertDType(t: Tensor, to: FloatDType): Tensor {
  if (t.dtype === to) return t;
  const f32 = t.dtype === 'f32' ? (t.data as Float32Array) : (() => {
    const o = new Float32Array(t.data.length);
    kernels().toF32(t.data as Uint16Array, t.dtype as 'f16' | 'bf16', o);
    return o;
  })();
  if (to === 'f32') return { dtype: 'f32', shape: t.shape, data: f32 };
  const bits = new Uint16Array(f32.length);
  kernels().fromF32(f32, to, bits);
  return { dtype: to, shape: t.shape, data: bits };
}

/**
 * The tensors of `specs` in GGUF file `f` as a lazy WeightSource with Hugging Face names (q/k
 * rows back in rotate-half order). Every spec must be present with its shape and a float type,
 * and the file must hold nothing else (`extra` names tensors it may also hold).
 */
export function ggufWeights(f: GgufFile, specs: readonly GgufTensorSpec[], path: string, arch: string, extra: readonly string[] = []): WeightSource {
  const fail = (msg: string): never => { throw new GgufError(`${path}: ${msg}`); };
  const byHf = new Map<string, GgufTensorSpec>();
  const known = new Set<string>(extra);
  const check = (gguf: string, shape: readonly number[]): void => {
    if (!f.has(gguf)) fail(`missing tensor ${gguf}`);
    const info = f.tensorInfo(gguf);
    if (!sameShape(info.shape, shape)) fail(`tensor ${gguf} has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}]`);
    if (f.floatDType(gguf) === null) fail(`tensor ${gguf} has type ${info.typeName}; only F32, F16 and BF16 GGUF models can be run`);
    known.add(gguf);
  };
  for (const s of specs) {
    if (s.parts) {
      for (const part of s.parts) check(part.gguf, part.shape);
      const types = new Set(s.parts.map((part) => f.floatDType(part.gguf)));
      if (types.size > 1) fail(`tensors ${s.parts.map((part) => part.gguf).join(' and ')} have different types; they form one tensor (${s.hf})`);
    } else {
      check(s.gguf, ggufShape(s));
    }
    byHf.set(s.hf, s);
  }
  for (const t of f.tensors) if (!known.has(t.name)) fail(`tensor ${t.name} has no place in a ${arch} model`);
  return {
    names: () => [...byHf.keys()],
    has: (name) => byHf.has(name),
    get: (name) => {
      const s = byHf.get(name);
      if (!s) fail(`no tensor "${name}" (GGUF models expose Hugging Face tensor names)`);
      if (s!.parts) {
        const ts = s!.parts.map((part) => f.readTensor(part.gguf));
        return { dtype: ts[0]!.dtype, shape: s!.shape, data: s!.join!(ts.map((t) => t.data)) };
      }
      const t = s!.stack ? f.readTensorSlab(s!.gguf, s!.stack.index) : f.readTensor(s!.gguf);
      return s!.rope ? { ...t, data: permuteRopeRows(t.data, { blocks: s!.rope.heads, dim: s!.rope.headDim }, 'half') } : t;
    },
  };
}

/**
 * GGUF tensor inputs for `specs`, read from `weights` one at a time when written: matrices at
 * `outType`, 1-D tensors (norms, biases) in F32 as llama.cpp's converter writes them. The specs
 * of a stacked tensor become one input whose entries are read and stacked when it is written.
 */
export function ggufTensorInputs(specs: readonly GgufTensorSpec[], weights: WeightSource, outType: FloatDType, where: string): GgufTensorInput[] {
  for (const s of specs) {
    if (s.parts) throw new GgufError(`${where}: ${s.hf} is read from several GGUF tensors; this writer does not split tensors`);
    if (!weights.has(s.hf)) throw new GgufError(`${where}: the checkpoint has no tensor "${s.hf}" (needed for ${s.gguf})`);
  }
  const load = (s: GgufTensorSpec, dtype: FloatDType): Tensor => {
    const t = weights.get(s.hf);
    if (!sameShape(t.shape, s.shape)) throw new GgufError(`${where}: tensor "${s.hf}" has shape [${t.shape.join(', ')}], expected [${s.shape.join(', ')}]`);
    const conv = convertDType(t, dtype);
    return s.rope ? { ...conv, data: permuteRopeRows(conv.data, { blocks: s.rope.heads, dim: s.rope.headDim }, 'interleaved') } : conv;
  };
  const inputs: GgufTensorInput[] = [];
  for (let i = 0; i < specs.length; i++) {
    const s = specs[i]!;
    const dtype: FloatDType = s.shape.length === 1 ? 'f32' : outType;
    if (!s.stack) {
      inputs.push({ name: s.gguf, dtype, shape: s.shape, load: () => load(s, dtype) });
      continue;
    }
    const group = specs.slice(i, i + s.stack.count);
    if (group.some((g, j) => g.gguf !== s.gguf || g.stack?.index !== j || g.stack.count !== s.stack!.count || !sameShape(g.shape, s.shape))) {
      throw new GgufError(`${where}: the entries of stacked tensor ${s.gguf} are not given together in index order`);
    }
    i += group.length - 1;
    inputs.push({
      name: s.gguf, dtype, shape: ggufShape(s),
      load: (): Tensor => {
        const n = numel(s.shape);
        const data = dtype === 'f32' ? new Float32Array(n * group.length) : new Uint16Array(n * group.length);
        group.forEach((g, j) => data.set(load(g, dtype).data, j * n));
        return { dtype, shape: ggufShape(s), data };
      },
    });
  }
  return inputs;
}
