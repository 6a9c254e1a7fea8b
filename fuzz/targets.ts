// Fuzz targets: how a case is generated from a seed, how it is loaded end to end, and which
// error classes count as the parser's own typed errors.
import { openCheckpoint, CheckpointError } from '../src/io/checkpoint.js';
import { openGgufModel } from '../src/arch/gguf.js';
import { HfConfigError, type ModelArgs } from '../src/arch/args.js';
import { readConfig } from '../src/arch/registry.js';
import { GgufError, readGguf } from '../src/io/gguf.js';
import { Llama2cFormatError, readLlama2c } from '../src/io/llama2c.js';
import { openSafetensors, SafetensorsError } from '../src/io/safetensors.js';
import { TokenizerFormatError } from '../src/tokenizer/common.js';
import { Llama2cTokenizer } from '../src/tokenizer/llama2c-tokenizer.js';
import {
  mixSeed,
  mutateBytes,
  mutateConfigJson,
  mutateGguf,
  mutateIndexJson,
  mutateLlama2c,
  mutateLlama2cTok,
  mutateSafetensors,
  Rng,
  safetensorsHeaderEnd,
  seedGgufLayout,
  type FileImage,
  type Mutated,
} from './mutate.js';
import { TARGET_NAMES, type FuzzCase, type Seed, type SeedSet, type TargetName } from './types.js';

type ErrorClass = abstract new (...args: never[]) => Error;

export interface TargetSpec {
  name: TargetName;
  /** Builds the case's files and ops from a seed (and a donor seed of the same format for splices). */
  mutate(rng: Rng, seed: Seed, donor: Seed): Pick<FuzzCase, 'files' | 'ops' | 'entry'>;
  /** Opens `path` and reads everything it declares; throws on any failure. */
  load(path: string): void;
  /** Error classes that count as a clean rejection. */
  typed: readonly ErrorClass[];
}

/** Longest accepted error message, not counting occurrences of the file path. */
export const MAX_MESSAGE_CHARS = 1024;

const FLOAT_ST = new Set(['F32', 'F16', 'BF16']);

function only(seed: Seed, name: string): FileImage {
  const f = seed.files[name];
  if (!f) throw new Error(`fuzz seed ${seed.name} has no ${name}`);
  return f;
}

/** Structural mutation, byte mutation, or both, with the given weights. */
function mixed(rng: Rng, img: FileImage, structural: (rng: Rng, img: FileImage) => Mutated, focus: (img: FileImage) => number, donor: FileImage, w: [number, number, number]): Mutated {
  const mode = rng.weighted<'s' | 'b' | 'sb'>([['s', w[0]], ['b', w[1]], ['sb', w[2]]]);
  let cur: Mutated = { img, ops: [] };
  if (mode !== 'b') cur = structural(rng, img);
  if (mode !== 's') {
    const rounds = rng.count(3);
    for (let i = 0; i < rounds; i++) {
      const m = mutateBytes(rng, cur.img, focus(cur.img), donor);
      cur = { img: m.img, ops: [...cur.ops, ...m.ops] };
    }
  }
  return cur;
}


function checkConfig(c: ModelArgs, path: string): void {
  // A config that parses must be internally consistent; anything else is a silent parser bug.
  const ints: [string, number][] = [['hiddenSize', c.hiddenSize], ['intermediateSize', c.intermediateSize], ['numLayers', c.numLayers], ['numHeads', c.numHeads], ['numKvHeads', c.numKvHeads], ['headDim', c.headDim], ['vocabSize', c.vocabSize], ['maxPositionEmbeddings', c.maxPositionEmbeddings]];
  for (const [k, v] of ints) if (!Number.isSafeInteger(v) || v <= 0) throw new Error(`${path}: parsed config has ${k} = ${String(v)}`);
  if (!['llama', 'mistral', 'qwen2', 'mixtral', 'qwen3'].includes(c.modelType)) throw new Error(`${path}: parsed config has modelType ${String(c.modelType)}`);
  const moe = (c as ModelArgs & { moe?: { numExperts: number; topK: number } }).moe;
  if (c.modelType === 'mixtral' && !(moe && Number.isSafeInteger(moe.numExperts) && Number.isSafeInteger(moe.topK) && moe.topK >= 1 && moe.topK <= moe.numExperts)) {
    throw new Error(`${path}: parsed Mixtral config has experts ${JSON.stringify(moe)}`);
  }
  if (c.numHeads % c.numKvHeads !== 0) throw new Error(`${path}: parsed config has ${c.numHeads} heads for ${c.numKvHeads} KV heads`);
  if (!(c.rmsNormEps > 0) || !(c.ropeTheta > 0) || !Number.isFinite(c.ropeTheta)) throw new Error(`${path}: parsed config has eps ${c.rmsNormEps}, theta ${c.ropeTheta}`);
}

