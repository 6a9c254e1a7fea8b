// The TransMLA pipeline (algorithms.md §3): source GQA/MHA model → calibrate → RoRoPE +
// FreqFold (partial RoPE) → BKV-PCA (+ optional q low rank) → DeepSeek-V3 folder, measuring
// the perplexity of each stage (original → partial RoPE → MLA) and the fidelity (KL, top-1)
// of the converted models on the same tokens.
//
// Calibration order (--calib-order):
// - 'faithful' (default, TransMLA): RoRoPE's key statistics come from the original model; then
//   the partial-RoPE model is re-run over the calibration set and BKV-PCA (and the query PCA)
//   use its layer inputs. Two passes over the N·L tokens.
// - 'sequential': one pass through the model being built: layer l's statistics come from the
//   hidden states after the already-converted (final MLA) layers 0..l−1, so each layer is fit
//   to the inputs it will really see. (A FreqFold search still needs a pass on the original.)
//
// FreqFold auto: as TransMLA, start at M = c = d/d_R and double M while the partial-RoPE
// perplexity improves (up to d/2). TransMLA scores M on its test set; here the score comes from
// held-out calibration documents (the last 10 %, never sampled for calibration), so the choice
// never looks at the evaluation texts.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { withAtomicDir } from '../io/atomic-dir.js';
import { openCheckpoint, writeCheckpoint } from '../io/checkpoint.js';
import { writeHfFolderExtras } from '../io/hf-config.js';
import { mlaConfigJson } from '../io/mla-config.js';
import type { NamedTensor } from '../io/safetensors.js';
import type { FloatDType } from '../kernels/types.js';
import { fidelity, type ModelScore } from '../eval/fidelity.js';
import { perplexity, readEvalText, tokenizeForPerplexity, type TextMode } from '../eval/perplexity.js';
import { GqaAttention } from '../models/attention.js';
import type { LlamaModel } from '../models/llama.js';
import { loadModel } from '../models/load.js';
import { bytesPerElement } from '../tensor.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import { bkvPca } from './bkv-pca.js';
import { calibrationSamples, HiddenStates, projectedCov, readDocuments } from './calibrate.js';
import { latentFromGqa } from './gqa-to-mla.js';
import { checkKvRank, kvForFraction, defaultRopeDim, sourceKvWidth } from './kv-budget.js';
import { assembleMla, PCA_DAMP, type LatentLayer, type MlaLayerWeights } from './latent-layer.js';
import { assembleModel, buildMlaModel, gqaLayerSource, mlaDecoderLayer, mlaLayerTensors, mlaRopeTable } from './mla-build.js';
import { queryBasis } from './q-lora.js';
import { checkRoRope, freqFoldCandidates, roRope } from './rorope.js';

export type CalibOrder = 'faithful' | 'sequential';

export interface EvalTextSpec {
  path: string;
  /** How the file becomes one string (perplexity.ts); WikiText-2 is read as 'lines' by the papers. */
  mode: TextMode;
}

export interface ConvertOptions {
  model: string;
  /** Output folder; null converts and evaluates without saving. */
  out: string | null;
  overwrite?: boolean;
  /** r; or give kvFraction. */
  kvLoraRank?: number;
  /** d_R; default: defaultRopeDim of the budget. */
  ropeDim?: number;
  /** Target (r + d_R) / (2·G·d); picks r (and d_R when not given). */
  kvFraction?: number;
  qLoraRank?: number | null;
  freqFold: number | 'auto';
  /** balance_kv_ratio (0 = no balancing). Default 1. */
  balanceKvRatio?: number;
  calib: string;
  calibSamples?: number;
  calibSeqLen?: number;
  seed?: number;
  calibOrder?: CalibOrder;
  /** Texts to report perplexity/KL/top-1 on; empty → the held-out calibration documents. */
  evalTexts?: EvalTextSpec[];
  /** Chunk length of the evaluations (default min(2048, max_position_embeddings)). */
  evalCtx?: number;
  /** Evaluate at most this many chunks per text. */
  evalChunks?: number;
  /** Chunks of held-out calibration text per FreqFold candidate (default 16). */
  searchChunks?: number;
  /** Progress lines (stage banners, perplexities). */
  log?: (line: string) => void;
}

export interface EvalReport {
  text: string;
  sha256: string;
  mode: TextMode | 'held-out calibration documents';
  ctx: number;
  chunks: number;
  predictions: number;
  convention: string;
  original: ModelScore;
  partialRope: ModelScore;
  mla: ModelScore;
}

