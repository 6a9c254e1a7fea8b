// transmla finetune <model> --text FILE: recovery fine-tuning (optionally distillation) of a
// converted model, with evaluations, a loss curve and resumable checkpoints.
import { resolve } from 'node:path';
import { bool, int, num, oneOf, onePositional, parseArgs, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { DEFAULTS, finetune, type FinetuneReport } from '../../train/finetune.js';
import { lossCurve } from '../../train/loss-curve.js';
import type { ScheduleKind } from '../../train/schedule.js';
import { HUB_FLAGS, modelArg } from '../model-arg.js';
import { checkOutputDir } from '../../io/atomic-dir.js';

const D = DEFAULTS;

export const command: Command = {
  usage: 'transmla finetune <model> (--text FILE | --tokens FILE) [--out DIR] [--revision REV] [--teacher ORIGINAL] [--kd-weight A]\n' +
    `    [--train attention|all] [--steps ${D.steps}] [--batch ${D.batch}] [--seqlen ${D.seqLen}] [--lr ${D.lr}] [--schedule cosine|wsd|constant]\n` +
    `    [--warmup ${D.warmup}] [--min-lr-ratio ${D.minLrRatio}] [--decay ${D.decay}] [--weight-decay ${D.weightDecay}] [--beta1 ${D.beta1}] [--beta2 ${D.beta2}]\n` +
    `    [--clip ${D.clip}] [--seed ${D.seed}] [--eval-text FILE] [--eval-every N] [--eval-ctx ${D.evalCtx}] [--eval-chunks ${D.evalChunks}]\n` +
    '    [--save-every N] [--stop-at N] [--overwrite] [--json]\n' +
    '   or: transmla finetune --resume DIR [--stop-at N] [--json]\n' +
    '  --text: .txt (documents separated by blank lines) or .jsonl ("text" fields); --tokens: llm.c .bin, raw\n' +
    '    uint16 .bin/.u16 or uint32 .u32 (documents start at each BOS). Documents are packed into rows of --seqlen\n' +
    '    tokens; attention never crosses documents. --batch rows per step, accumulated one row at a time.\n' +
    '  --teacher: the original model. Evaluations then report KL(teacher ‖ model); with --kd-weight A > 0\n' +
    '    (default 0.5 when a teacher is given) the loss is (1−A)·CE + A·KL(teacher ‖ model).\n' +
    '  --train attention: only the attention tensors the conversion rewrote (all self_attn except o_proj\n' +
    '    for MLA models); all: every parameter.\n' +
    '  --eval-text: held-out text for perplexity (default: the last 10 % of the training documents).\n' +
    '  --warmup is a fraction of --steps; --decay is the wsd decay fraction; --min-lr-ratio the final lr / peak.\n' +
    '  --out DIR always holds the latest checkpoint: an HF folder plus trainer/optimizer.safetensors and\n' +
    '    trainer_state.json; --stop-at N saves after N steps, and --resume DIR continues the run exactly.',
  async run(argv) {
    const p = parseArgs(argv, {
      text: 'string', tokens: 'string', out: 'string', teacher: 'string', 'kd-weight': 'string', train: 'string',
      steps: 'string', batch: 'string', seqlen: 'string', lr: 'string', schedule: 'string', warmup: 'string',
      'min-lr-ratio': 'string', decay: 'string', 'weight-decay': 'string', beta1: 'string', beta2: 'string', clip: 'string',
      seed: 'string', 'eval-text': 'string', 'eval-every': 'string', 'eval-ctx': 'string', 'eval-chunks': 'string',
      'save-every': 'string', 'stop-at': 'string', resume: 'string', overwrite: 'boolean', json: 'boolean', ...HUB_FLAGS,
    });
    const json = bool(p, 'json');
    const log = (line: string): void => { (json ? process.stderr : process.stdout).write(line + '\n'); };
    const resume = str(p, 'resume');
    let rep: FinetuneReport;
    if (resume) {
      const allowed = new Set(['resume', 'stop-at', 'json']);
      const extra = [...p.flags.keys()].filter((k) => !allowed.has(k));
      if (extra.length > 0 || p.positionals.length > 0) throw new UsageError(`--resume continues the saved run with its own options; drop ${[...extra.map((k) => `--${k}`), ...p.positionals].join(', ')}`);
      rep = await finetune({ resume: resolve(resume), stopAt: int(p, 'stop-at', undefined, 1), log });
    } else {
      const spec = onePositional(p, 'model');
      const schedule = oneOf<ScheduleKind>(p, 'schedule', ['cosine', 'wsd', 'constant'], D.schedule);
      const train = oneOf(p, 'train', ['attention', 'all'] as const, D.train);
      const teacherSpec = str(p, 'teacher') ?? null;
      if (str(p, 'text') && str(p, 'tokens')) throw new UsageError('give --text FILE or --tokens FILE, not both');
      if (!str(p, 'text') && !str(p, 'tokens')) throw new UsageError('--text FILE or --tokens FILE is required');
      const kdWeight = num(p, 'kd-weight', teacherSpec ? 0.5 : 0, { ge: 0, le: 1 })!;
      if (kdWeight > 0 && !teacherSpec) throw new UsageError('--kd-weight > 0 needs --teacher (the model to distill from)');
      const ranged = {
        lr: num(p, 'lr', D.lr, { gt: 0 }),
        warmup: num(p, 'warmup', D.warmup, { ge: 0, le: 1 }),
        minLrRatio: num(p, 'min-lr-ratio', D.minLrRatio, { ge: 0, le: 1 }),
        decay: num(p, 'decay', D.decay, { gt: 0, le: 1 }),
        weightDecay: num(p, 'weight-decay', D.weightDecay, { ge: 0 }),
        beta1: num(p, 'beta1', D.beta1, { ge: 0, lt: 1 }),
        beta2: num(p, 'beta2', D.beta2, { ge: 0, lt: 1 }),
        clip: num(p, 'clip', D.clip, { ge: 0 }),
      };
      const steps = {
        steps: int(p, 'steps', D.steps, 1),
        batch: int(p, 'batch', D.batch, 1),
        seqLen: int(p, 'seqlen', D.seqLen, 2),
        seed: int(p, 'seed', D.seed),
        evalEvery: int(p, 'eval-every', D.evalEvery),
        evalCtx: int(p, 'eval-ctx', D.evalCtx, 2),
        evalChunks: int(p, 'eval-chunks', D.evalChunks, 1),
        saveEvery: int(p, 'save-every', D.saveEvery),
        stopAt: int(p, 'stop-at', undefined, 1),
      };
      // Before a Hub model is fetched (finetune checks again, against the inputs).
      const out = str(p, 'out');
      if (out) checkOutputDir(out, { overwrite: bool(p, 'overwrite') });
      const model = await modelArg(spec, p);
      const teacher = teacherSpec === null ? null : await modelArg(teacherSpec, p, { flag: 'teacher' });
      rep = await finetune({
        model,
        out: str(p, 'out') ?? null,
        overwrite: bool(p, 'overwrite'),
        text: str(p, 'text') ?? null,
        tokens: str(p, 'tokens') ?? null,
        evalText: str(p, 'eval-text') ?? null,
        teacher,
        kdWeight,
        train,
        schedule,
        ...ranged,
        ...steps,
        log,
      });
    }
    if (json) {
      console.log(JSON.stringify(rep, null, 2));
      return;
    }
    printSummary(rep);
  },
};

function printSummary(r: FinetuneReport): void {
  console.log('');
  console.log(lossCurve(r.history.map((h) => h.loss), { label: `training loss (${r.options.kdWeight > 0 ? 'mixed CE/KL' : 'CE'}, per step)` }));
  console.log('');
  console.log(`evaluations on ${r.data.evalText} (${r.data.evalTokens} tokens):`);
  console.log('   step        ppl        KL   top-1');
  for (const e of r.evals) {
    console.log(`${String(e.step).padStart(7)} ${e.ppl.toFixed(3).padStart(10)} ${e.kl === null ? '        -' : e.kl.toFixed(4).padStart(9)} ${e.top1 === null ? '      -' : `${(100 * e.top1).toFixed(1).padStart(5)} %`}`);
  }
  const t = r.throughput;
  console.log(`throughput: ${t.tokensPerSecond.toFixed(0)} tokens/s per step (${t.studentTokensPerSecond.toFixed(0)} tokens/s forward+backward+update, ` +
    `${t.gemmGflops.toFixed(1)} GFLOP/s in GEMMs; teacher ${t.teacherSeconds.toFixed(1)} s of ${t.stepSeconds.toFixed(1)} s)`);
  console.log(r.finished ? `finished ${r.step} steps${r.output ? `; model in ${r.output}` : ''}` : `stopped at step ${r.step} of ${r.options.steps}; continue with: transmla finetune --resume ${r.output}`);
}
