// The skeleton every conversion and export follows, each method contributing only its step:
//   1. prepare the source    openSource: the model folder, its family's consent, its tokenizer,
//                            whole in memory (searches, evaluation) or one layer at a time;
//   2. calibration           calibrationSet / calibrationTokens: documents, the held-out split,
//                            the seeded samples (docs/methods.md#calibration);
//   3. per-layer step        the method's own (transmla.ts, mha2mla.ts, export/deepseek-v3.ts),
//                            over HiddenStates (calibrate.ts);
//   4. evaluation of stages  evaluateStages: every stage's perplexity, KL and top-1 on the same
//                            tokens of each evaluation text (docs/methods.md#evaluation);
//   5. output folder         writeModelFolder: atomic folder, tensors (the source's, a layer's
//                            attention replaced), config.json, tokenizer files, transmla.json,
//                            report.html.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { requireConversion, readConfig } from '../arch/registry.js';
import type { ModelArgs } from '../arch/args.js';
import { loadModel } from '../arch/load.js';
import type { ConversionMethod } from '../arch/family.js';
import { fidelity, type FidelityResult } from '../eval/fidelity.js';
import { readEvalText, tokenizeEnough } from '../eval/perplexity.js';

export { tokenizeEnough } from '../eval/perplexity.js';
import { withAtomicDir } from '../io/atomic-dir.js';
import { openCheckpoint, writeCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { finiteSource } from '../io/finite.js';
import { writeHfFolderExtras } from '../io/hf-folder.js';
import { setStage, testPause } from '../io/interrupt.js';
import type { NamedTensor } from '../io/safetensors.js';
import type { FloatDType, WeightDType } from '../kernels/types.js';
import { embeddingName, normWeight, type Decoder, type DecoderLayer } from '../models/decoder.js';
import { Linear } from '../models/linear.js';
import { requireTensor } from '../models/weights.js';
import type { TextMode } from '../schema/transmla-json.js';
import type { Tensor, WeightSource } from '../tensor.js';
import { loadTokenizer, type TextTokenizer } from '../tokenizer/tokenizer.js';
import { calibrationSamples, readDocuments } from './calibrate.js';
import { deepseekMoeName, mixtralRouterLayer, zeroSharedExpert } from './moe-tensors.js';
import { familyFor } from '../arch/registry.js';

export interface EvalTextSpec {
  path: string;
  /** How the file becomes one string (perplexity.ts); WikiText-2 is read as 'lines' by the papers. */
  mode: TextMode;
}

/** Calibration sampling, evaluation and logging: what every conversion and export takes alike. */
export interface CalibEvalOptions {
  calibSamples?: number;
  calibSeqLen?: number;
  seed?: number;
  /** Texts to report perplexity/KL/top-1 on; empty → the held-out calibration documents. */
  evalTexts?: EvalTextSpec[];
  /** Chunk length of the evaluations (default min(2048, max_position_embeddings)). */
  evalCtx?: number;
  /** Evaluate at most this many chunks per text. */
  evalChunks?: number;
  /** Without evalChunks: at most this many tokens per text, in whole chunks (at least one). */
  evalTokens?: number;
  /** Progress lines (stage banners, perplexities). */
  log?: (line: string) => void;
}

export const HELD_OUT_FRACTION = 0.1;

/** Chunks per evaluation text: evalChunks, else the evalTokens budget in chunks of evalCtx, else all (undefined). */
export function evalChunkCount(o: Pick<CalibEvalOptions, 'evalChunks' | 'evalTokens'>, evalCtx: number): number | undefined {
  return o.evalChunks ?? (o.evalTokens === undefined ? undefined : Math.max(1, Math.floor(o.evalTokens / evalCtx)));
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export function cpuSeconds(): number {
  const u = process.resourceUsage();
  return (u.userCPUTime + u.systemCPUTime) / 1e6;
}

export function secondsSince(t: number): number {
  return (performance.now() - t) / 1000;
}

/** Every file a conversion reads: the output folder must not be or contain any of them. */
export function convertInputs(o: { model: string; calib: string; evalTexts?: readonly { path: string }[] }): string[] {
  return [o.model, o.calib, ...(o.evalTexts ?? []).map((t) => t.path)];
}

// ---------------------------------------------------------------------------------------------
// 1. The source

/** The model a conversion reads: whole in memory, or one decoder layer at a time. */
export interface ConversionSource {
  path: string;
  args: ModelArgs;
  tokenizer: TextTokenizer;
  dtype: FloatDType;
  /** The whole model (searches and evaluation need it); null when streaming. */
  model: Decoder | null;
  /** Layer l: the model's, or read from the checkpoint now (the caller drops it when done). */
  layer(l: number): DecoderLayer;
  embedding(): Tensor<WeightDType>;
  /** The final norm and the output head (every stage of a conversion shares them). */
  finals(): { norm: Float32Array; head: Linear };
  close(): void;
}

/** Detaches `b` (its views read as empty from now on) and lets its memory go: the clone that took it is dropped at once. */
function detach(b: ArrayBuffer): void {
  if (b.byteLength > 0) structuredClone(b, { transfer: [b] });
}

/**
 * Opens `model` as the source of `method`: a Hugging Face folder whose family accepts it as a
 * source (arch/<family>.ts conversions), with a tokenizer.
 */
export function openSource(model: string, method: ConversionMethod, whole: boolean): ConversionSource {
  setStage(`${whole ? 'loading' : 'reading'} ${model}`);
  if (!existsSync(join(model, 'config.json')) || !statSync(model).isDirectory()) {
    throw new Error(`${model}: convert takes a Hugging Face folder with config.json (import llama2.c / GGUF checkpoints first)`);
  }
  const args = readConfig(model);
  requireConversion(args, method, model);
  if (!['tokenizer.json', 'tokenizer.model', 'tokenizer.bin'].some((f) => existsSync(join(model, f)))) {
    throw new Error(`${model} has no tokenizer (tokenizer.json); calibration needs one`);
  }
  if (whole) {
    const loaded = loadModel(model);
    const m = loaded.model;
    return {
      path: model, args: loaded.config, tokenizer: loaded.tokenizer!, dtype: m.weightDtype, model: m,
      layer: (l) => m.layers[l]!, embedding: () => m.embed, finals: () => ({ norm: m.norm, head: m.head }), close: () => {},
    };
  }
  const tokenizer = loadTokenizer(model);
  const ck: Checkpoint = openCheckpoint(model);
  const src: WeightSource = finiteSource(ck, (name) => join(ck.dir, ck.info(name).file));
  const embedName = embeddingName(src, args);
  // From the header: reading the embedding just for its dtype would cost its size.
  const sdt = ck.info(embedName).dtype;
  const build = familyFor(args).engineLayers(args);
  // The buffers of the last layer read, outside its attention and norms: its MLP (dense or experts).
  // They are detached before the next layer is read, so their memory is freed even though a stale
  // reference may survive: an async function or generator keeps the previous iteration's locals in
  // its saved registers until they are overwritten, i.e. after the next read, so without this the
  // peak holds two layers (a Mixtral-8x7B layer is 2.9 GB). Attention and norms are kept: the proxy
  // search holds scored layers' attention. A conversion never uses a layer's MLP after reading the next.
  let held: ArrayBuffer[] = [];
  const track = <T extends { data: { buffer: ArrayBufferLike } }>(name: string, t: T): T => {
    if (!name.includes('.self_attn.') && !name.endsWith('norm.weight') && t.data.buffer instanceof ArrayBuffer) held.push(t.data.buffer);
    return t;
  };
  const layerSrc: WeightSource = {
    ...src, get: (name) => track(name, src.get(name)),
    ...(src.getWeight && { getWeight: (name: string) => track(name, src.getWeight!(name)) }),
  };
  return {
    path: model, args, tokenizer, dtype: sdt === 'BF16' ? 'bf16' : sdt === 'F16' ? 'f16' : 'f32', model: null,
    layer: (l) => {
      for (const b of held) detach(b);
      held = [];
      // Under node --expose-gc, collect them now: V8 frees large typed arrays lazily.
      (globalThis as { gc?: () => void }).gc?.();
      return build(layerSrc, l);
    },
    embedding: () => requireTensor(src, embedName, [args.vocabSize, args.hiddenSize]),
    finals: () => {
      const V = args.vocabSize, D = args.hiddenSize;
      const head = new Linear(args.tieWordEmbeddings ? requireTensor(src, embedName, [V, D]) : requireTensor(src, 'lm_head.weight', [V, D]));
      return { norm: normWeight(src, 'model.norm.weight', D), head };
    },
    close: () => ck.close(),
  };
}

// ---------------------------------------------------------------------------------------------
// 2. Calibration

export interface CalibrationSet {
  file: string;
  /** Documents sampled for calibration. */
  docs: string[];
  /** The last HELD_OUT_FRACTION of the documents: never sampled, used by searches and default evaluation. */
  heldOut: string[];
  samples: number;
  seqLen: number;
  seed: number;
}

/** The documents of a calibration text, split into calibration and held-out ones. */
export function calibrationSet(file: string, o: CalibEvalOptions): CalibrationSet {
  const docs = readDocuments(file);
  const nHeld = docs.length >= 2 ? Math.max(1, Math.round(docs.length * HELD_OUT_FRACTION)) : 0;
  return {
    file, docs: docs.slice(0, docs.length - nHeld), heldOut: docs.slice(docs.length - nHeld),
    samples: o.calibSamples ?? 128, seqLen: o.calibSeqLen ?? 256, seed: o.seed ?? 42,
  };
}

/** The seeded calibration samples (N × L token ids). */
export function calibrationTokens(tok: TextTokenizer, c: CalibrationSet): Promise<Int32Array[]> {
  return calibrationSamples(tok, c.docs, c);
}

export function describeCalibration(c: CalibrationSet): string {
  return `${c.samples} × ${c.seqLen} tokens from ${c.file} (${c.docs.length} documents, seed ${c.seed}; ${c.heldOut.length} held out)`;
}

// ---------------------------------------------------------------------------------------------
// 4. Evaluation

export interface EvalText {
  name: string;
  sha: string;
  mode: TextMode | 'held-out calibration documents';
  text: string;
}

/** The evaluation texts: --eval-text files, else the held-out calibration documents. */
export function evaluationTexts(o: CalibEvalOptions, c: CalibrationSet): EvalText[] {
  const texts: EvalText[] = (o.evalTexts ?? []).map((t) => ({ name: resolve(t.path), sha: sha256File(t.path), mode: t.mode, text: readEvalText(t.path, t.mode).text }));
  if (texts.length === 0) {
    if (c.heldOut.length === 0) throw new Error('no --eval-text and no held-out calibration documents to evaluate on');
    const text = c.heldOut.join('\n\n');
    texts.push({ name: `${resolve(c.file)} (last ${c.heldOut.length} documents, held out)`, sha: createHash('sha256').update(text).digest('hex'), mode: 'held-out calibration documents', text });
  }
  return texts;
}

/**
 * Each stage model against the reference on the same tokens of every text (the convention of
 * eval/perplexity.ts), chunked as the options say.
 */
export async function evaluateStages(reference: Decoder, stages: readonly Decoder[], tok: TextTokenizer, texts: readonly EvalText[], o: CalibEvalOptions): Promise<{ text: EvalText; result: FidelityResult }[]> {
  const evalCtx = o.evalCtx ?? Math.min(2048, reference.config.maxPositionEmbeddings);
  const out: { text: EvalText; result: FidelityResult }[] = [];
  for (const t of texts) {
    setStage(`evaluation on ${t.name}`);
    await testPause('evaluation');
    const chunks = evalChunkCount(o, evalCtx);
    const { ids, bos } = await tokenizeEnough(tok, t.text, chunks === undefined ? undefined : chunks * evalCtx);
    out.push({ text: t, result: await fidelity(reference, stages, ids, bos, { ctx: Math.min(evalCtx, ids.length), maxChunks: chunks }) });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// 5. The output folder

/**
 * Source tensors in checkpoint order with each layer's q/k/v projections replaced by
 * layerTensors(l, 'model.layers.l.self_attn') (its converted attention; o_proj stays the source's).
 */
export function* outputTensors(srcDir: string, nLayers: number, layerTensors: (l: number, prefix: string) => NamedTensor[]): Generator<NamedTensor> {
  const ck = openCheckpoint(srcDir);
  try {
    const done = new Set<number>();
    for (const name of ck.names()) {
      const m = /^model\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$/.exec(name);
      if (!m) {
        if (/\.rotary_emb\.inv_freq$/.test(name)) continue;
        yield { name, tensor: ck.get(name) };
        continue;
      }
      const l = Number(m[1]);
      if (done.has(l)) continue;
      done.add(l);
      if (l >= nLayers) throw new Error(`no converted weights for layer ${l}`);
      setStage(`writing layer ${l + 1}/${nLayers} attention tensors`);
      yield* layerTensors(l, `model.layers.${l}.self_attn`);
    }
    if (done.size !== nLayers) throw new Error(`the checkpoint has attention tensors for ${done.size} layers, the conversion ${nLayers}`);
  } finally {
    ck.close();
  }
}

/**
 * The tensors of a stock DeepSeek-V3 folder made from `srcDir` (a source or an exact MLA folder):
 * checkpoint order, every self_attn tensor of layer l replaced by layerTensors(l) (q, kv_a,
 * kv_a_layernorm, kv_b, o), lm_head.weight always present (stock engines need it even when tied);
 * a Mixtral source's experts renamed to DeepSeek-V2's, with a zero shared expert per layer.
 */
export function* stockOutputTensors(srcDir: string, nLayers: number, layerTensors: (l: number) => NamedTensor[], tied: boolean): Generator<NamedTensor> {
  const ck = openCheckpoint(srcDir);
  try {
    const done = new Set<number>();
    let embed: Tensor | null = null, head: Tensor | null = null;
    for (const name of ck.names()) {
      if (/\.rotary_emb\.inv_freq$/.test(name)) continue;
      if (name === 'lm_head.weight') { head = ck.get(name); continue; }
      const m = /^model\.layers\.(\d+)\.self_attn\./.exec(name);
      if (!m) {
        const t = ck.get(name);
        if (name === 'model.embed_tokens.weight') embed = t;
        // Mixtral experts under DeepSeek-V2 names, each MoE layer with its zero shared expert (moe-tensors.ts).
        yield { name: deepseekMoeName(name), tensor: t };
        const router = mixtralRouterLayer(name);
        if (router !== null) yield* zeroSharedExpert(ck, router);
        continue;
      }
      const l = Number(m[1]);
      if (done.has(l)) continue;
      done.add(l);
      if (l >= nLayers) throw new Error(`no exported attention for layer ${l}`);
      setStage(`writing layer ${l + 1}/${nLayers} attention tensors`);
      yield* layerTensors(l);
    }
    if (done.size !== nLayers) throw new Error(`the checkpoint has attention tensors for ${done.size} layers, the export ${nLayers}`);
    // A tied model may store the shared matrix as lm_head.weight only: stock code needs the embedding.
    if (!embed && head && tied) yield { name: 'model.embed_tokens.weight', tensor: head };
    const lm = head ?? (tied ? embed : null);
    if (!lm) throw new Error('the checkpoint has neither lm_head.weight nor a tied embedding');
    yield { name: 'lm_head.weight', tensor: lm };
  } finally {
    ck.close();
  }
}

export interface ModelFolder {
  /** The folder tokenizer and generation files are copied from. */
  srcDir: string;
  /** Input paths the output must not be or contain. */
  inputs: string[];
  overwrite: boolean;
  tensors: Iterable<NamedTensor> | AsyncIterable<NamedTensor>;
  /** config.json text (without the final newline). */
  config: string;
  /** Other text files (README.md …), made once `report` has run (a model card quotes it). */
  files?: () => { name: string; text: string }[];
  /** transmla.json, built once everything else is written (so it can hold the save timings). */
  report: () => object;
  /** Draw report.html (needs transmla.json). */
  html: boolean;
  log: (line: string) => void;
}

/**
 * Writes a model folder inside one atomic folder (an interrupted save leaves nothing behind),
 * then logs "saved <folder>" and "report <report.html>". `before` runs first inside the
 * temporary folder (a streaming conversion spills there) and returns the folder contents.
 */
export async function writeModelFolder(out: string, inputs: { overwrite: boolean; inputs: string[] }, before: (dir: string) => Promise<ModelFolder>): Promise<void> {
  const final = resolve(out);
  let log: (line: string) => void = () => {};
  let html = false;
  await withAtomicDir(final, { overwrite: inputs.overwrite, source: inputs.inputs }, async (dir) => {
    const f = await before(dir);
    log = f.log;
    await writeCheckpoint(dir, f.tensors);
    setStage(`writing ${final}: config, transmla.json, report.html`);
    await testPause('write');
    writeFileSync(join(dir, 'config.json'), f.config + '\n');
    writeHfFolderExtras(f.srcDir, dir);
    const report = f.report();
    for (const x of f.files?.() ?? []) writeFileSync(join(dir, x.name), x.text);
    writeFileSync(join(dir, 'transmla.json'), JSON.stringify(report, null, 2) + '\n');
    if (f.html) {
      // Loaded on demand: the charting library is only needed once a folder is written.
      const { writeReport } = await import('../report/report.js');
      try {
        await writeReport(dir);
        html = true;
      } catch (e) {
        f.log(`warning: report.html not written: ${(e as Error).message}`);
      }
    }
  });
  log(`saved ${final}`);
  if (html) log(`report ${join(final, 'report.html')}`);
}
