// Timing, deterministic inputs and the machine description shared by the kernel benchmarks
// (bench/kernels.ts and bench/kernels-quant.ts).
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { ompWaitPolicy } from '../../src/kernels/native.js';
import type { FloatData, FloatDType, Kernels } from '../../src/kernels/types.js';

export interface Timing {
  best: number;
  median: number;
  runs: number;
  /** Process CPU seconds per wall second over the timed runs: ≈ threads when the machine was
   *  ours, much less when other processes competed for the cores (then the figures are low). */
  cpuPerWall: number;
}

export function time(fn: () => void, runs: number, warmup = 1): Timing {
  for (let i = 0; i < warmup; i++) fn();
  const ts: number[] = [];
  const c0 = process.cpuUsage();
  const w0 = process.hrtime.bigint();
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const c = process.cpuUsage(c0);
  const wall = Number(process.hrtime.bigint() - w0) / 1e9;
  ts.sort((a, b) => a - b);
  return { best: ts[0], median: ts[Math.floor((ts.length - 1) / 2)], runs, cpuPerWall: round((c.user + c.system) / 1e6 / wall, 2) };
}

// Deterministic inputs so runs are comparable.
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
}

export function randomF32(n: number, r: () => number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r();
  return a;
}

export function asType(k: Kernels, f: Float32Array, t: FloatDType): FloatData {
  if (t === 'f32') return f;
  const u = new Uint16Array(f.length);
  k.fromF32(f, t, u);
  return u;
}

export function widened(k: Kernels, b: FloatData, t: FloatDType): Float32Array {
  if (t === 'f32') return b as Float32Array;
  const f = new Float32Array(b.length);
  k.toF32(b as Uint16Array, t, f);
  return f;
}

export const round = (x: number, d = 1) => Number(x.toFixed(d));
export const sci = (x: number) => Number(x.toExponential(2));

export function arg(args: string[], name: string, def: number): number {
  const i = args.indexOf(name);
  if (i < 0) return def;
  const v = Number(args[i + 1]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} needs a positive integer, got ${args[i + 1]}`);
  return v;
}

export function machine(threads: number) {
  let cpu = 'unknown';
  let flags: string[] = [];
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    cpu = /^model name\s*:\s*(.*)$/m.exec(info)?.[1]?.trim() ?? cpu;
    const f = /^flags\s*:\s*(.*)$/m.exec(info)?.[1]?.split(/\s+/) ?? [];
    flags = ['avx2', 'fma', 'f16c', 'avx512f'].filter((x) => f.includes(x));
  } catch {
    // Not Linux: leave the model unknown.
  }
  return {
    cpu,
    isa: flags,
    logicalCpus: os.cpus().length,
    threads,
    ompWaitPolicy: ompWaitPolicy(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    memGiB: round(os.totalmem() / 2 ** 30),
    date: new Date().toISOString(),
  };
}
