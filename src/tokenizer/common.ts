// Shared by the tokenizer implementations (kept apart from tokenizer.ts to avoid an import cycle).
import type { EncodeOptions } from './types.js';

/** A tokenizer file is missing, unreadable or malformed; names the file. */
export class TokenizerFormatError extends Error {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = 'TokenizerFormatError';
  }
}

export function checkIds(ids: readonly number[], vocabSize: number, where: string): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new RangeError(`${where}: token id ${id} at index ${i} is outside the vocabulary [0, ${vocabSize})`);
    }
  }
}

export function withSpecials(ids: number[], opts: EncodeOptions, bosId: number | null, eosId: number | null, file: string): number[] {
  if (opts.addBos) {
    if (bosId === null) throw new TokenizerFormatError(file, 'addBos was requested but the tokenizer defines no BOS token');
    ids.unshift(bosId);
  }
  if (opts.addEos) {
    if (eosId === null) throw new TokenizerFormatError(file, 'addEos was requested but the tokenizer defines no EOS token');
    ids.push(eosId);
  }
  return ids;
}