export interface ConvertReport {
  tool: 'transmla';
  method: string;
  created: string;
  source: { path: string; modelType: string; layers: number; hidden: number; heads: number; kvHeads: number; headDim: number; dtype: FloatDType };
  output: string | null;
  parameters: {
    kvLoraRank: number;
    qkRopeHeadDim: number;
    qkNopeHeadDim: number;
    vHeadDim: number;
    qLoraRank: number | null;
    kvFraction: number;
    freqFold: number;
    freqFoldRequested: number | 'auto';
    collapse: number;
    balanceKvRatio: number;
    pcaDamp: number;
    calibOrder: CalibOrder;
    ropeLayout: string;
    softmaxScale: string;
    attentionBias: boolean;
    dtype: FloatDType;
  };
  freqFoldSearch: { freqFold: number; ppl: number }[];
  calibration: { file: string; sha256: string; documents: number; heldOutDocuments: number; samples: number; seqLen: number; tokens: number; seed: number };
  kvCache: { dtype: FloatDType; bytesPerTokenBefore: number; bytesPerTokenAfter: number; elementsPerTokenPerLayerBefore: number; elementsPerTokenPerLayerAfter: number; fraction: number };
  layers: { ropeEnergy: number; alpha: number; kvEnergy: number }[];
  evaluations: EvalReport[];
  /** pass1: original-model statistics; conversion: RoRoPE + BKV-PCA with their calibration pass; convertTotal excludes evaluation. */
  seconds: { load: number; pass1: number; freqFoldSearch: number; conversion: number; evaluation: number; save: number; convertTotal: number };
  peakRssBytes: number;
}

const HELD_OUT_FRACTION = 0.1;

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** [Wk ; Wv] of a latent layer: the rows whose joint covariance BKV-PCA needs. */
function kvRows(L: LatentLayer): Float64Array {
  const Dp = L.hidden + 1;
  const W = new Float64Array((L.nK + L.nV) * Dp);
  W.set(L.wk);
  W.set(L.wv, L.nK * Dp);
  return W;
}

/**
 * Token ids of the start of `text`, enough for `need` tokens (all of it when need is undefined).
 * Long evaluation texts are tokenized only as far as the chunks used: whole documents (cut at
 * "\n\n") are added until the count suffices, so the ids used equal those of the whole text.
 */
function tokenizeEnough(tok: TextTokenizer, text: string, need: number | undefined): { ids: number[]; bos: boolean } {
  if (need === undefined) return tokenizeForPerplexity(tok, text, tok.addBosByDefault);
  let chars = Math.max(4096, need * 8);
  for (;;) {
    if (chars >= text.length) return tokenizeForPerplexity(tok, text, tok.addBosByDefault);
    const cut = text.indexOf('\n\n', chars);
    if (cut < 0) return tokenizeForPerplexity(tok, text, tok.addBosByDefault);
    const r = tokenizeForPerplexity(tok, text.slice(0, cut), tok.addBosByDefault);
    // A margin beyond `need` keeps the last used tokens away from the cut.
    if (r.ids.length >= need + 64) return r;
    chars *= 2;
  }
}

function secondsSince(t: number): number {
  return (performance.now() - t) / 1000;
}

function fmt(s: ModelScore, ref = false): string {
  return ref ? `ppl ${s.ppl.toFixed(4)}` : `ppl ${s.ppl.toFixed(4)}  KL ${s.kl.toFixed(4)}  top-1 ${(100 * s.top1).toFixed(2)} %`;
}

