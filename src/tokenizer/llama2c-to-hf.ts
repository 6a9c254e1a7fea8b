// A llama2.c / SentencePiece vocabulary as a Hugging Face tokenizer.json (BPE with merges ordered
// by piece score, byte fallback, "▁" normalisation) plus tokenizer_config and special-tokens map:
// what `transmla import-llama2c` writes beside the weights.
import { TokenizerFormatError } from './common.js';
import { hfPieceText, Llama2cTokenizer, TokenKind, type Llama2cVocab } from './llama2c-tokenizer.js';

/**
 * BPE merges equivalent to score-greedy merging: every split of a piece into two
 * vocabulary pieces is a merge, ranked by the merged piece's score (higher first).
 * Within equal scores the order is by merged-piece id, then by the ids of the two
 * parts — the order transformers' SentencePiece converter produces.
 */
export function mergesFromScores(vocab: Llama2cVocab): [string, string][] {
  const pieces = vocab.texts.map((_, i) => hfPieceText(vocab, i));
  const ids = new Map<string, number>();
  const isMergeable = (k: number): boolean => k === TokenKind.Normal || k === TokenKind.UserDefined;
  pieces.forEach((p, i) => {
    if (isMergeable(vocab.kinds[i]!) && !ids.has(p)) ids.set(p, i);
  });
  const all: { l: string; r: string; score: number; order: number }[] = [];
  pieces.forEach((p, i) => {
    if (!isMergeable(vocab.kinds[i]!)) return;
    const cps = Array.from(p);
    const local: { l: string; r: string; li: number; ri: number }[] = [];
    for (let s = 1; s < cps.length; s++) {
      const l = cps.slice(0, s).join('');
      const r = cps.slice(s).join('');
      const li = ids.get(l);
      const ri = ids.get(r);
      if (li !== undefined && ri !== undefined) local.push({ l, r, li, ri });
    }
    local.sort((a, b) => a.li - b.li || a.ri - b.ri);
    for (const m of local) all.push({ l: m.l, r: m.r, score: vocab.scores[i]!, order: all.length });
  });
  all.sort((a, b) => b.score - a.score || a.order - b.order);
  return all.map((m) => [m.l, m.r]);
}

export interface HfTokenizerFiles {
  'tokenizer.json': Record<string, unknown>;
  'tokenizer_config.json': Record<string, unknown>;
  'special_tokens_map.json': Record<string, unknown>;
}

/**
 * A Hugging Face tokenizer (SentencePiece-style BPE: "▁" normalisation with a prepended
 * "▁", byte fallback, merges from scores) that encodes like `tok`.
 */
export function toHfTokenizerFiles(tok: Llama2cTokenizer, maxLength: number): HfTokenizerFiles {
  const vocab = tok.vocab;
  const pieces = vocab.texts.map((_, i) => hfPieceText(vocab, i));
  const seen = new Map<string, number>();
  pieces.forEach((p, i) => {
    const first = seen.get(p);
    if (first !== undefined) throw new TokenizerFormatError(tok.file, `piece "${p}" appears twice (ids ${first} and ${i}); a tokenizer.json vocabulary needs unique pieces`);
    seen.set(p, i);
  });
  // fromEntries defines own properties, so pieces such as "__proto__" stay ordinary keys.
  const vocabObj = Object.fromEntries(seen);
  const specials = pieces.flatMap((p, i) => (tok.isSpecial(i) ? [{ id: i, content: p }] : []));
  const added = specials.map((s) => ({ id: s.id, content: s.content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  const bos = tok.bosId === null ? null : pieces[tok.bosId]!;
  const eos = tok.eosId === null ? null : pieces[tok.eosId]!;
  const unk = tok.unkId === null ? null : pieces[tok.unkId]!;
  const replaceSpace = { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' };
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: tok.addDummyPrefix ? { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, replaceSpace] } : replaceSpace,
    pre_tokenizer: null,
    // For transformers users: adds BOS like LlamaTokenizerFast. Our loader bypasses it and adds BOS explicitly.
    post_processor:
      bos === null
        ? null
        : {
            type: 'TemplateProcessing',
            single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
            pair: [
              { SpecialToken: { id: bos, type_id: 0 } },
              { Sequence: { id: 'A', type_id: 0 } },
              { SpecialToken: { id: bos, type_id: 1 } },
              { Sequence: { id: 'B', type_id: 1 } },
            ],
            special_tokens: { [bos]: { id: bos, ids: [tok.bosId], tokens: [bos] } },
          },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(tok.addDummyPrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unk,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: tok.byteIds !== null,
      ignore_merges: false,
      vocab: vocabObj,
      merges: mergesFromScores(vocab),
    },
  };
  const addedDecoder: Record<string, unknown> = {};
  for (const a of added) {
    const { id, ...rest } = a;
    addedDecoder[String(id)] = rest;
  }
  const tokenizerConfig = {
    add_bos_token: bos !== null,
    add_eos_token: false,
    bos_token: bos,
    eos_token: eos,
    unk_token: unk,
    pad_token: null,
    clean_up_tokenization_spaces: false,
    legacy: true,
    model_max_length: maxLength,
    tokenizer_class: 'LlamaTokenizer',
    sp_model_kwargs: {},
    added_tokens_decoder: addedDecoder,
  };
  const specialTokensMap: Record<string, string> = {};
  if (bos !== null) specialTokensMap.bos_token = bos;
  if (eos !== null) specialTokensMap.eos_token = eos;
  if (unk !== null) specialTokensMap.unk_token = unk;
  return { 'tokenizer.json': tokenizerJson, 'tokenizer_config.json': tokenizerConfig, 'special_tokens_map.json': specialTokensMap };
}
