// Shared fuzzer types (plain data, so seeds and cases cross worker boundaries by structured clone).
import type { FileImage } from './mutate.js';

export const TARGET_NAMES = ['safetensors', 'index', 'config', 'gguf', 'llama2c', 'llama2c-tok'] as const;
export type TargetName = (typeof TARGET_NAMES)[number];

export function isTargetName(s: string): s is TargetName {
  return (TARGET_NAMES as readonly string[]).includes(s);
}

export interface Seed {
  name: string;
  /** Relative selection weight among the target's seeds (large real files get small weights). */
  weight: number;
  /** Files by path relative to the case folder. */
  files: Record<string, FileImage>;
  /** Tensor names per shard (index target). */
  shards?: Record<string, string[]>;
}

export type SeedSet = Record<TargetName, Seed[]>;

/** One generated input: files to lay out in a fresh folder, and what to open. */
export interface FuzzCase {
  target: TargetName;
  index: number;
  seedName: string;
  ops: string[];
  files: Record<string, FileImage>;
  /** Relative path handed to the parser ('.' = the case folder itself). */
  entry: string;
}

export type Outcome = 'ok' | 'typed-error' | 'bad' | 'hang';

export interface CaseResult {
  target: TargetName;
  index: number;
  outcome: Outcome;
  /** Error class and message (typed errors are truncated), or why the case is bad. */
  detail: string;
  ms: number;
  /** Largest of heap+ArrayBuffer growth and peak-RSS growth during the case, in bytes. */
  memGrowth: number;
  seedName: string;
  ops: string[];
}