const SAMPLE_TEXT = 'Once upon a time, ünïcödé 🙂 <0x41> \u2581x\n<s>';

export const TARGETS: Record<TargetName, TargetSpec> = {
  safetensors: {
    name: 'safetensors',
    typed: [SafetensorsError],
    mutate(rng, seed, donor) {
      const m = mixed(rng, only(seed, 'model.safetensors'), mutateSafetensors, safetensorsHeaderEnd, only(donor, 'model.safetensors'), [55, 35, 10]);
      return { files: { 'model.safetensors': m.img }, ops: m.ops, entry: 'model.safetensors' };
    },
    load(path) {
      const f = openSafetensors(path);
      try {
        for (const n of f.names()) {
          if (FLOAT_ST.has(f.entry(n).dtype)) f.getTensor(n);
          else f.readBytes(n);
        }
      } finally {
        f.close();
      }
    },
  },
  index: {
    name: 'index',
    typed: [CheckpointError, SafetensorsError],
    mutate(rng, seed) {
      const files: Record<string, FileImage> = { ...seed.files };
      const shards = Object.keys(seed.shards ?? {});
      const ops: string[] = [];
      const op = rng.weighted<string>([['index', 80], ['shard', 12], ['files', 8]]);
      if (op === 'index') {
        const text = new TextDecoder().decode(only(seed, 'model.safetensors.index.json').bytes);
        const m = mutateIndexJson(rng, text, { shards, tensors: seed.shards ?? {} });
        files['model.safetensors.index.json'] = { bytes: m.text, tail: 0 };
        if (m.needsSubdir) files['sub/placeholder.txt'] = { bytes: new Uint8Array(1), tail: 0 };
        ops.push(...m.ops);
      } else if (op === 'shard') {
        const s = rng.pick(shards);
        const m = mixed(rng, only(seed, s), mutateSafetensors, safetensorsHeaderEnd, only(seed, rng.pick(shards)), [60, 30, 10]);
        files[s] = m.img;
        ops.push(`shard[${s}]`, ...m.ops);
      } else {
        const s = rng.pick(shards);
        const what = rng.pick(['delete', 'dir', 'empty', 'index-as-shard']);
        if (what === 'delete') delete files[s];
        else if (what === 'dir') {
          // The shard name is a folder: opening it succeeds on Linux, reading it does not.
          delete files[s];
          files[`${s}/inner.safetensors`] = only(seed, s);
        } else if (what === 'empty') files[s] = { bytes: new Uint8Array(0), tail: 0 };
        else files[s] = only(seed, 'model.safetensors.index.json');
        ops.push(`files.${what}[${s}]`);
      }
      return { files, ops, entry: '.' };
    },
    load(path) {
      const ck = openCheckpoint(path);
      try {
        for (const n of ck.names()) {
          const info = ck.info(n);
          if (FLOAT_ST.has(info.dtype)) ck.get(n);
          else ck.getBytes(n);
        }
      } finally {
        ck.close();
      }
    },
  },
  config: {
    name: 'config',
    typed: [HfConfigError],
    mutate(rng, seed) {
      const src = only(seed, 'config.json');
      if (rng.chance(0.8)) {
        const m = mutateConfigJson(rng, new TextDecoder().decode(src.bytes));
        return { files: { 'config.json': { bytes: m.text, tail: 0 } }, ops: m.ops, entry: '.' };
      }
      const m = mutateBytes(rng, src, src.bytes.length);
      return { files: { 'config.json': m.img }, ops: m.ops, entry: '.' };
    },
    load(path) {
      checkConfig(readConfig(path), path);
    },
  },
  gguf: {
    name: 'gguf',
    typed: [GgufError],
    mutate(rng, seed, donor) {
      const src = only(seed, 'model.gguf');
      const focus = seedGgufLayout(src.bytes).headerEnd;
      const m = mixed(rng, src, mutateGguf, () => focus, only(donor, 'model.gguf'), [55, 35, 10]);
      return { files: { 'model.gguf': m.img }, ops: m.ops, entry: 'model.gguf' };
    },
    load(path) {
      const f = readGguf(path);
      for (const t of f.tensors) {
        if (f.floatDType(t.name) !== null) f.readTensor(t.name);
        else f.readRaw(t.name);
      }
      // Model files also go through the llama loader, which interprets the metadata.
      const arch = f.metadata.get('general.architecture');
      if (arch?.type === 'string' && f.metadata.has(`${arch.value}.block_count`)) {
        const m = openGgufModel(path);
        for (const n of m.weights.names()) m.weights.get(n);
      }
    },
  },
  llama2c: {
    name: 'llama2c',
    typed: [Llama2cFormatError],
    mutate(rng, seed, donor) {
      const m = mixed(rng, only(seed, 'model.bin'), mutateLlama2c, () => 256, only(donor, 'model.bin'), [50, 40, 10]);
      return { files: { 'model.bin': m.img }, ops: m.ops, entry: 'model.bin' };
    },
    load(path) {
      readLlama2c(path);
    },
  },
  'llama2c-tok': {
    name: 'llama2c-tok',
    typed: [TokenizerFormatError],
    mutate(rng, seed, donor) {
      const m = mixed(rng, only(seed, 'tokenizer.bin'), mutateLlama2cTok, () => 512, only(donor, 'tokenizer.bin'), [50, 40, 10]);
      return { files: { 'tokenizer.bin': m.img }, ops: m.ops, entry: 'tokenizer.bin' };
    },
    load(path) {
      const tok = Llama2cTokenizer.fromBinFile(path);
      // A tokenizer that loads must also work: encode and decode a sample.
      const ids = tok.encode(SAMPLE_TEXT, { addBos: false, addEos: false });
      tok.decode(ids);
    },
  },
};

