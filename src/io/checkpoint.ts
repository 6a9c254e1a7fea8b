// Hugging Face checkpoint folders: `model.safetensors`, or shards listed by
// `model.safetensors.index.json` = {"metadata": {"total_size": n}, "weight_map": {tensor: file}}.
// Reading opens every shard's header (validating it) but reads tensor data only on get().
// Writing streams tensors into size-limited shards as they arrive.
import { closeSync, existsSync, fsyncSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import type { Tensor, WeightSource } from '../tensor.js';
import { InterruptedError, interruptPoint } from './interrupt.js';
import { clipText, preview } from './preview.js';
import {
  encodeHeader,
  floatToSafetensorsDType,
  openSafetensors,
  SafetensorsError,
  tensorBytes,
  validateTensor,
  writeAll,
  type NamedTensor,
  type SafetensorsDType,
  type SafetensorsFile,
} from './safetensors.js';

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

export interface CheckpointTensorInfo {
  dtype: SafetensorsDType;
  shape: number[];
  /** Shard file name (relative to the folder). */
  file: string;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Resolves a shard name from the index, refusing anything that would leave the folder. */
function shardPath(dir: string, indexPath: string, file: string): string {
  if (file === '' || isAbsolute(file) || file.includes('\0')) throw new CheckpointError(`${indexPath}: shard file name ${preview(file)} must be a relative path inside the folder`);
  if (file.split(/[\\/]/).includes('..')) throw new CheckpointError(`${indexPath}: shard file name ${preview(file)} contains ".."; refusing to read outside the folder`);
  const p = resolve(dir, file);
  const rel = relative(dir, p);
  // Lexical containment (not realpath): Hub cache folders legitimately symlink shards to blobs elsewhere.
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) throw new CheckpointError(`${indexPath}: shard file name ${preview(file)} resolves outside the folder`);
  return p;
}

/** A checkpoint folder (or a single .safetensors file) as a lazy WeightSource. */
export class Checkpoint implements WeightSource {
  /** The checkpoint folder (the file's folder when opened on a single .safetensors file). */
  readonly dir: string;
  /** Metadata: the index's "metadata" (stringified) merged with every shard's __metadata__. */
  readonly metadata: Readonly<Record<string, string>>;
  private readonly where: Map<string, SafetensorsFile>;
  private readonly files: SafetensorsFile[];
  private closed = false;

  private constructor(dir: string, files: SafetensorsFile[], where: Map<string, SafetensorsFile>, metadata: Record<string, string>) {
    this.dir = dir;
    this.files = files;
    this.where = where;
    this.metadata = metadata;
  }

  /**
   * Opens `path`: a folder with model.safetensors (preferred, as transformers does) or
   * model.safetensors.index.json, or a .safetensors file. Validates every referenced shard header.
   */
  static open(path: string): Checkpoint {
    const abs = resolve(path);
    let st;
    try {
      st = statSync(abs);
    } catch {
      throw new CheckpointError(`checkpoint ${abs} does not exist`);
    }
    if (st.isFile()) return Checkpoint.fromFiles(dirname(abs), [abs]);
    const single = join(abs, SINGLE_FILE);
    if (existsSync(single)) return Checkpoint.fromFiles(abs, [single]);
    const indexPath = join(abs, INDEX_FILE);
    if (existsSync(indexPath)) return Checkpoint.fromIndex(abs, indexPath);
    const bin = readdirSync(abs).filter((f) => f.endsWith('.bin') || f.endsWith('.pt') || f.endsWith('.pth'));
    const hint = bin.length > 0 ? ` (found ${bin.join(', ')}: PyTorch pickles are not supported; convert them to safetensors first)` : '';
    throw new CheckpointError(`${abs} has neither ${SINGLE_FILE} nor ${INDEX_FILE}${hint}`);
  }

  private static fromIndex(dir: string, indexPath: string): Checkpoint {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(indexPath, 'utf8'));
    } catch (err) {
      throw new CheckpointError(`${indexPath}: not valid JSON: ${(err as Error).message}`);
    }
    if (!isPlainObject(json)) throw new CheckpointError(`${indexPath}: expected a JSON object`);
    const wm = json.weight_map;
    if (!isPlainObject(wm)) throw new CheckpointError(`${indexPath}: "weight_map" must be an object mapping tensor names to shard files`);
    const metadata: Record<string, string> = {};
    if (json.metadata !== undefined && json.metadata !== null) {
      if (!isPlainObject(json.metadata)) throw new CheckpointError(`${indexPath}: "metadata" must be an object`);
      for (const [k, v] of Object.entries(json.metadata)) {
        if (typeof v === 'string') {
          metadata[k] = v;
          continue;
        }
        try {
          metadata[k] = JSON.stringify(v);
        } catch {
          // Only a value nested deeper than the stack allows gets here (RangeError).
          throw new CheckpointError(`${indexPath}: "metadata" entry ${preview(k)} is nested too deeply`);
        }
      }
    }
    const byFile = new Map<string, string[]>();
    // Many tensors share a shard: resolve each distinct file name once.
    const resolved = new Map<string, string>();
    for (const [name, file] of Object.entries(wm)) {
      if (typeof file !== 'string') throw new CheckpointError(`${indexPath}: weight_map[${preview(name)}] must be a file name string`);
      let p = resolved.get(file);
      if (p === undefined) {
        p = shardPath(dir, indexPath, file);
        resolved.set(file, p);
      }
      const list = byFile.get(p) ?? [];
      list.push(name);
      byFile.set(p, list);
    }
    if (byFile.size === 0) throw new CheckpointError(`${indexPath}: weight_map is empty`);
    for (const p of byFile.keys()) {
      if (!existsSync(p)) throw new CheckpointError(`${indexPath} lists shard ${clipText(relative(dir, p))}, which is missing from ${dir}`);
    }
    const opened: SafetensorsFile[] = [];
    const where = new Map<string, SafetensorsFile>();
    try {
      for (const [p, names] of byFile) {
        const f = openSafetensors(p);
        opened.push(f);
        for (const name of names) {
          if (!f.has(name)) throw new CheckpointError(`${indexPath} maps tensor ${preview(name)} to ${clipText(relative(dir, p))}, but that shard does not contain it`);
        }
        Object.assign(metadata, f.metadata);
      }
    } catch (err) {
      for (const f of opened) f.close();
      throw err;
    }
    // Names in index order; the shard handle is found through the file each name maps to.
    const fileOf = new Map(opened.map((f) => [f.path, f]));
    for (const [name, file] of Object.entries(wm)) where.set(name, fileOf.get(resolved.get(file as string)!)!);
    return new Checkpoint(dir, opened, where, metadata);
  }

  private static fromFiles(dir: string, paths: string[]): Checkpoint {
    const opened: SafetensorsFile[] = [];
    const where = new Map<string, SafetensorsFile>();
    const metadata: Record<string, string> = {};
    try {
      for (const p of paths) {
        const f = openSafetensors(p);
        opened.push(f);
        for (const name of f.names()) where.set(name, f);
        Object.assign(metadata, f.metadata);
      }
    } catch (err) {
      for (const f of opened) f.close();
      throw err;
    }
    return new Checkpoint(dir, opened, where, metadata);
  }

  names(): string[] {
    return [...this.where.keys()];
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  /** dtype, shape and shard of a tensor without reading it. */
  info(name: string): CheckpointTensorInfo {
    const f = this.fileFor(name);
    const e = f.entry(name);
    return { dtype: e.dtype, shape: [...e.shape], file: relative(this.dir, f.path) };
  }

  get(name: string): Tensor {
    return this.fileFor(name).getTensor(name);
  }

  /** Raw bytes of any-dtype tensor, in a fresh ArrayBuffer. */
  getBytes(name: string): Uint8Array {
    return this.fileFor(name).readBytes(name);
  }

  /** Sum of the data sizes of all listed tensors. */
  totalBytes(): number {
    let n = 0;
    for (const [name, f] of this.where) n += f.entry(name).byteLength;
    return n;
  }

  /** Shard files opened (absolute paths). */
  shardPaths(): string[] {
    return this.files.map((f) => f.path);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.files) f.close();
  }

  private fileFor(name: string): SafetensorsFile {
    if (this.closed) throw new CheckpointError(`${this.dir}: checkpoint is closed (reading "${name}")`);
    const f = this.where.get(name);
    if (!f) throw new CheckpointError(`${this.dir}: no tensor named "${name}"`);
    return f;
  }
}