export async function convertModel(o: ConvertOptions): Promise<ConvertReport> {
  const log = o.log ?? (() => {});
  const tStart = performance.now();
  const loaded = loadModel(o.model);
  if (loaded.mla) throw new Error(`${o.model} is already an MLA (${String(loaded.config.raw.model_type)}) model`);
  if (loaded.format !== 'hf') throw new Error(`${o.model}: convert takes a Hugging Face folder (import llama2.c checkpoints first)`);
  const src = loaded.model, cfg = loaded.config;
  const tok = loaded.tokenizer;
  if (!tok) throw new Error(`${o.model} has no tokenizer (tokenizer.json); calibration needs one`);
  const attn0 = src.layers[0]!.attn;
  if (!(attn0 instanceof GqaAttention)) throw new Error('only GQA/MHA attention can be converted');
  const H = attn0.nHeads, G = attn0.nKvHeads, d = attn0.headDim, D = cfg.hiddenSize, nLayers = src.layers.length;
  const dtype = src.weightDtype;
  const tLoad = secondsSince(tStart);

  // --- Shape: (r, d_R) from the flags.
  const shape = { nKvHeads: G, headDim: d };
  let r: number, dR: number;
  if (o.kvFraction !== undefined) {
    if (o.kvLoraRank !== undefined) throw new Error('give either --kv-lora-rank or --kv-fraction, not both');
    ({ kvLoraRank: r, ropeDim: dR } = kvForFraction(shape, o.kvFraction, o.ropeDim));
  } else if (o.kvLoraRank !== undefined) {
    r = o.kvLoraRank;
    // Default d_R: the largest even divisor of d that is ≤ d/2 and ≤ r.
    dR = o.ropeDim ?? defaultRopeDim(d, 2 * r);
  } else {
    throw new Error('give --kv-lora-rank R or --kv-fraction F');
  }
  checkKvRank(shape, r, dR);
  const collapse = checkRoRope(d, dR, o.freqFold === 'auto' ? d / dR : o.freqFold);
  const qLoraRank = o.qLoraRank ?? null;
  const balance = o.balanceKvRatio ?? 1;
  const order = o.calibOrder ?? 'faithful';
  const evalCtx = o.evalCtx ?? Math.min(2048, cfg.maxPositionEmbeddings);
  const before = sourceKvWidth(shape), after = r + dR;
  log(`source: ${o.model} (${cfg.modelType}, ${nLayers} layers, ${H} heads / ${G} KV heads × ${d}, ${dtype})`);
  log(`target: kv_lora_rank ${r} + qk_rope_head_dim ${dR} = ${after} cached values per token per layer (was 2·${G}·${d} = ${before}, ${(100 * after / before).toFixed(2)} %)`);

  // --- Calibration data.
  const tCal = performance.now();
  const docs = readDocuments(o.calib);
  const nHeld = docs.length >= 2 ? Math.max(1, Math.round(docs.length * HELD_OUT_FRACTION)) : 0;
  const calibDocs = docs.slice(0, docs.length - nHeld);
  const heldDocs = docs.slice(docs.length - nHeld);
  const calib = { samples: o.calibSamples ?? 128, seqLen: o.calibSeqLen ?? 256, seed: o.seed ?? 42 };
  const samples = calibrationSamples(tok, calibDocs, calib);
  log(`calibration: ${calib.samples} × ${calib.seqLen} tokens from ${o.calib} (${calibDocs.length} documents, seed ${calib.seed}; ${nHeld} held out), order ${order}`);

  // --- Pass A (original model): key covariances for RoRoPE (and the FreqFold search).
  const latentOf = (l: number): LatentLayer => latentFromGqa(gqaLayerSource(src, l));
  const needPassA = order === 'faithful' || o.freqFold === 'auto';
  const keyCovs: Float64Array[] = [];
  if (needPassA) {
    const states = HiddenStates.embed(src, samples);
    try {
      for (let l = 0; l < nLayers; l++) {
        const gram = states.gram(src.layers[l]!.inputNorm);
        const L = latentOf(l);
        keyCovs.push(projectedCov(L.wk, L.nK, gram, D + 1));
        if (l + 1 < nLayers) states.advance(src.layers[l]!);
        log(`  pass 1 (original model) layer ${l + 1}/${nLayers}`);
      }
    } finally {
      states.close();
    }
  }
  const tCalib = secondsSince(tCal);

  // --- FreqFold.
  const tSearch = performance.now();
  const search: { freqFold: number; ppl: number }[] = [];
  let M: number;
  const rope = mlaRopeTable(src, dR);
  // The partial-RoPE model for a FreqFold value, from pass-1 statistics (one layer in float64 at a time).
  const partialModelFor = (fold: number): LlamaModel => assembleModel(src, keyCovs.map((C, l) => {
    const P = roRope(latentOf(l), C, { nKvHeads: G, ropeDim: dR, freqFold: fold }).layer;
    return mlaDecoderLayer(src, l, assembleMla(P), rope, { dtype });
  }));
  if (o.freqFold === 'auto') {
    if (heldDocs.length === 0) throw new Error('--freqfold auto needs held-out documents: give a calibration text with at least 2 documents');
    const searchChunks = o.searchChunks ?? 16;
    const { ids, bos } = tokenizeEnough(tok, heldDocs.join('\n\n'), searchChunks * evalCtx);
    const ctx = Math.min(evalCtx, Math.max(2, Math.floor(ids.length / 2)));
    let best = Infinity;
    M = collapse;
    for (const fold of freqFoldCandidates(d, dR)) {
      const { ppl } = await perplexity(partialModelFor(fold), ids, bos, { ctx, maxChunks: searchChunks });
      search.push({ freqFold: fold, ppl });
      log(`  freqfold ${fold}: held-out partial-RoPE ppl ${ppl.toFixed(4)}`);
      if (!(ppl < best)) break;
      best = ppl;
      M = fold;
    }
    log(`freqfold auto → ${M}`);
  } else {
    M = o.freqFold;
  }
  const tSearchS = secondsSince(tSearch);

  // --- RoRoPE + BKV-PCA (+ query PCA), layer by layer over the calibration set.
  const tConv = performance.now();
  const mla: MlaLayerWeights[] = [];
  const partial: MlaLayerWeights[] = [];
  const stats: ConvertReport['layers'] = [];
  // Faithful: the partial-RoPE model exists up front; its layers feed BKV-PCA's statistics.
  let partialModel: LlamaModel | null = order === 'faithful' ? partialModelFor(M) : null;
  const states = HiddenStates.embed(src, samples);
  try {
    for (let l = 0; l < nLayers; l++) {
      const gram = states.gram(src.layers[l]!.inputNorm);
      const L0 = latentOf(l);
      const keyCov = order === 'faithful' ? keyCovs[l]! : projectedCov(L0.wk, L0.nK, gram, D + 1);
      const { layer: P, ropeEnergy } = roRope(L0, keyCov, { nKvHeads: G, ropeDim: dR, freqFold: M });
      if (order === 'sequential') partial.push(assembleMla(P));
      const kvCov = projectedCov(kvRows(P), P.nK + P.nV, gram, D + 1);
      const qb = qLoraRank === null ? null : queryBasis(P, projectedCov(P.wq, H * d, gram, D + 1), qLoraRank);
      const res = bkvPca(P, kvCov, { rank: r, balanceRatio: balance, queryBasis: qb });
      mla.push(res.weights);
      stats.push({ ropeEnergy, alpha: res.alpha, kvEnergy: res.energy });
      if (l + 1 < nLayers) {
        // Advance through the model whose inputs the next layer's statistics should come from.
        states.advance(order === 'faithful' ? partialModel!.layers[l]! : mlaDecoderLayer(src, l, res.weights, rope, { dtype }));
      }
      log(`  pass ${needPassA ? 2 : 1} layer ${l + 1}/${nLayers}: RoPE energy kept ${(100 * ropeEnergy).toFixed(1)} %, α ${res.alpha.toFixed(3)}, latent energy kept ${(100 * res.energy).toFixed(1)} %`);
    }
  } finally {
    states.close();
  }
  partialModel ??= buildMlaModel(src, partial, { dtype });
  const mlaModel = buildMlaModel(src, mla, { dtype });
  const convSecs = secondsSince(tConv);
  const convertTotal = secondsSince(tStart);

  // --- Evaluation.
  const tEval = performance.now();
  const evaluations: EvalReport[] = [];
  const texts: { name: string; sha: string; mode: EvalReport['mode']; text: string }[] = (o.evalTexts ?? []).map((t) => ({
    name: resolve(t.path), sha: sha256File(t.path), mode: t.mode, text: readEvalText(t.path, t.mode).text,
  }));
  if (texts.length === 0) {
    if (heldDocs.length === 0) throw new Error('no --eval-text and no held-out calibration documents to evaluate on');
    const text = heldDocs.join('\n\n');
    texts.push({ name: `${resolve(o.calib)} (last ${nHeld} documents, held out)`, sha: createHash('sha256').update(text).digest('hex'), mode: 'held-out calibration documents', text });
  }
  for (const t of texts) {
    const { ids, bos } = tokenizeEnough(tok, t.text, o.evalChunks === undefined ? undefined : o.evalChunks * evalCtx);
    const ctx = Math.min(evalCtx, ids.length);
    const f = await fidelity(src, [partialModel, mlaModel], ids, bos, { ctx, maxChunks: o.evalChunks });
    evaluations.push({
      text: t.name, sha256: t.sha, mode: t.mode, ctx: f.ctx, chunks: f.chunks, predictions: f.predictions, convention: f.convention,
      original: f.reference, partialRope: f.models[0]!, mla: f.models[1]!,
    });
    log(`${t.name}: ${f.chunks} chunks × ${f.ctx} tokens`);
    log(`  original      ${fmt(f.reference, true)}`);
    log(`  partial RoPE  ${fmt(f.models[0]!)}`);
    log(`  MLA           ${fmt(f.models[1]!)}`);
    log(`  convention: ${f.convention}`);
  }
  const evalSecs = secondsSince(tEval);

  const bpe = bytesPerElement(dtype);
  const report: ConvertReport = {
    tool: 'transmla',
    method: 'TransMLA (RoRoPE + FreqFold + BKV-PCA), training-free, exact variant without kv_a_layernorm',
    created: new Date().toISOString(),
    source: { path: resolve(o.model), modelType: cfg.modelType, layers: nLayers, hidden: D, heads: H, kvHeads: G, headDim: d, dtype },
    output: o.out ? resolve(o.out) : null,
    parameters: {
      kvLoraRank: r, qkRopeHeadDim: dR, qkNopeHeadDim: d, vHeadDim: d, qLoraRank,
      kvFraction: after / before,
      freqFold: M, freqFoldRequested: o.freqFold, collapse,
      balanceKvRatio: balance, pcaDamp: PCA_DAMP, calibOrder: order,
      ropeLayout: `q_pe/k_pe rows stored as interleaved pairs (2i, 2i+1), pair i rotating at θ^(−2i/d_R) = source frequency ${collapse}·i (rope_interleave: true)`,
      softmaxScale: `(qk_nope_head_dim + qk_rope_head_dim)^−½, queries pre-multiplied by √(${d}+${dR})/√${d}`,
      attentionBias: mla.some((w) => (w.q?.b ?? w.qB?.b ?? w.kvA.b) !== null),
      dtype,
    },
    freqFoldSearch: search,
    calibration: { file: resolve(o.calib), sha256: sha256File(o.calib), documents: calibDocs.length, heldOutDocuments: nHeld, samples: calib.samples, seqLen: calib.seqLen, tokens: calib.samples * calib.seqLen, seed: calib.seed },
    kvCache: {
      dtype,
      bytesPerTokenBefore: nLayers * before * bpe,
      bytesPerTokenAfter: nLayers * after * bpe,
      elementsPerTokenPerLayerBefore: before,
      elementsPerTokenPerLayerAfter: after,
      fraction: after / before,
    },
    layers: stats,
    evaluations,
    seconds: { load: tLoad, pass1: tCalib, freqFoldSearch: tSearchS, conversion: convSecs, evaluation: evalSecs, save: 0, convertTotal },
    peakRssBytes: 0,
  };
  log(`KV cache per token (${dtype}): ${report.kvCache.bytesPerTokenBefore} B → ${report.kvCache.bytesPerTokenAfter} B`);

  if (o.out) {
    const tSave = performance.now();
    await saveMlaFolder(o.model, o.out, mla, report, cfg, { overwrite: o.overwrite ?? false, dtype });
    report.seconds.save = secondsSince(tSave);
    report.seconds.convertTotal += report.seconds.save;
    log(`saved ${resolve(o.out)}`);
  }
  report.peakRssBytes = process.resourceUsage().maxRSS * 1024;
  if (o.out) writeFileSync(join(resolve(o.out), 'transmla.json'), JSON.stringify(report, null, 2) + '\n');
  return report;
}

