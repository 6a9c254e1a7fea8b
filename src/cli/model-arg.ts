// <model> arguments: a local path is used as is; a Hub id is fetched into the Hugging Face cache
// first (src/io/hub.ts) and the command then runs on the local snapshot folder, so the loaders
// stay synchronous and never see the network.
import { existsSync } from 'node:fs';
import { str, UsageError, type ParsedArgs } from './args.js';
import { resolveModel } from '../io/hub.js';
import { readConfig } from '../arch/registry.js';

/** Flags every command with a <model> takes. */
export const HUB_FLAGS = { revision: 'string' } as const;

export const HUB_HELP =
  '  <model> (and model-valued options such as --teacher, --compare): a local Hugging Face folder, a .gguf file, a\n' +
  '    llama2.c .bin, or a Hugging Face Hub id owner/name[@revision] (a local path of that name wins). Hub models are\n' +
  '    fetched once into the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub):\n' +
  '    config, tokenizer and safetensors files only; an interrupted download resumes where it stopped.\n' +
  '  --revision REV: the branch, tag or commit of the <model> Hub id (default main).\n' +
  '  Environment: HF_ENDPOINT (another Hub), HF_TOKEN (gated/private repos), HF_HUB_OFFLINE=1 (cache only).';

export interface ModelArgOptions {
  /** Check config.json before fetching weights with the engine's config readers (default true). */
  engineConfig?: boolean;
  /** The flag the value came from, for messages (default: the positional <model>). */
  flag?: string;
}

/**
 * The local path of a <model> argument. For the positional model, --revision pins the Hub
 * revision; model-valued options take owner/name@revision instead.
 */
export async function modelArg(spec: string, p: ParsedArgs | null, o: ModelArgOptions = {}): Promise<string> {
  const revision = p && !o.flag ? str(p, 'revision') : undefined;
  if (revision !== undefined && existsSync(spec)) throw new UsageError(`--revision pins a Hub model; ${spec} is a local path`);
  const log = (line: string): void => { process.stderr.write(`${line}\n`); };
  const r = await resolveModel(spec, {
    revision,
    checkConfig: o.engineConfig === false ? undefined : (dir: string) => { readConfig(dir); },
    log,
    progress: true,
  });
  if (r.origin === 'local') return spec;
  if (r.origin === 'hub') log(`${r.repo}@${r.revision} (commit ${r.commit!.slice(0, 12)}) is in ${r.dir}`);
  return r.dir;
}