/** The target of case `index` under `target` (round-robin for 'all'). */
export function targetOf(target: TargetName | 'all', index: number): TargetName {
  return target === 'all' ? TARGET_NAMES[index % TARGET_NAMES.length]! : target;
}

/** Deterministically generates case `index` of a run. */
export function makeCase(seeds: SeedSet, runSeed: number, target: TargetName, index: number): FuzzCase {
  const spec = TARGETS[target];
  const rng = new Rng(mixSeed(runSeed, TARGET_NAMES.indexOf(target), index));
  const pool = seeds[target];
  if (pool.length === 0) throw new Error(`no fuzz seeds for target ${target}`);
  const seed = rng.weighted(pool.map((s) => [s, s.weight] as const));
  const donor = rng.pick(pool);
  const m = spec.mutate(rng, seed, donor);
  return { target, index, seedName: seed.name, ops: m.ops, files: m.files, entry: m.entry };
}

/** Outcome of one load attempt (timing and memory are measured by the caller). */
export function classifyError(err: unknown, spec: TargetSpec, mustName: string): { outcome: 'typed-error' | 'bad'; detail: string } {
  const e = err instanceof Error ? err : null;
  const name = e ? e.constructor.name : typeof err;
  const msg = e ? e.message : String(err);
  if (e && spec.typed.some((c) => e instanceof c)) {
    if (!msg.includes(mustName)) return { outcome: 'bad', detail: `${name} does not name ${mustName}: ${clip(msg)}` };
    const rest = msg.split(mustName).join('').length;
    if (rest > MAX_MESSAGE_CHARS) return { outcome: 'bad', detail: `${name} message is ${rest} characters long: ${clip(msg)}` };
    return { outcome: 'typed-error', detail: `${name}: ${msg}` };
  }
  const where = e?.stack?.split('\n').slice(1, 4).map((s) => s.trim()).join(' | ') ?? '';
  return { outcome: 'bad', detail: `${name}: ${clip(msg)}${where ? ` @ ${where}` : ''}` };
}

export function clip(s: string, n = 300): string {
  return s.length <= n ? s : `${s.slice(0, n)}… (${s.length} chars)`;
}