/** Source tensors in checkpoint order with each layer's q/k/v replaced by its MLA tensors. */
function* outputTensors(srcDir: string, mla: readonly MlaLayerWeights[], dtype: FloatDType): Generator<NamedTensor> {
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
      if (!mla[l]) throw new Error(`no converted weights for layer ${l}`);
      yield* mlaLayerTensors(`model.layers.${l}.self_attn`, mla[l]!, dtype);
    }
    if (done.size !== mla.length) throw new Error(`the checkpoint has attention tensors for ${done.size} layers, the conversion ${mla.length}`);
  } finally {
    ck.close();
  }
}

async function saveMlaFolder(
  srcDir: string, outDir: string, mla: readonly MlaLayerWeights[], report: ConvertReport,
  cfg: Parameters<typeof mlaConfigJson>[0], o: { overwrite: boolean; dtype: FloatDType },
): Promise<void> {
  const p = report.parameters;
  const configJson = mlaConfigJson(cfg, {
    kvLoraRank: p.kvLoraRank, qLoraRank: p.qLoraRank, qkRopeHeadDim: p.qkRopeHeadDim,
    qkNopeHeadDim: p.qkNopeHeadDim, vHeadDim: p.vHeadDim, attentionBias: p.attentionBias,
  });
  await withAtomicDir(outDir, { overwrite: o.overwrite, source: srcDir }, async (dir) => {
    await writeCheckpoint(dir, outputTensors(srcDir, mla, o.dtype));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson, null, 2) + '\n');
    writeHfFolderExtras(srcDir, dir);
    // Written again with final timings after the rename; present from the start so the folder is complete.
    writeFileSync(join(dir, 'transmla.json'), JSON.stringify(report, null, 2) + '\n');
  });
}

