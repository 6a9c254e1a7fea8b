// Conversion profiles: the defaults `convert` fills in for what the user did not set. 'fast' is
// the default and is sized for a 7–8 B model on an ordinary CPU; 'faithful' is TransMLA's own
// recipe (docs/conversion.md#profiles has what each costs, measured).
import type { ConvertOptions } from './transmla.js';

export const PROFILE_NAMES = ['fast', 'faithful'] as const;
export type ProfileName = (typeof PROFILE_NAMES)[number];

type ProfileDefaults = Pick<ConvertOptions, 'calibSamples' | 'calibSeqLen' | 'calibOrder' | 'search' | 'evalTokens'>;

export const PROFILES: Record<ProfileName, ProfileDefaults> = {
  // 16K calibration tokens, shapes scored by the per-layer attention-output proxy in the
  // streaming sweep, 8,192 evaluation tokens per text (whole chunks of the evaluation context:
  // 8 × 1024 for a 1K-context model, 4 × 2048 beyond). The evaluation runs every stage (4 with
  // the stock one) through the model, so its tokens cost 4× calibration tokens.
  fast: { calibSamples: 64, calibSeqLen: 256, calibOrder: 'faithful', search: 'proxy', evalTokens: 8192 },
  // TransMLA: 128 × 256 calibration tokens, two passes, FreqFold (and d_R) searched by held-out
  // perplexity of whole candidate models, every chunk of each evaluation text.
  faithful: { calibSamples: 128, calibSeqLen: 256, calibOrder: 'faithful', search: 'perplexity', evalTokens: undefined },
};

/** The options with the profile's defaults under everything given explicitly. */
export function withProfile<T extends Partial<ProfileDefaults>>(profile: ProfileName, o: T): T & ProfileDefaults {
  const d = PROFILES[profile];
  const out = { ...o } as T & ProfileDefaults;
  for (const k of Object.keys(d) as (keyof ProfileDefaults)[]) if (out[k] === undefined) (out as Record<string, unknown>)[k] = d[k];
  return out;
}
