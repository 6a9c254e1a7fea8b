// GgufFile: a parsed GGUF file (metadata and tensor directory in memory, tensor data read on
// demand) and readGguf, which opens one.
import { closeSync, openSync } from 'node:fs';
import type { FloatData, FloatDType, WeightDType } from '../kernels/types.js';
import type { Tensor, WeightSource, WeightTensor } from '../tensor.js';
import { parseGguf } from './gguf-parse.js';
import {
  GGML_TYPE_TO_WEIGHT, GgufError, assertLittleEndianHost, describeType, isNumberType, readFully,
  type GgufTensorInfo, type GgufValue,
} from './gguf-types.js';
import { preview } from './preview.js';

/** A parsed GGUF file: metadata and tensor directory in memory, tensor data read on demand. */
export class GgufFile implements WeightSource {
  readonly path: string;
  readonly version: number;
  readonly fileSize: number;
  readonly alignment: number;
  /** Absolute file position of the data section. */
  readonly dataOffset: number;
  /** Metadata in file order. */
  readonly metadata: ReadonlyMap<string, GgufValue>;
  /** Tensor directory in file order. */
  readonly tensors: readonly GgufTensorInfo[];
  private readonly byName: Map<string, GgufTensorInfo>;

  /** Use readGguf(). */
  constructor(path: string, version: number, fileSize: number, alignment: number, dataOffset: number, metadata: Map<string, GgufValue>, tensors: GgufTensorInfo[]) {
    this.path = path;
    this.version = version;
    this.fileSize = fileSize;
    this.alignment = alignment;
    this.dataOffset = dataOffset;
    this.metadata = metadata;
    this.tensors = tensors;
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  private fail(msg: string): never {
    throw new GgufError(`${this.path}: ${msg}`);
  }

  get(name: string): Tensor {
    return this.readTensor(name);
  }

  names(): string[] {
    return this.tensors.map((t) => t.name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  tensorInfo(name: string): GgufTensorInfo {
    const t = this.byName.get(name);
    if (!t) this.fail(`no tensor named "${name}"`);
    return t;
  }

  /** Raw bytes of any tensor (quantized ones included), in a fresh aligned buffer. */
  readRaw(name: string): Uint8Array {
    const t = this.tensorInfo(name);
    const out = new Uint8Array(new ArrayBuffer(t.byteSize));
    const fd = openSync(this.path, 'r');
    try {
      readFully(fd, out, t.offset, this.path);
    } finally {
      closeSync(fd);
    }
    return out;
  }

  /** Raw bytes of entry `index` along the leading dimension of any tensor (one expert of a stacked, possibly quantized, tensor). */
  readRawSlab(name: string, index: number): Uint8Array {
    const t = this.tensorInfo(name);
    const n = t.shape[0]!;
    if (t.shape.length < 2 || !Number.isSafeInteger(index) || index < 0 || index >= n) this.fail(`tensor ${preview(name)} [${t.shape.join(', ')}] has no entry ${index} along its first dimension`);
    const slab = t.byteSize / n;
    const out = new Uint8Array(new ArrayBuffer(slab));
    const fd = openSync(this.path, 'r');
    try {
      readFully(fd, out, t.offset + index * slab, this.path);
    } finally {
      closeSync(fd);
    }
    return out;
  }

  /**
   * Reads an F32/F16/BF16 tensor with its row-major shape (WeightSource.get: what the loaders
   * run). Quantized types are refused by name; readWeight reads Q8_0/Q4_0 too.
   */
  readTensor(name: string): Tensor {
    const t = this.tensorInfo(name);
    const dtype = this.requireFloat(t);
    const bytes = this.readRaw(name);
    const data: FloatData = dtype === 'f32' ? new Float32Array(bytes.buffer) : new Uint16Array(bytes.buffer);
    return { dtype, shape: [...t.shape], data };
  }

  /**
   * Entry `index` along the leading (row-major) dimension of an F32/F16/BF16 tensor, reading only
   * its bytes: one expert of llama.cpp's stacked expert tensors [n_expert, …].
   */
  readTensorSlab(name: string, index: number): Tensor {
    const t = this.tensorInfo(name);
    const dtype = this.requireFloat(t);
    const out = this.readRawSlab(name, index);
    const data: FloatData = dtype === 'f32' ? new Float32Array(out.buffer) : new Uint16Array(out.buffer);
    return { dtype, shape: t.shape.slice(1), data };
  }

  private requireFloat(t: GgufTensorInfo): FloatDType {
    const dtype = this.floatDType(t.name);
    if (!dtype) this.fail(`tensor ${preview(t.name)} has type ${t.typeName}; only F32, F16 and BF16 tensors can be read as floats`);
    return dtype;
  }

  /**
   * Reads a tensor the matrix kernels can take as it is stored: F32/F16/BF16 as readTensor does,
   * Q8_0/Q4_0 as their raw blocks (not widened). Other ggml types are refused by name.
   */
  readWeight(name: string): WeightTensor {
    const t = this.tensorInfo(name);
    const dtype = this.weightDType(name);
    if (!dtype) this.fail(`tensor ${preview(name)} has type ${t.typeName}; only F32, F16, BF16, Q8_0 and Q4_0 tensors can be read as weights`);
    if (dtype === 'q8_0' || dtype === 'q4_0') return { dtype, shape: [...t.shape], data: this.readRaw(name) };
    return this.readTensor(name);
  }

  /** Float dtype of a tensor, or null when it is quantized/integer. */
  floatDType(name: string): FloatDType | null {
    const d = GGML_TYPE_TO_WEIGHT[this.tensorInfo(name).ggmlType];
    return d === 'f32' || d === 'f16' || d === 'bf16' ? d : null;
  }

  /** Weight dtype of a tensor (a float or q8_0/q4_0), or null for the other ggml types. */
  weightDType(name: string): WeightDType | null {
    return GGML_TYPE_TO_WEIGHT[this.tensorInfo(name).ggmlType] ?? null;
  }

  // Typed metadata access: absent → undefined; present with another type → GgufError naming both.

  value(key: string): GgufValue | undefined {
    return this.metadata.get(key);
  }

  private wrongType(key: string, v: GgufValue, want: string): never {
    this.fail(`metadata "${key}" is ${describeType(v)}, expected ${want}`);
  }

  getString(key: string): string | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== 'string') this.wrongType(key, v, 'string');
    return v.value;
  }

  getBool(key: string): boolean | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== 'bool') this.wrongType(key, v, 'bool');
    return v.value;
  }

  /** Any numeric scalar; 64-bit integers must be exactly representable. */
  getNumber(key: string): number | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type === 'u64' || v.type === 'i64') {
      const n = Number(v.value);
      if (!Number.isSafeInteger(n)) this.fail(`metadata "${key}" = ${v.value} does not fit a JS number`);
      return n;
    }
    if (!isNumberType(v.type)) this.wrongType(key, v, 'a number');
    return v.value as number;
  }

  getStringArray(key: string): string[] | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== 'array' || v.itemType !== 'string') this.wrongType(key, v, 'array of string');
    return v.value as string[];
  }

  getNumberArray(key: string): number[] | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== 'array' || !isNumberType(v.itemType)) this.wrongType(key, v, 'array of numbers');
    return v.value as number[];
  }

  requireString(key: string): string {
    return this.getString(key) ?? this.fail(`missing metadata "${key}"`);
  }

  requireNumber(key: string): number {
    return this.getNumber(key) ?? this.fail(`missing metadata "${key}"`);
  }
}


/** Parses and validates a GGUF file's header and tensor directory. Tensor data is not read. */
export function readGguf(path: string): GgufFile {
  assertLittleEndianHost();
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new GgufError(`${path}: cannot open: ${(err as Error).message}`);
  }
  try {
    const p = parseGguf(fd, path);
    return new GgufFile(path, p.version, p.fileSize, p.alignment, p.dataOffset, p.metadata, p.tensors);
  } finally {
    closeSync(fd);
  }
}
