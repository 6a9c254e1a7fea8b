// The completion text of one choice as tokens arrive: finds stop sequences (the text ends before
// the earliest one, which is not returned, as OpenAI does) and, for streaming, releases only text
// that can no longer turn out to be the start of a stop sequence.

/** One token of the output, with where its text starts in the completion text. */
export interface TokenEntry<L> {
  piece: string;
  offset: number;
  /** Log-probability details (the caller's type), or null when not asked for. */
  info: L;
}

export interface Release<L> {
  text: string;
  tokens: TokenEntry<L>[];
}

export class StoppableText<L> {
  private text = '';
  private readonly entries: TokenEntry<L>[] = [];
  private released = 0;
  private releasedTokens = 0;
  /** Where the text ends when a stop sequence was found, else null. */
  private cut: number | null = null;

  constructor(private readonly stops: readonly string[]) {}

  get stopped(): boolean {
    return this.cut !== null;
  }

  /** Appends a token's text; returns true when a stop sequence now appears. */
  push(piece: string, info: L): boolean {
    if (this.cut !== null) throw new Error('text already stopped');
    this.entries.push({ piece, offset: this.text.length, info });
    return this.append(piece);
  }

  /** Adds text to the last token (what a decoder held back until the end); true when a stop sequence now appears. */
  extendLast(piece: string): boolean {
    const e = this.entries[this.entries.length - 1];
    if (!e) throw new Error('no token to extend');
    if (this.cut !== null) return true;
    e.piece += piece;
    return this.append(piece);
  }

  private append(piece: string): boolean {
    const before = this.text.length;
    this.text += piece;
    let cut = -1;
    for (const s of this.stops) {
      // Only matches that end in the new piece are new.
      const i = this.text.indexOf(s, Math.max(0, before - s.length + 1));
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) this.cut = cut;
    return cut >= 0;
  }

  /** Length of the text that can be released now: all but a tail that may begin a stop sequence. */
  private safeLength(): number {
    if (this.cut !== null) return this.cut;
    let hold = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, this.text.length); k > hold; k--) {
        if (this.text.endsWith(s.slice(0, k))) { hold = k; break; }
      }
    }
    return this.text.length - hold;
  }

  /**
   * The text not yet released (all of it when `final`, up to the stop sequence), with the tokens
   * whose text lies entirely inside what has been released (final: every token starting before the end).
   */
  release(final: boolean): Release<L> {
    const end = final ? (this.cut ?? this.text.length) : this.safeLength();
    const text = this.text.slice(this.released, Math.max(this.released, end));
    this.released = Math.max(this.released, end);
    const tokens: TokenEntry<L>[] = [];
    while (this.releasedTokens < this.entries.length) {
      const e = this.entries[this.releasedTokens]!;
      const inside = final
        ? e.offset < end || (this.cut === null && e.offset <= end)
        : e.offset + e.piece.length <= end && (e.piece.length > 0 || e.offset < end);
      if (!inside) break;
      tokens.push(e);
      this.releasedTokens++;
    }
    return { text, tokens };
  }

  /** Tokens counted as generated (all pushed, including those of a stop sequence). */
  get tokenCount(): number {
    return this.entries.length;
  }
}
