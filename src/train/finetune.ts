// Recovery fine-tuning of a (converted) model: the training loop, its evaluations and its
// checkpoints.
//
// One optimizer step draws `batch` packed rows (data.ts) and runs them one at a time through
// forward + backward, accumulating gradients (memory does not grow with the batch), with the
// loss averaged over every target of the batch. Optionally a teacher (the original model, run
// by the engine on the same documents) supplies next-token distributions, and the loss mixes
// CE with KL(teacher ‖ student) (loss.ts). Then global-norm clipping, AdamW, the schedule.
//
// Evaluation (before training, every --eval-every steps, at the end) uses the engine itself:
// an engine model built over the fp32 master weights (same memory, so it always sees the
// current weights) scores held-out text in the convention of eval/perplexity.ts, and with a
// teacher eval/fidelity.ts adds KL(teacher ‖ student) and top-1 agreement on the same tokens.
//
// Everything is a function of the seed and the options, so two runs are byte-identical, and a
// run stopped at step k and resumed (--resume) equals the uninterrupted one.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { readDocuments } from '../convert/calibrate.js';
import { fidelity } from '../eval/fidelity.js';
import { perplexity, readEvalText, tokenizeEnough } from '../eval/perplexity.js';
import { createProgress } from '../io/progress.js';
import { readConfig, buildModel } from '../arch/registry.js';
import type { ModelArgs } from '../arch/args.js';
import type { MlaFields } from '../arch/deepseek.js';
import type { Mha2mlaFields } from '../arch/mha2mla.js';
import type { Decoder } from '../models/decoder.js';
import { loadModel } from '../arch/load.js';
import { checkOutputDir } from '../io/atomic-dir.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { interruptPoint, setStage } from '../io/interrupt.js';
import { kernels } from '../kernels/index.js';
import { loadTokenizer, type TextTokenizer } from '../tokenizer/tokenizer.js';
import { AdamW, clipGradNorm } from './adamw.js';
import { createBackend } from './backend.js';
import { finetuneCard } from './card.js';
import { loadOptimizerState, readTrainerState, resumeWeights, saveTrainingCheckpoint } from './checkpoint.js';
import { batchRows, packDocuments, readTokenFile, tokenizeDocuments } from './data.js';
import { TrainModel, type TrainRow } from './model.js';
import type { TrainSelection } from './params.js';
import { checkSchedule, lrAt, type ScheduleConfig, type ScheduleKind } from './schedule.js';

/** Options that define a run (saved in trainer_state.json; a resumed run reuses them). */
export interface RunOptions {
  /** The model trained from (an HF folder: a converted MLA model, or a Llama-family one). */
  model: string;
  /** Training text (.txt: blank-line-separated documents; .jsonl: "text" fields)… */
  text: string | null;
  /** …or a token file (data.ts readTokenFile). */
  tokens: string | null;
  /** Evaluation text; null holds out the last 10 % of the training documents. */
  evalText: string | null;
  /** Original model for distillation and for the reported KL. */
  teacher: string | null;
  /** Distillation weight α (0: plain LM loss). */
  kdWeight: number;
  train: TrainSelection;
  steps: number;
  batch: number;
  seqLen: number;
  lr: number;
  schedule: ScheduleKind;
  /** Warmup as a fraction of the steps. */
  warmup: number;
  minLrRatio: number;
  /** wsd: fraction of the steps spent decaying. */
  decay: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Global gradient-norm clip (0: off). */
  clip: number;
  seed: number;
  /** Evaluate every N steps (0: only before and after). */
  evalEvery: number;
  evalCtx: number;
  evalChunks: number;
  /** Save a resumable checkpoint every N steps (0: only at the end). */
  saveEvery: number;
}

