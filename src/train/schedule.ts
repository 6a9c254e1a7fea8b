// Learning-rate schedules, as a function of the update step (0-based; the lr used for it):
// - 'cosine': linear warmup to the peak, then cosine decay to minRatio·peak at the last step
//   (TransMLA's recipe, docs/methods.md#fine-tuning);
// - 'wsd': warmup, stable at the peak, then a "1 − sqrt" decay to minRatio·peak over the last
//   `decay` fraction of the steps (MHA2MLA's recipe, docs/methods.md#fine-tuning);
// - 'constant': warmup, then the peak.
import { OptionError } from '../option-error.js';
export type ScheduleKind = 'cosine' | 'wsd' | 'constant';

export interface ScheduleConfig {
  kind: ScheduleKind;
  peakLr: number;
  totalSteps: number;
  warmupSteps: number;
  /** Final lr as a fraction of the peak (cosine, wsd). */
  minRatio: number;
  /** wsd: fraction of totalSteps spent decaying. */
  decayFraction: number;
}

export function checkSchedule(s: ScheduleConfig): void {
  if (!(s.peakLr > 0)) throw new OptionError(`--lr must be positive, got ${s.peakLr}`);
  if (!Number.isInteger(s.totalSteps) || s.totalSteps < 1) throw new OptionError(`--steps must be a positive integer, got ${s.totalSteps}`);
  if (!Number.isInteger(s.warmupSteps) || s.warmupSteps < 0 || s.warmupSteps > s.totalSteps) throw new Error(`warmup of ${s.warmupSteps} steps does not fit ${s.totalSteps} steps`);
  if (!(s.minRatio >= 0 && s.minRatio <= 1)) throw new OptionError(`--min-lr-ratio must be in [0, 1], got ${s.minRatio}`);
  if (!(s.decayFraction > 0 && s.decayFraction <= 1)) throw new OptionError(`--decay must be in (0, 1], got ${s.decayFraction}`);
}

export function lrAt(s: ScheduleConfig, step: number): number {
  const { peakLr: peak, totalSteps: N, warmupSteps: W } = s;
  if (step < W) return (peak * (step + 1)) / W;
  const min = s.minRatio * peak;
  if (s.kind === 'constant') return peak;
  if (s.kind === 'cosine') {
    const span = N - W;
    const p = span <= 1 ? 1 : (step - W) / (span - 1);
    return min + (peak - min) * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, p)));
  }
  const D = Math.max(1, Math.round(s.decayFraction * N));
  const start = Math.max(W, N - D);
  if (step < start) return peak;
  const p = Math.min(1, (step - start + 1) / (N - start));
  return min + (peak - min) * (1 - Math.sqrt(p));
}
