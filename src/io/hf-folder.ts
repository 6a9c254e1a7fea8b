// The files of a Hugging Face model folder that travel with converted weights (tokenizer,
// generation config, chat templates). config.json itself is parsed by the model families
// (arch/), the weights by io/checkpoint.ts.
import { chmodSync, copyFileSync, existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export class HfFolderError extends Error {
  override name = 'HfFolderError';
}

/** Files of an HF folder that travel verbatim with converted weights. */
export const HF_EXTRA_FILES: readonly string[] = [
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'vocab.txt',
  'chat_template.json',
  'chat_template.jinja',
];

/** true for file names writeHfFolderExtras copies (also used to pick Hub downloads). */
export function isHfExtraFile(name: string): boolean {
  return HF_EXTRA_FILES.includes(name) || name.endsWith('.jinja');
}

/**
 * Copies generation config, tokenizer and chat-template files from srcDir to outDir verbatim
 * (the ones present). Returns the names copied.
 */
export function writeHfFolderExtras(srcDir: string, outDir: string): string[] {
  const copied: string[] = [];
  for (const name of readdirSync(srcDir).sort()) {
    if (!isHfExtraFile(name)) continue;
    const src = join(srcDir, name);
    if (!statSync(src).isFile()) continue;
    const dst = join(outDir, name);
    if (existsSync(dst)) throw new HfFolderError(`${dst} already exists; refusing to overwrite it with ${src}`);
    copyFileSync(src, dst);
    // copyFileSync keeps the source mode; read-only sources would give a read-only output.
    chmodSync(dst, 0o644);
    copied.push(name);
  }
  return copied;
}