export function openCheckpoint(path: string): Checkpoint {
  return Checkpoint.open(path);
}

// ---------------------------------------------------------------------------------------------
// Writer

export interface WriteCheckpointOptions {
  /** Start a new shard when adding a tensor would exceed this many data bytes (HF default 5 GB). */
  maxShardBytes?: number;
  /** Extra __metadata__ entries for every shard (format: "pt" is always set). */
  metadata?: Record<string, string>;
}

export interface WrittenCheckpoint {
  /** Final file names written in outDir (shards, then the index when sharded). */
  files: string[];
  /** Sum of tensor data bytes (the index's metadata.total_size). */
  totalSize: number;
  tensorCount: number;
}

// Bounded copy buffer: a large shard must not cost its own size in memory when finished.
const COPY_CHUNK = 8 * 1024 * 1024;

/**
 * One shard being written. Tensors arrive before the header can be known, so data is appended
 * to a temporary data file; finishing writes header + data into the temporary shard file.
 */
class ShardBuilder {
  readonly items: { name: string; dtype: SafetensorsDType; shape: number[]; byteLength: number }[] = [];
  bytes = 0;
  private fd: number;

  constructor(
    readonly dataPath: string,
    readonly shardTmpPath: string,
  ) {
    this.fd = openSync(dataPath, 'w');
  }

