// The Rust `tokenizers` package (Hugging Face's reference implementation, prebuilt N-API
// binaries in the npm package) for long texts: about 18× faster than @huggingface/tokenizers on
// the shared texts with identical ids (bench/tokenizers.ts). Its encode is asynchronous, so it
// backs TextTokenizer.encodeAsync; the synchronous encode (prompts) stays on the JS library,
// which is also the fallback when the binding does not load. TRANSMLA_TOKENIZERS=js forces
// the fallback.
import { createRequire } from 'node:module';

/** The part of the binding's Tokenizer we use. */
export interface NativeTokenizer {
  encode(text: string, pair: null, options: { addSpecialTokens: boolean }): Promise<{ getIds(): number[] }>;
}

interface NativeModule {
  Tokenizer: { fromString(json: string): NativeTokenizer };
}

let loaded: NativeModule | null | undefined;
let loadError: string | null = null;

function nativeModule(): NativeModule | null {
  if (loaded !== undefined) return loaded;
  if (process.env.TRANSMLA_TOKENIZERS === 'js') {
    loadError = 'TRANSMLA_TOKENIZERS=js';
    return (loaded = null);
  }
  try {
    loaded = createRequire(import.meta.url)('tokenizers') as NativeModule;
  } catch (e) {
    loadError = (e as Error).message.split('\n')[0]!;
    loaded = null;
  }
  return loaded;
}

/** Why the native tokenizer is not in use (null when it is). */
export function nativeTokenizersUnavailable(): string | null {
  nativeModule();
  return loadError;
}

/** A native tokenizer for a tokenizer.json, or null (binding missing, or a file it refuses). */
export function nativeTokenizer(tokenizerJson: string): NativeTokenizer | null {
  const m = nativeModule();
  if (!m) return null;
  try {
    return m.Tokenizer.fromString(tokenizerJson);
  } catch {
    // The JS library accepted this file (it was loaded first); keep using it.
    return null;
  }
}
