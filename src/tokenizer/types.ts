// The tokenizer interface the engine, evaluation and CLI use (implementations: tokenizer.ts,
// llama2c-tokenizer.ts).

export interface EncodeOptions {
  /** Prepend the BOS token (throws when the tokenizer has none). */
  addBos: boolean;
  /** Append the EOS token (throws when the tokenizer has none). Default false. */
  addEos?: boolean;
}

export interface DecodeOptions {
  /** Leave out special tokens (BOS, EOS, UNK, other control tokens). Default true. */
  skipSpecial?: boolean;
}

/**
 * Incremental detokenizer for generation: push ids one at a time, get the new text.
 * Text is only emitted once it is complete UTF-8 (a multi-byte character split over
 * byte-fallback tokens comes out whole), and the leading-space rule of the
 * tokenizer is applied exactly as `decode` applies it to the whole sequence.
 */
export interface StreamDecoder {
  push(id: number): string;
  /** Emits whatever is held back (an incomplete UTF-8 tail renders as U+FFFD). */
  flush(): string;
}

export interface TextTokenizer {
  readonly kind: 'hf' | 'llama2c';
  /** 1 + the largest token id. */
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  /** Whether the model's tokenizer config asks for a BOS at the start of each sequence. */
  readonly addBosByDefault: boolean;
  encode(text: string, opts: EncodeOptions): number[];
  /** The same ids as encode, on the fastest implementation available (use it for long texts). */
  encodeAsync(text: string, opts: EncodeOptions): Promise<number[]>;
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  /** The vocabulary string of a token (e.g. "▁the", "<0x0A>", "<s>"), or null when out of range. */
  idToToken(id: number): string | null;
  isSpecial(id: number): boolean;
  /**
   * A streaming decoder. `context`: ids already in the sequence (e.g. the prompt), which
   * are not emitted but decide spacing of the first pushed token. The context is taken to
   * end on a whole character, as the encoding of a prompt does.
   */
  createStreamDecoder(context?: readonly number[], opts?: DecodeOptions): StreamDecoder;
}
