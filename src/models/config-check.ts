// Whether the engine can load a folder, from its config.json alone (no weights): lets a Hub
// download refuse an unsupported model before fetching gigabytes. Mirrors the dispatch in
// load.ts (MHA2MLA, MLA, else the Llama family); each reader throws one line naming the file.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readLlamaConfig } from '../io/hf-config.js';
import { isMha2mlaConfigJson, isMlaConfigJson, readMha2mlaConfig, readMlaConfig } from '../io/mla-config.js';

export function checkModelConfig(folder: string): void {
  let raw: unknown = null;
  try {
    raw = JSON.parse(readFileSync(join(folder, 'config.json'), 'utf8'));
  } catch {
    // readLlamaConfig reports the unreadable or invalid file.
  }
  if (isMha2mlaConfigJson(raw)) readMha2mlaConfig(folder);
  else if (isMlaConfigJson(raw)) readMlaConfig(folder);
  else readLlamaConfig(folder);
}