  add(name: string, t: Tensor): void {
    const data = tensorBytes(t);
    writeAll(this.fd, data);
    this.items.push({ name, dtype: floatToSafetensorsDType(t.dtype), shape: [...t.shape], byteLength: data.byteLength });
    this.bytes += data.byteLength;
  }

  finish(metadata: Record<string, string>): void {
    closeSync(this.fd);
    const header = encodeHeader(this.items, metadata);
    const src = openSync(this.dataPath, 'r');
    const dst = openSync(this.shardTmpPath, 'w');
    try {
      writeAll(dst, header);
      const buf = new Uint8Array(Math.min(COPY_CHUNK, Math.max(1, this.bytes)));
      let pos = 0;
      while (pos < this.bytes) {
        const got = readSync(src, buf, 0, Math.min(buf.length, this.bytes - pos), pos);
        if (got === 0) throw new CheckpointError(`${this.dataPath}: temporary data file ended early`);
        writeAll(dst, buf.subarray(0, got));
        pos += got;
      }
      fsyncSync(dst);
    } finally {
      closeSync(src);
      closeSync(dst);
    }
    rmSync(this.dataPath, { force: true });
  }

  abort(): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed by finish()
    }
    rmSync(this.dataPath, { force: true });
    rmSync(this.shardTmpPath, { force: true });
  }
}

function shardName(i: number, n: number): string {
  const pad = (x: number) => String(x).padStart(5, '0');
  return `model-${pad(i)}-of-${pad(n)}.safetensors`;
}

/**
 * Writes tensors as they arrive into outDir: `model.safetensors` when everything fits in one
 * shard, else `model-0000i-of-0000N.safetensors` + `model.safetensors.index.json`. Shards are
 * filled greedily in arrival order; a tensor larger than maxShardBytes gets a shard of its own.
 * outDir must exist and hold no checkpoint files (wrap with withAtomicDir for an atomic folder).
 */
