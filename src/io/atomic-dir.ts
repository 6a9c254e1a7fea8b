// Produce an output folder all-or-nothing: the body writes into a hidden sibling temp folder,
// which is fsynced and renamed into place only when the body succeeds. A failed or interrupted
// run therefore never leaves a half-written model under the final name, and an existing folder
// being replaced stays intact until the new one is complete.
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, realpathSync, renameSync, rmSync, statSync, type Stats } from 'node:fs';
import { basename, dirname, join, relative, resolve, isAbsolute } from 'node:path';
import { interruptPoint, registerTempPath } from './interrupt.js';

export class AtomicDirError extends Error {
  override name = 'AtomicDirError';
}

export interface AtomicDirOptions {
  /** Replace a non-empty finalDir (only after the body succeeded). Default false. */
  overwrite?: boolean;
  /** Inputs (folders or files: the model, calibration text…) the output must not equal or contain. */
  source?: string | readonly string[];
}

function statOrNull(p: string): Stats | null {
  try {
    return statSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** true when `inner` is `outer` or lies inside it. */
function isSameOrInside(inner: string, outer: string): boolean {
  const rel = relative(outer, inner);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/** Canonical path: realpath of the deepest existing ancestor plus the rest, so symlinks are seen through. */
function canonical(p: string): string {
  const abs = resolve(p);
  let head = abs;
  const tail: string[] = [];
  for (;;) {
    try {
      return join(realpathSync(head), ...tail.reverse());
    } catch {
      const parent = dirname(head);
      if (parent === head) return abs;
      tail.push(basename(head));
      head = parent;
    }
  }
}

function fsyncPath(p: string, isDir: boolean): void {
  let fd: number;
  try {
    fd = openSync(p, 'r');
  } catch (err) {
    // Some filesystems refuse opening directories for fsync; the data files are what matter.
    if (isDir) return;
    throw err;
  }
  try {
    fsyncSync(fd);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!(isDir && (code === 'EINVAL' || code === 'EISDIR' || code === 'EBADF'))) throw err;
  } finally {
    closeSync(fd);
  }
}

function fsyncTree(dir: string): void {
  for (const ent of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) fsyncTree(p);
    else if (ent.isFile()) fsyncPath(p, false);
  }
  fsyncPath(dir, true);
}

function tempSibling(finalDir: string, tag: string): string {
  return join(dirname(finalDir), `.${basename(finalDir)}.${tag}-${process.pid}-${randomBytes(4).toString('hex')}`);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const SIBLING = /^\.(.+)\.(tmp|old)-(\d+)-[0-9a-f]{8}$/;

/**
 * Siblings left by a run that was killed outright (SIGKILL, power loss): `.<name>.tmp-<pid>-<hex>`
 * (an unfinished output: deleted) and `.<name>.old-<pid>-<hex>` (the previous output moved aside
 * during the final swap: put back when the output itself is missing, else deleted). Only
 * siblings whose process is gone are touched. Returns the names removed or restored.
 */
export function cleanStaleSiblings(finalDir: string): string[] {
  const target = resolve(finalDir);
  const parent = dirname(target);
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch {
    return [];
  }
  const stale = names.filter((n) => {
    const m = SIBLING.exec(n);
    return m !== null && m[1] === basename(target) && Number(m[3]) !== process.pid && !pidAlive(Number(m[3]));
  });
  const olds = stale.filter((n) => SIBLING.exec(n)![2] === 'old');
  const done: string[] = [];
  let restored: string | null = null;
  if (olds.length === 1 && statOrNull(target) === null) {
    renameSync(join(parent, olds[0]!), target);
    restored = olds[0]!;
    done.push(restored);
  }
  for (const n of stale) {
    if (n === restored) continue;
    rmSync(join(parent, n), { recursive: true, force: true });
    done.push(n);
  }
  return done;
}

/**
 * The checks withAtomicDir makes before running its body, for callers that want to fail before
 * a long computation: finalDir must not be a file, must not equal or contain an input, and must
 * be empty or absent unless overwrite.
 */
export function checkOutputDir(finalDir: string, options: AtomicDirOptions): void {
  const target = resolve(finalDir);
  const existing = statOrNull(target);
  if (existing && !existing.isDirectory()) throw new AtomicDirError(`output ${target} exists and is not a folder`);
  const sources = options.source === undefined ? [] : typeof options.source === 'string' ? [options.source] : options.source;
  for (const src of sources) {
    if (isSameOrInside(canonical(src), canonical(target))) {
      throw new AtomicDirError(`output ${target} is or contains an input (${resolve(src)}); choose another output folder`);
    }
  }
  if (existing && readdirSync(target).length > 0 && !options.overwrite) {
    throw new AtomicDirError(`output folder ${target} exists and is not empty; pass --overwrite to replace it`);
  }
}

/**
 * The same for a single output file (a GGUF, a llama2.c .bin, bench.json), before any work: it
 * must not be a folder, its folder must exist, it must not be one of the inputs, and it must not
 * exist unless overwrite.
 */
export function checkOutputFile(file: string, options: AtomicDirOptions): void {
  const target = resolve(file);
  const existing = statOrNull(target);
  if (existing?.isDirectory()) throw new AtomicDirError(`${target}: output path is a folder; give a file path`);
  const parent = statOrNull(dirname(target));
  if (!parent || !parent.isDirectory()) throw new AtomicDirError(`output ${target}: the folder ${dirname(target)} does not exist`);
  const sources = options.source === undefined ? [] : typeof options.source === 'string' ? [options.source] : options.source;
  for (const src of sources) {
    if (canonical(src) === canonical(target)) throw new AtomicDirError(`output ${target} is an input (${resolve(src)}); choose another output file`);
  }
  if (existing && !options.overwrite) throw new AtomicDirError(`${target}: output file exists; pass --overwrite to replace it`);
}

/**
 * Runs body(tmpDir) and then moves tmpDir to finalDir. Refuses (before running the body) what
 * checkOutputDir refuses. On any error or interruption (interrupt.ts) the temp folder is removed
 * and finalDir is untouched. Stale siblings of killed runs are cleaned first.
 */
export async function withAtomicDir<T>(finalDir: string, options: AtomicDirOptions, body: (tmpDir: string) => Promise<T>): Promise<T> {
  const target = resolve(finalDir);
  cleanStaleSiblings(target);
  checkOutputDir(target, options);
  const nonEmpty = (): boolean => readdirSync(target).length > 0;

  mkdirSync(dirname(target), { recursive: true });
  const tmp = tempSibling(target, 'tmp');
  mkdirSync(tmp);
  const unregister = registerTempPath(tmp);
  let result: T;
  try {
    result = await body(tmp);
    fsyncTree(tmp);
    // Last chance to honour a signal: from here the swap is synchronous and completes.
    await interruptPoint();
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    unregister();
    throw err;
  }
  unregister();

  // Re-check: the folder may have appeared while the body ran.
  const now = statOrNull(target);
  try {
    if (now && !now.isDirectory()) throw new AtomicDirError(`output ${target} appeared as a file while writing`);
    if (now && nonEmpty() && !options.overwrite) throw new AtomicDirError(`output folder ${target} appeared and is not empty; pass --overwrite to replace it`);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  if (!now) {
    try {
      renameSync(tmp, target);
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw new AtomicDirError(`could not move ${tmp} to ${target}: ${(err as Error).message}`);
    }
  } else {
    // Replace: move the old folder aside, move the new one in, then delete the old one.
    const old = tempSibling(target, 'old');
    try {
      renameSync(target, old);
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw new AtomicDirError(`could not move the existing ${target} aside: ${(err as Error).message}`);
    }
    try {
      renameSync(tmp, target);
    } catch (err) {
      renameSync(old, target);
      rmSync(tmp, { recursive: true, force: true });
      throw new AtomicDirError(`could not move ${tmp} to ${target}: ${(err as Error).message}`);
    }
    rmSync(old, { recursive: true, force: true });
  }
  fsyncPath(dirname(target), true);
  return result;
}
