// Opening a llama.cpp GGUF as an engine model: general.architecture picks the family (the one
// whose GGUF form lists it and claims the file, else the one that lists it without a claims
// predicate), which reads the arguments from the metadata and names the tensors.
import { GgufError, readGguf, type GgufFile } from '../io/gguf.js';
import { ggufWeights, type GgufTensorSpec } from '../io/gguf-model.js';
import type { WeightSource } from '../tensor.js';
import type { ModelArgs } from './args.js';
import { FAMILIES } from './registry.js';

export interface GgufModel {
  file: GgufFile;
  arch: string;
  config: ModelArgs;
  /** Tensors under their Hugging Face names, q/k rows back in rotate-half order. */
  weights: WeightSource;
  /** Every tensor of the model under both names (checked present, with its shape and a float type). */
  specs: GgufTensorSpec[];
}

/** Opens a GGUF holding F32/F16/BF16 tensors as arguments plus a lazy WeightSource with HF tensor names. */
export function openGgufModel(path: string): GgufModel {
  const f = readGguf(path);
  const arch = f.requireString('general.architecture');
  const forms = FAMILIES.filter((x) => x.gguf?.archs.includes(arch));
  const family = forms.find((x) => x.gguf!.claims?.(f, arch)) ?? forms.find((x) => !x.gguf!.claims);
  if (!family) throw new GgufError(`${path}: architecture "${arch}" is not supported (${FAMILIES.flatMap((x) => x.gguf?.archs ?? []).join(', ')})`);
  const form = family.gguf!;
  const config = form.readArgs(f, arch, path);
  const specs = form.tensors(config, arch, 'model.embed_tokens.weight', f);
  const weights = ggufWeights(f, specs, path, arch, form.extraTensors);
  return { file: f, arch, config, weights, specs };
}