export async function writeCheckpoint(
  outDir: string,
  tensors: Iterable<NamedTensor> | AsyncIterable<NamedTensor>,
  options: WriteCheckpointOptions = {},
): Promise<WrittenCheckpoint> {
  const maxShardBytes = options.maxShardBytes ?? 5e9;
  if (!(maxShardBytes > 0)) throw new CheckpointError(`maxShardBytes must be positive, got ${maxShardBytes}`);
  const dir = resolve(outDir);
  const st = statSync(dir, { throwIfNoEntry: false });
  if (!st?.isDirectory()) throw new CheckpointError(`output folder ${dir} does not exist`);
  const clash = readdirSync(dir).filter((f) => f === INDEX_FILE || (f.startsWith('model') && f.endsWith('.safetensors')));
  if (clash.length > 0) throw new CheckpointError(`output folder ${dir} already holds checkpoint files (${clash.join(', ')})`);
  const metadata = { format: 'pt', ...(options.metadata ?? {}) };

  const tag = `${process.pid}-${Date.now().toString(36)}`;
  const shards: ShardBuilder[] = [];
  let current: ShardBuilder | null = null;
  const seen = new Set<string>();
  const finished: ShardBuilder[] = [];
  try {
    for await (const { name, tensor } of tensors) {
      validateTensor(dir, name, tensor);
      if (name === '__metadata__') throw new CheckpointError(`${dir}: a tensor cannot be named "__metadata__"`);
      if (seen.has(name)) throw new CheckpointError(`${dir}: tensor "${name}" was given twice`);
      seen.add(name);
      const size = tensor.data.byteLength;
      if (current && current.bytes > 0 && current.bytes + size > maxShardBytes) {
        current.finish(metadata);
        finished.push(current);
        current = null;
      }
      if (!current) {
        const k = shards.length + 1;
        current = new ShardBuilder(join(dir, `.shard-${k}.${tag}.data`), join(dir, `.shard-${k}.${tag}.safetensors`));
        shards.push(current);
      }
      current.add(name, tensor);
      // Per tensor: a signal during a long write stops it here (the caller removes the folder).
      await interruptPoint();
    }
    if (!current) throw new CheckpointError(`${dir}: no tensors to write`);
    current.finish(metadata);
    finished.push(current);
  } catch (err) {
    for (const s of shards) s.abort();
    if (err instanceof SafetensorsError || err instanceof CheckpointError || err instanceof InterruptedError) throw err;
    throw new CheckpointError(`writing checkpoint to ${dir} failed: ${(err as Error).message}`, { cause: err });
  }

  const n = finished.length;
  const totalSize = finished.reduce((a, s) => a + s.bytes, 0);
  const files: string[] = [];
  try {
    if (n === 1) {
      renameSync(finished[0]!.shardTmpPath, join(dir, SINGLE_FILE));
      files.push(SINGLE_FILE);
    } else {
      const weightMap: Record<string, string> = {};
      finished.forEach((s, i) => {
        const name = shardName(i + 1, n);
        renameSync(s.shardTmpPath, join(dir, name));
        files.push(name);
        for (const it of s.items) weightMap[it.name] = name;
      });
      // HF writes the weight map with sorted keys.
      const sorted = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]!]));
      const index = { metadata: { total_size: totalSize }, weight_map: sorted };
      const indexPath = join(dir, INDEX_FILE);
      writeFileSync(indexPath, JSON.stringify(index, null, 2) + '\n');
      const fd = openSync(indexPath, 'r');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      files.push(INDEX_FILE);
    }
  } catch (err) {
    for (const s of finished) rmSync(s.shardTmpPath, { force: true });
    for (const f of files) rmSync(join(dir, f), { force: true });
    throw new CheckpointError(`finalising checkpoint files in ${dir} failed: ${(err as Error).message}`, { cause: err });
  }
  return { files, totalSize, tensorCount: seen.size };
}
