// The model families transmla knows, and dispatch on config.json. Adding a family is adding its
// file to FAMILIES (docs/architecture.md).
import { join } from 'node:path';
import type { WeightSource } from '../tensor.js';
import { Decoder } from '../models/decoder.js';
import { ConfigFields, HfConfigError, isObj, readConfigJson, resolveModelType, type ModelArgs } from './args.js';
import { deepseek } from './deepseek.js';
import type { ConversionMethod, EngineOptions, Family } from './family.js';
import { llama } from './llama.js';
import { mha2mla } from './mha2mla.js';
import { mixtral } from './mixtral.js';
import { qwen3 } from './qwen3.js';

// Families with a claims() marker first: the MHA2MLA variant's config is otherwise a Llama one.
export const FAMILIES: readonly Family<any>[] = [mha2mla, deepseek, llama, mixtral, qwen3]; // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * The "supported: …" tail of every unsupported-model error: the families a user brings, to run or
 * to convert (transmla's own MLA outputs load too, but nobody brings one from elsewhere by that name).
 */
export function supportedText(): string {
  const sources = FAMILIES.filter((f) => f !== deepseek && f !== mha2mla);
  const types = sources.map((f) => f.modelTypes.join(', ') + (f === llama ? ' (SmolLM checkpoints are llama)' : '')).join(', ');
  return `supported: model_type ${types}; architectures ${sources.flatMap((f) => Object.keys(f.architectures)).join(', ')}`;
}

/** The family that reads this config.json, and its model type; errors name the file. */
export function familyOf(json: unknown, file: string): { family: Family; modelType: string } {
  if (!isObj(json)) throw new HfConfigError(`${file}: expected a JSON object`);
  for (const f of FAMILIES) if (f.claims?.(json)) return { family: f, modelType: typeof json.model_type === 'string' ? json.model_type : f.modelTypes[0]! };
  const archs: Record<string, string> = Object.fromEntries(FAMILIES.flatMap((f) => Object.entries(f.architectures)));
  const modelType = resolveModelType(new ConfigFields(json, file), archs, FAMILIES.flatMap((f) => f.modelTypes), supportedText());
  return { family: FAMILIES.find((f) => f.modelTypes.includes(modelType))!, modelType };
}

/** Parses a config.json of any family (`folder`: where side files such as transmla.json live). */
export function parseConfig(json: unknown, file: string, folder: string | null = null): ModelArgs {
  const { family, modelType } = familyOf(json, file);
  return family.parse(json as Record<string, unknown>, file, { modelType, folder });
}

/** Reads and parses `<folder>/config.json`. */
export function readConfig(folder: string): ModelArgs {
  const json = readConfigJson(folder);
  return parseConfig(json, join(folder, 'config.json'), folder);
}

/** The family that parsed these arguments. */
export function familyFor(args: Pick<ModelArgs, 'family'>): Family {
  const f = FAMILIES.find((x) => x.id === args.family);
  if (!f) throw new Error(`unknown model family "${args.family}"`);
  return f;
}

/** The engine's model over `src`, built by the arguments' family. */
export function buildModel(args: ModelArgs, src: WeightSource, opts: EngineOptions = {}): Decoder {
  return Decoder.build(args, src, familyFor(args).engineLayers(args, opts));
}

/** Throws, naming the model, when its family does not take part in `method` as a source. */
export function requireConversion(args: ModelArgs, method: ConversionMethod, model: string): void {
  const s = familyFor(args).conversions[method];
  if (s !== true) throw new Error(`${model} (${args.modelType}) cannot be converted with ${method === 'transmla' ? 'TransMLA' : 'MHA2MLA'}: ${s}`);
}