export interface FinetuneOptions extends Partial<RunOptions> {
  model?: string;
  /** Output folder (always holds the latest checkpoint); null: train without saving. */
  out?: string | null;
  overwrite?: boolean;
  /** Continue the run saved in this folder (its options are used; output goes back there). */
  resume?: string;
  /** Save and stop after this many steps (the run can be resumed later). */
  stopAt?: number;
  log?: (line: string) => void;
  /** Show a progress bar on stderr (default true). */
  progress?: boolean;
  /** Tokenized training documents, when the caller already has them (benchmarks reuse one tokenization). */
  documents?: Int32Array[];
  /** Token ids of --eval-text, when the caller already has them (tokenizeForPerplexity of that text). */
  evalTokens?: { ids: number[]; bos: boolean };
  /** Evaluate before the first step (default true; a caller that already scored the model may skip it). */
  evalAtStart?: boolean;
}

export const DEFAULTS: Omit<RunOptions, 'model' | 'text' | 'tokens' | 'evalText' | 'teacher'> = {
  kdWeight: 0, train: 'attention', steps: 100, batch: 8, seqLen: 256, lr: 1e-4, schedule: 'cosine',
  warmup: 0.05, minLrRatio: 0.1, decay: 0.2, weightDecay: 0, beta1: 0.9, beta2: 0.95, eps: 1e-8,
  clip: 1, seed: 42, evalEvery: 0, evalCtx: 256, evalChunks: 32, saveEvery: 0,
};

export interface StepRecord {
  step: number;
  /** Mixed loss (1−α)·CE + α·KL, batch mean. */
  loss: number;
  ce: number;
  kl: number | null;
  lr: number;
  gradNorm: number;
  /** Tokens processed so far (rows × seqLen). */
  tokens: number;
}

export interface EvalRecord {
  step: number;
  ppl: number;
  nll: number;
  /** KL(teacher ‖ model) and top-1 agreement, with a teacher. */
  kl: number | null;
  top1: number | null;
  teacherPpl: number | null;
  seconds: number;
}

export interface Throughput {
  /** Training tokens (rows × seqLen) per second of step time (teacher forward included). */
  tokensPerSecond: number;
  /** GEMM FLOPs the trainer's forward+backward executed, per second of its own time. */
  gemmGflops: number;
  /** Training tokens per second of student forward+backward+update only. */
  studentTokensPerSecond: number;
  /** FLOPs the engine's count gives for one forward token of the trained model (2·params + attention). */
  forwardFlopsPerToken: number;
  stepSeconds: number;
  studentSeconds: number;
  teacherSeconds: number;
  gemmFlops: number;
  tokens: number;
  /** The GEMM backend (native addon or the TypeScript fallback). */
  kernels: 'native' | 'ts';
}

