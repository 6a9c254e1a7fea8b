// The model card (README.md) of a fine-tuned folder: the card of the folder it was trained from
// (the strict export writes one) with a section on the recovery fine-tuning — what was trained,
// on what, and the held-out perplexity before and after — replacing any such section a resumed
// run's previous save added. The measurements above it describe the model before fine-tuning,
// which the section says.

export const FINETUNE_HEADING = '## Recovery fine-tuning (transmla finetune)';

/** What the card says of a run (a subset of finetune.ts's FinetuneReport). */
export interface CardFacts {
  step: number;
  finished: boolean;
  options: { steps: number; train: string; batch: number; seqLen: number; lr: number; schedule: string; kdWeight: number; teacher: string | null; seed: number };
  data: { source: string; sha256: string; rows: number; evalText: string; evalTokens: number };
  params: { total: number; trained: number };
  evals: { step: number; ppl: number; kl: number | null; top1: number | null }[];
}

export function finetuneCard(sourceCard: string, r: CardFacts): string {
  const at = sourceCard.indexOf(`\n${FINETUNE_HEADING}\n`);
  const base = (at >= 0 ? sourceCard.slice(0, at) : sourceCard).replace(/\s*$/, '\n');
  const o = r.options;
  const rows = r.evals.map((e) => `| ${e.step} | ${e.ppl.toFixed(4)} | ${e.kl === null ? '–' : e.kl.toFixed(5)} | ${e.top1 === null ? '–' : `${(100 * e.top1).toFixed(2)} %`} |`);
  return [
    base,
    FINETUNE_HEADING,
    '',
    `The weights were then fine-tuned ${r.finished ? `for ${r.step} steps` : `for ${r.step} of ${o.steps} steps (a resumable checkpoint)`}: ` +
      `${o.train === 'attention' ? 'the attention tensors the conversion rewrote' : 'every parameter'} (${r.params.trained.toLocaleString('en-US')} of ${r.params.total.toLocaleString('en-US')}), ` +
      `${o.batch} rows × ${o.seqLen} tokens per step, lr ${o.lr} (${o.schedule}), seed ${o.seed}, ` +
      `${o.kdWeight > 0 ? `loss ${(1 - o.kdWeight).toFixed(2)}·CE + ${o.kdWeight.toFixed(2)}·KL to ${o.teacher}` : 'next-token cross-entropy'}, ` +
      `on ${r.data.source} (sha256 ${r.data.sha256.slice(0, 12)}…, ${r.data.rows} rows). The measurements above are of the model before fine-tuning; ` +
      'the tensor set, config.json and tokenizer files are unchanged.',
    '',
    `Held-out perplexity on ${r.data.evalText} (${r.data.evalTokens} tokens, transmla engine):`,
    '',
    '| step | ppl | KL(teacher ‖ model) | top-1 agreement |',
    '|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}