export interface FinetuneReport {
  format: 'transmla-finetune/1';
  step: number;
  options: RunOptions;
  data: { source: string; sha256: string; documents: number; heldOutDocuments: number; rows: number; targets: number; evalText: string; evalTokens: number };
  params: { total: number; trained: number; trainedTensors: number };
  history: StepRecord[];
  evals: EvalRecord[];
  throughput: Throughput;
  output: string | null;
  finished: boolean;
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** The arguments of an HF folder of any family (fine-tuning reads HF folders only). */
export function readTrainArch(dir: string): ModelArgs {
  if (!existsSync(join(dir, 'config.json'))) throw new Error(`${dir}: not a Hugging Face model folder (no config.json); fine-tuning takes HF folders (import llama2.c / GGUF models first)`);
  return readConfig(dir);
}

/** An engine model over the trainer's fp32 master weights (shared memory, no copy). */
function engineModel(model: TrainModel): Decoder {
  return buildModel(model.arch, model.params.asWeightSource());
}

function checkOptions(o: RunOptions): void {
  const posInt = (k: keyof RunOptions, min: number): void => {
    const v = o[k] as number;
    if (!Number.isInteger(v) || v < min) throw new Error(`${k} must be an integer ≥ ${min}, got ${v}`);
  };
  posInt('steps', 1); posInt('batch', 1); posInt('seqLen', 2); posInt('evalCtx', 2); posInt('evalChunks', 1);
  posInt('evalEvery', 0); posInt('saveEvery', 0); posInt('seed', 0);
  if ((o.text === null) === (o.tokens === null)) throw new Error('give exactly one of --text FILE and --tokens FILE');
  if (!(o.kdWeight >= 0 && o.kdWeight <= 1)) throw new Error(`--kd-weight must be in [0, 1], got ${o.kdWeight}`);
  if (o.kdWeight > 0 && !o.teacher) throw new Error('--kd-weight > 0 needs --teacher (the model to distill from)');
  if (o.train !== 'attention' && o.train !== 'all') throw new Error(`--train must be attention or all, got ${String(o.train)}`);
  if (!(o.warmup >= 0 && o.warmup <= 1)) throw new Error(`--warmup must be a fraction of the steps in [0, 1], got ${o.warmup}`);
  for (const k of ['beta1', 'beta2'] as const) if (!(o[k] >= 0 && o[k] < 1)) throw new Error(`${k} must be in [0, 1), got ${o[k]}`);
  if (!(o.eps > 0) || !(o.weightDecay >= 0) || !(o.clip >= 0)) throw new Error('eps must be > 0, weight decay and clip ≥ 0');
}

export async function finetune(input: FinetuneOptions): Promise<FinetuneReport> {
  const log = input.log ?? (() => {});
  // --- Options: from a resumed checkpoint, or the caller's over the defaults.
  let o: RunOptions;
  let prior: { step: number; history: StepRecord[]; evals: EvalRecord[]; throughput: Throughput } | null = null;
  let weightsDir: string;
  let out: string | null;
  if (input.resume) {
    const state = readTrainerState(input.resume) as unknown as FinetuneReport;
    if (state.format !== 'transmla-finetune/1' || typeof state.step !== 'number' || !state.options) throw new Error(`${input.resume}: trainer_state.json is not a transmla fine-tuning state`);
    o = state.options;
    prior = { step: state.step, history: state.history, evals: state.evals, throughput: state.throughput };
    weightsDir = input.resume;
    out = input.resume;
    if (input.out && resolve(input.out) !== resolve(input.resume)) throw new Error('a resumed run saves back into its --resume folder; leave out --out');
  } else {
    if (!input.model) throw new Error('no model to fine-tune');
    o = { ...DEFAULTS, text: null, tokens: null, evalText: null, teacher: null, ...stripUndefined(input), model: resolve(input.model) } as RunOptions;
    // Absolute paths, so a saved run resumes from any working directory.
    for (const k of ['text', 'tokens', 'evalText', 'teacher'] as const) if (o[k] !== null) o[k] = resolve(o[k]!);
    weightsDir = o.model;
    out = input.out ? resolve(input.out) : null;
  }
  checkOptions(o);
  // Every file the run reads; the output folder must not be or contain one (a resumed run
  // saves over its own folder by design, so that one is not listed).
  const inputs = [...(prior ? [] : [o.model]), ...(['text', 'tokens', 'evalText', 'teacher'] as const).map((k) => o[k]).filter((x): x is string => x !== null)];
  if (input.stopAt !== undefined && !(Number.isInteger(input.stopAt) && input.stopAt >= 1)) throw new Error(`stopAt must be a positive integer, got ${input.stopAt}`);
  if (prior && prior.step >= o.steps) throw new Error(`${input.resume} already finished all ${o.steps} steps`);
  // A bad --out fails now, before the model, the teacher and the data are read.
  if (out) checkOutputDir(out, { overwrite: prior !== null || input.overwrite === true, source: inputs });

  // --- Model, tokenizer, teacher.
  const arch = readTrainArch(weightsDir);
  const cfg = arch;
  const be = createBackend('f32');
  let model: TrainModel;
  if (prior) {
    const w = resumeWeights(weightsDir);
    try { model = TrainModel.create(be, arch, w.src, o.train, w.dtypeOf); } finally { w.close(); }
  } else {
    const ck = openCheckpoint(weightsDir);
    try { model = TrainModel.create(be, arch, ck, o.train); } finally { ck.close(); }
  }
  const trained = model.params.trainable();
  if (trained.length === 0) throw new Error(`--train ${o.train} selects no parameters of ${o.model}`);
  // A token file needs no tokenizer (BOS/EOS then come from config.json); text does.
  const hasTok = ['tokenizer.json', 'tokenizer.model', 'tokenizer.bin'].some((f) => existsSync(join(weightsDir, f)));
  const tok: TextTokenizer | null = hasTok ? loadTokenizer(weightsDir) : null;
  const needTok = (what: string): TextTokenizer => {
    if (!tok) throw new Error(`${weightsDir} has no tokenizer, which ${what} needs`);
    return tok;
  };
  const bosId = tok ? tok.bosId : cfg.bosTokenId;
  const eosId = tok ? tok.eosId : typeof cfg.eosTokenId === 'number' ? cfg.eosTokenId : null;
  const teacher = o.teacher ? loadModel(o.teacher).model : null;
  if (teacher && teacher.config.vocabSize !== cfg.vocabSize) throw new Error(`the teacher has a vocabulary of ${teacher.config.vocabSize}, the model ${cfg.vocabSize}`);
  if (o.seqLen > cfg.maxPositionEmbeddings) log(`warning: --seqlen ${o.seqLen} exceeds the model's ${cfg.maxPositionEmbeddings} trained positions`);

  // --- Data.
  const dataPath = resolve((o.text ?? o.tokens)!);
  let docs: Int32Array[];
  if (input.documents && !prior) docs = input.documents;
  else if (o.text) docs = await tokenizeDocuments(needTok('--text'), readDocuments(o.text));
  else docs = readTokenFile(o.tokens!, cfg.vocabSize, bosId);
  const nHeld = o.evalText === null ? Math.max(1, Math.round(docs.length * 0.1)) : 0;
  if (o.evalText === null && docs.length < 2) throw new Error('holding out evaluation documents needs at least 2 training documents (or give --eval-text)');
  const trainDocs = docs.slice(0, docs.length - nHeld);
  const packed = packDocuments(trainDocs, o.seqLen, eosId ?? 0);
  let evalIds: number[], evalBos: boolean, evalName: string;
  if (o.evalText) {
    const r = input.evalTokens && !prior ? input.evalTokens : await tokenizeEnough(needTok('--eval-text'), readEvalText(o.evalText).text, undefined);
    evalIds = r.ids; evalBos = r.bos; evalName = resolve(o.evalText);
  } else {
    evalIds = docs.slice(docs.length - nHeld).flatMap((d) => [...d]);
    evalBos = bosId !== null && evalIds[0] === bosId;
    evalName = `${dataPath} (last ${nHeld} documents, held out)`;
  }
  const evalCtx = Math.min(o.evalCtx, evalIds.length);
  const dataInfo: FinetuneReport['data'] = {
    source: dataPath, sha256: sha256(dataPath), documents: trainDocs.length, heldOutDocuments: nHeld,
    rows: packed.rows.length, targets: packed.targets, evalText: evalName, evalTokens: Math.min(evalIds.length, evalCtx * o.evalChunks),
  };
  if (prior) {
    const saved = (readTrainerState(input.resume!) as unknown as FinetuneReport).data;
    if (saved.sha256 !== dataInfo.sha256 || saved.rows !== dataInfo.rows) throw new Error(`${dataPath} changed since the run was saved (sha256 or row count differs); cannot resume exactly`);
  }

  const sched: ScheduleConfig = {
    kind: o.schedule, peakLr: o.lr, totalSteps: o.steps, warmupSteps: Math.round(o.warmup * o.steps),
    minRatio: o.minLrRatio, decayFraction: o.decay,
  };
  checkSchedule(sched);
  const opt = new AdamW({ beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.weightDecay }, trained, be);
  if (prior) loadOptimizerState(weightsDir, opt);
  const engine = engineModel(model);
  const paramsInfo = { total: model.params.count('all'), trained: model.params.count('trainable'), trainedTensors: trained.length };
  const { mla, mha2mla } = arch as ModelArgs & { mla?: MlaFields; mha2mla?: Mha2mlaFields };
  const kind = mla ? `MLA r=${mla.kvLoraRank} d_R=${mla.qkRopeHeadDim}`
    : mha2mla ? `MHA2MLA r=${mha2mla.kvLoraRank}, ${mha2mla.ropePairsPerHead} RoPE pairs per KV head` : `Llama ${cfg.numHeads}/${cfg.numKvHeads} heads`;
  log(`model: ${o.model} (${kind}, ${cfg.numLayers} layers), training ${o.train}: ${paramsInfo.trained} of ${paramsInfo.total} parameters`);
  log(`data: ${dataPath}: ${trainDocs.length} documents → ${packed.rows.length} rows × ${o.seqLen} (${packed.targets} targets); ${o.steps} steps × ${o.batch} rows = ${o.steps * o.batch * o.seqLen} tokens`);
  log(`loss: ${o.kdWeight > 0 ? `${(1 - o.kdWeight).toFixed(2)}·CE + ${o.kdWeight.toFixed(2)}·KL(teacher ‖ model), teacher ${o.teacher}` : 'CE (next-token)'}; lr ${o.lr} ${o.schedule}, warmup ${sched.warmupSteps} steps; eval on ${evalName}`);

  // --- State.
  const history: StepRecord[] = prior ? [...prior.history] : [];
  const evals: EvalRecord[] = prior ? [...prior.evals] : [];
  const tp = prior?.throughput;
  let stepSecs = tp?.stepSeconds ?? 0, studentSecs = tp?.studentSeconds ?? 0, teacherSecs = tp?.teacherSeconds ?? 0;
  let gemmFlops = tp?.gemmFlops ?? 0, tokensDone = tp?.tokens ?? 0;
  const throughput = (): Throughput => ({
    tokensPerSecond: tokensDone / Math.max(stepSecs, 1e-9),
    gemmGflops: gemmFlops / Math.max(studentSecs, 1e-9) / 1e9,
    studentTokensPerSecond: tokensDone / Math.max(studentSecs, 1e-9),
    forwardFlopsPerToken: engine.flops(o.seqLen, 0) / o.seqLen,
    stepSeconds: stepSecs, studentSeconds: studentSecs, teacherSeconds: teacherSecs, gemmFlops, tokens: tokensDone,
    kernels: kernels().backend,
  });
  let step = prior?.step ?? 0;
  const report = (finished: boolean): FinetuneReport => ({
    format: 'transmla-finetune/1', step, options: o, data: dataInfo, params: paramsInfo, history, evals, throughput: throughput(), output: out, finished,
  });
  // The output folder always holds the latest checkpoint: each save replaces the previous one.
  let saved = false;
  const save = async (finished: boolean): Promise<void> => {
    if (!out) return;
    const cardPath = join(weightsDir, 'README.md');
    const state = report(finished);
    await saveTrainingCheckpoint({
      dir: out, sourceDir: weightsDir, protect: inputs,
      files: existsSync(cardPath) ? [{ name: 'README.md', text: finetuneCard(readFileSync(cardPath, 'utf8'), state) }] : [],
      overwrite: prior !== null || input.overwrite === true || saved,
      params: model.params, optimizer: opt, state,
    });
    saved = true;
  };

  const evaluate = async (): Promise<void> => {
    const t0 = performance.now();
    const maxChunks = o.evalChunks;
    let rec: EvalRecord;
    if (teacher) {
      const f = await fidelity(teacher, [engine], evalIds, evalBos, { ctx: evalCtx, maxChunks });
      const s = f.models[0]!;
      rec = { step, ppl: s.ppl, nll: s.nll, kl: s.kl, top1: s.top1, teacherPpl: f.reference.ppl, seconds: 0 };
    } else {
      const r = await perplexity(engine, evalIds, evalBos, { ctx: evalCtx, maxChunks });
      rec = { step, ppl: r.ppl, nll: r.nll, kl: null, top1: null, teacherPpl: null, seconds: 0 };
    }
    rec.seconds = (performance.now() - t0) / 1000;
    evals.push(rec);
    log(`eval @ step ${step}: ppl ${rec.ppl.toFixed(3)}${rec.kl !== null ? `  KL ${rec.kl.toFixed(4)}  top-1 ${(100 * rec.top1!).toFixed(1)} %  (teacher ppl ${rec.teacherPpl!.toFixed(3)})` : ''}  [${rec.seconds.toFixed(1)} s]`);
  };

  if (!prior && input.evalAtStart !== false) await evaluate();
  const V = cfg.vocabSize;
  const teacherLogits = o.kdWeight > 0 ? new Float32Array(o.seqLen * V) : null;
  const bar = input.progress === false ? null : createProgress({ label: 'finetune', total: o.steps * o.batch * o.seqLen, unit: 'tokens' });
  bar?.update(step * o.batch * o.seqLen);
  const stopAt = input.stopAt !== undefined ? Math.min(input.stopAt, o.steps) : o.steps;
  try {
    while (step < stopAt) {
      const t0 = performance.now();
      setStage(`training step ${step + 1}/${o.steps}`);
      const rows = batchRows(packed.rows.length, o.batch, step, o.seed).map((i) => packed.rows[i]!);
      let count = 0;
      for (const r of rows) for (let t = 0; t < r.T; t++) if (r.targets[t]! >= 0) count++;
      if (count === 0) throw new Error(`step ${step + 1} has no targets`);
      model.params.zeroGrads();
      let ce = 0, kl = 0, tTeacher = 0;
      const f0 = be.flops;
      for (const r of rows) {
        if (teacherLogits) {
          const tt = performance.now();
          teacherForward(teacher!, r, teacherLogits);
          tTeacher += (performance.now() - tt) / 1000;
        }
        const s = model.forwardBackward(r, { teacher: teacherLogits, alpha: o.kdWeight, scale: 1 / count });
        ce += s.ce; kl += s.kl;
      }
      const gradNorm = clipGradNorm(trained, o.clip);
      const lr = lrAt(sched, step);
      opt.step(lr);
      step++;
      const secs = (performance.now() - t0) / 1000;
      stepSecs += secs; teacherSecs += tTeacher; studentSecs += secs - tTeacher;
      gemmFlops += be.flops - f0;
      tokensDone += rows.length * o.seqLen;
      const ceMean = ce / count, klMean = teacher && o.kdWeight > 0 ? kl / count : null;
      history.push({ step, loss: (1 - o.kdWeight) * ceMean + o.kdWeight * (klMean ?? 0), ce: ceMean, kl: klMean, lr, gradNorm, tokens: tokensDone });
      bar?.update(step * o.batch * o.seqLen);
      // A signal stops between steps; the folder keeps the last saved checkpoint (atomic saves).
      await interruptPoint();
      if ((o.evalEvery > 0 && step % o.evalEvery === 0) || step === o.steps) await evaluate();
      if (o.saveEvery > 0 && step % o.saveEvery === 0 && step < stopAt) await save(false);
    }
  } finally {
    bar?.finish();
  }
  const finished = step === o.steps;
  await save(finished);
  if (out) log(`saved ${finished ? 'final' : `resumable (step ${step}/${o.steps})`} checkpoint to ${out}`);
  return report(finished);
}

/** Teacher logits on each document segment of a row (the teacher never sees across documents). */
function teacherForward(teacher: Decoder, r: TrainRow, out: Float32Array): void {
  const V = teacher.config.vocabSize;
  const cache = teacher.newCache();
  for (let s = 0; s < r.segments.length; s++) {
    const a = r.segments[s]!, b = s + 1 < r.segments.length ? r.segments[s + 1]! : r.T;
    let any = false;
    for (let t = a; t < b; t++) if (r.targets[t]! >= 0) { any = true; break; }
    if (!any) continue;
    const h = teacher.hidden(r.tokens.subarray(a, b), cache, 0);
    teacher.logitsFromHidden(h, b - a, out.subarray(a * V, b * V));
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const keys: (keyof RunOptions)[] = ['text', 'tokens', 'evalText', 'teacher', 'kdWeight', 'train', 'steps', 'batch', 'seqLen', 'lr', 'schedule', 'warmup', 'minLrRatio', 'decay', 'weightDecay', 'beta1', 'beta2', 'eps', 'clip', 'seed', 'evalEvery', 'evalCtx', 'evalChunks', 'saveEvery'];
  const out: Record<string, unknown> = {};
  for (const k of keys) {
    const v = (o as Record<string, unknown>)[k];
    if (v !== undefined) out[k] = v;
  }
  return out as Partial<T>;
}
