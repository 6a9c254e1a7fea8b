// TransMLA conversion in bounded memory (`convert --no-eval`): the same arithmetic as
// convert.ts, but no model is ever whole in memory. Each pass reads one decoder layer from the
// checkpoint, takes its statistics, converts it, pushes the calibration states through it and
// drops it; converted attention tensors go straight to a spill checkpoint inside the output's
// temp folder, and the final folder is assembled tensor by tensor from the source checkpoint and
// the spill. Memory: one layer's weights (+ its float64 working copies), one (D+1)² Gram, the
// per-layer [K;V] covariances of pass 1, one sample of hidden states. Evaluation and the
// d_R/FreqFold searches run whole models, so this path needs a fixed shape and skips them; its
// output folder holds the same bytes as convertModel's for the same options.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { peakRssBytes } from '../eval/memory.js';
import { checkOutputDir, withAtomicDir } from '../io/atomic-dir.js';
import { openCheckpoint, writeCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { assertFiniteStat, finiteSource } from '../io/finite.js';
import { familyFor, readConfig } from '../arch/registry.js';
import { writeHfFolderExtras } from '../io/hf-folder.js';
import type { ModelArgs } from '../arch/args.js';
import { isMha2mlaConfigJson } from '../arch/mha2mla.js';
import { isMlaConfigJson, mlaConfigJson } from '../arch/deepseek.js';
import type { DecoderLayer } from '../models/decoder.js';
import { interruptPoint, setStage, testPause } from '../io/interrupt.js';
import type { NamedTensor } from '../io/safetensors.js';
import type { FloatDType } from '../kernels/types.js';
import { requireTensor } from '../models/weights.js';
import { type Tensor, type WeightSource } from '../tensor.js';
import { loadTokenizer } from '../tokenizer/tokenizer.js';
import { bkvPca } from './bkv-pca.js';
import { calibrationSamples, Float64Spill, HiddenStates, projectedCov, readDocuments } from './calibrate.js';
import { convertInputs, exactReportHeader, HELD_OUT_FRACTION, outputTensors, type ConvertOptions, type ConvertReport } from './convert.js';
import { latentFromGqa } from './gqa-to-mla.js';
import { checkKvRank, kvForFraction, sourceKvWidth } from './kv-budget.js';
import { assembleMla, type LatentLayer } from './latent-layer.js';
import { gqaLayerSource, mlaDecoderLayer, mlaLayerTensors, mlaRopeTable, type LayerView } from './mla-build.js';
import { queryBasis } from './q-lora.js';
import { checkRoRope, roRope } from './rorope.js';

/** A model view holding only layer l (what the per-layer helpers of mla-build.ts read). */
function view(config: ModelArgs, l: number, layer: DecoderLayer): LayerView {
  const layers: DecoderLayer[] = [];
  layers[l] = layer;
  return { config, layers };
}

/** [Wk ; Wv] of a latent layer. */
function kvRows(L: LatentLayer): Float64Array {
  const W = new Float64Array((L.nK + L.nV) * (L.hidden + 1));
  W.set(L.wk);
  W.set(L.wv, L.wk.length);
  return W;
}

export async function convertStreaming(o: ConvertOptions): Promise<ConvertReport> {
  const log = o.log ?? (() => {});
  const tStart = performance.now();
  const secs = (t: number): number => (performance.now() - t) / 1000;
  if (!o.out) throw new Error('--no-eval converts without evaluating; it needs --out (there is nothing else to show)');
  if (o.ropeDim === undefined || o.ropeDim === 'auto' || o.freqFold === 'auto') {
    throw new Error('--no-eval needs a fixed shape: give --rope-dim D and --freqfold M (the searches score whole models)');
  }
  if ((o.evalTexts ?? []).length > 0) throw new Error('--no-eval and --eval-text contradict each other');
  checkOutputDir(o.out, { overwrite: o.overwrite, source: convertInputs(o) });
  setStage(`reading ${o.model}`);
  if (!existsSync(join(o.model, 'config.json'))) throw new Error(`${o.model}: convert takes a Hugging Face folder with config.json (import llama2.c / GGUF checkpoints first)`);
  const raw: unknown = JSON.parse(readFileSync(join(o.model, 'config.json'), 'utf8'));
  if (isMlaConfigJson(raw) || isMha2mlaConfigJson(raw)) throw new Error(`${o.model} is already an MLA model`);
  const cfg = readConfig(o.model);
  if (!['tokenizer.json', 'tokenizer.model', 'tokenizer.bin'].some((f) => existsSync(join(o.model, f)))) {
    throw new Error(`${o.model} has no tokenizer (tokenizer.json); calibration needs one`);
  }
  const tok = loadTokenizer(o.model);
  const ck: Checkpoint = openCheckpoint(o.model);
  const src = finiteSource(ck, (name) => join(ck.dir, ck.info(name).file));
  let keyCovs: Float64Spill | null = null;
  try {
    const H = cfg.numHeads, G = cfg.numKvHeads, d = cfg.headDim, D = cfg.hiddenSize, V = cfg.vocabSize, nLayers = cfg.numLayers;
    const embedName = src.has('model.embed_tokens.weight') || !cfg.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
    const embedding = (): Tensor => requireTensor(src, embedName, [V, D]);
    // From the header: reading the embedding just for its dtype would cost its size.
    const sdt = ck.info(embedName).dtype;
    const dtype: FloatDType = sdt === 'BF16' ? 'bf16' : sdt === 'F16' ? 'f16' : 'f32';
    const shape = { nKvHeads: G, headDim: d };
    const before = sourceKvWidth(shape);
    const dR = o.ropeDim, M = o.freqFold;
    let r: number;
    if (o.kvFraction !== undefined) {
      if (o.kvLoraRank !== undefined) throw new Error('give either --kv-lora-rank or --kv-fraction, not both');
      r = kvForFraction(shape, o.kvFraction, dR).kvLoraRank;
    } else if (o.kvLoraRank !== undefined) {
      r = o.kvLoraRank;
    } else {
      throw new Error('give --kv-lora-rank R or --kv-fraction F');
    }
    checkKvRank(shape, r, dR);
    const collapse = checkRoRope(d, dR, M);
    const qLoraRank = o.qLoraRank ?? null;
    const balance = o.balanceKvRatio ?? 1;
    const order = o.calibOrder ?? 'faithful';
    const after = r + dR;
    log(`source: ${o.model} (${cfg.modelType}, ${nLayers} layers, ${H} heads / ${G} KV heads × ${d}, ${dtype}); streaming, no evaluation`);
    log(`target: ${after} cached values per token per layer (${r} + ${dR}); was 2·${G}·${d} = ${before} (${(100 * after / before).toFixed(2)} %)`);

    const docs = readDocuments(o.calib);
    const nHeld = docs.length >= 2 ? Math.max(1, Math.round(docs.length * HELD_OUT_FRACTION)) : 0;
    const calibDocs = docs.slice(0, docs.length - nHeld);
    const calib = { samples: o.calibSamples ?? 128, seqLen: o.calibSeqLen ?? 256, seed: o.seed ?? 42 };
    const samples = calibrationSamples(tok, calibDocs, calib);
    log(`calibration: ${calib.samples} × ${calib.seqLen} tokens from ${o.calib} (${calibDocs.length} documents, seed ${calib.seed}; ${nHeld} held out), order ${order}`);
    const tLoad = secs(tStart);
    const loadLayer = familyFor(cfg).engineLayers(cfg);
    const latentOf = (l: number, layer: DecoderLayer): LatentLayer => latentFromGqa(gqaLayerSource(view(cfg, l, layer), l));

    // --- Pass 1 (faithful order): [K;V] covariances of the original model, one layer at a time.
    const tCal = performance.now();
    // Only the key block of each [K;V] covariance is needed later; it waits on disk, not in memory.
    keyCovs = new Float64Spill();
    const nK = G * d;
    const keyBlock = (C: Float64Array): Float64Array => {
      const N = 2 * nK, K = new Float64Array(nK * nK);
      for (let i = 0; i < nK; i++) K.set(C.subarray(i * N, i * N + nK), i * nK);
      return K;
    };
    if (order === 'faithful') {
      const states = HiddenStates.fromEmbedding(cfg, embedding(), samples);
      try {
        for (let l = 0; l < nLayers; l++) {
          setStage(`calibration pass 1 (original model), layer ${l + 1}/${nLayers}`);
          const layer = loadLayer(src, l);
          const gram = states.gram(layer.inputNorm);
          assertFiniteStat(gram, `calibration pass 1 (original model), layer ${l + 1}/${nLayers}: the second moment Σ[x;1][x;1]ᵀ of the attention input`);
          const L = latentOf(l, layer);
          keyCovs.push(keyBlock(projectedCov(kvRows(L), L.nK + L.nV, gram, D + 1)));
          if (l + 1 < nLayers) states.advance(layer);
          log(`  pass 1 (original model) layer ${l + 1}/${nLayers}`);
          if (l === 0) await testPause('calibration');
          await interruptPoint();
        }
      } finally {
        states.close();
      }
    }
    const keyCov0 = (l: number): Float64Array => keyCovs!.read(l);
    const tPass1 = secs(tCal);

    // --- Pass 2, feeding the spill checkpoint as each layer is converted.
    const stats: ConvertReport['layers'] = [];
    let attentionBias = false;
    const rope = mlaRopeTable({ config: cfg, layers: [] }, dR);
    // Each layer's tensor names in the order mlaLayerTensors gives them (the output order of convert.ts).
    const layerNames: string[][] = [];
    async function* convertedLayers(): AsyncGenerator<NamedTensor> {
      const states = HiddenStates.fromEmbedding(cfg, embedding(), samples);
      try {
        for (let l = 0; l < nLayers; l++) {
          setStage(`conversion pass ${order === 'faithful' ? 2 : 1} (RoRoPE + BKV-PCA), layer ${l + 1}/${nLayers}`);
          const layer = loadLayer(src, l);
          const v = view(cfg, l, layer);
          const gram = states.gram(layer.inputNorm);
          assertFiniteStat(gram, `calibration pass ${order === 'faithful' ? 2 : 1} (${order === 'faithful' ? 'partial-RoPE' : 'converted prefix'} model), layer ${l + 1}/${nLayers}: the second moment Σ[x;1][x;1]ᵀ of the attention input`);
          const L0 = latentOf(l, layer);
          const keyCov = order === 'faithful' ? keyCov0(l) : projectedCov(L0.wk, L0.nK, gram, D + 1);
          const { layer: P, ropeEnergy } = roRope(L0, keyCov, { nKvHeads: G, ropeDim: dR, freqFold: M });
          const kvCov = projectedCov(kvRows(P), P.nK + P.nV, gram, D + 1);
          assertFiniteStat(kvCov, `conversion, layer ${l + 1}/${nLayers}: the [K;V] output covariance`);
          const qb = qLoraRank === null ? null : queryBasis(P, projectedCov(P.wq, H * d, gram, D + 1), qLoraRank);
          const res = bkvPca(P, kvCov, { rank: r, balanceRatio: balance, queryBasis: qb });
          const w = res.weights;
          attentionBias ||= (w.q?.b ?? w.qB?.b ?? w.kvA.b) !== null;
          stats.push({
            ropeEnergy, alpha: res.alpha, kvEnergy: res.energy,
            ropeInvFreq: Array.from(P.ropeInvFreq),
            kvSpectrum: Array.from(res.energyCurve, (e, j) => Number((e - (j > 0 ? res.energyCurve[j - 1]! : 0)).toPrecision(4))),
          });
          const tensors = mlaLayerTensors(`model.layers.${l}.self_attn`, w, dtype);
          layerNames[l] = tensors.map((t) => t.name);
          yield* tensors;
          if (l + 1 < nLayers) states.advance(mlaDecoderLayer(v, l, order === 'faithful' ? assembleMla(P) : w, rope, { dtype }));
          log(`  pass ${order === 'faithful' ? 2 : 1} layer ${l + 1}/${nLayers}: RoPE energy kept ${(100 * ropeEnergy).toFixed(1)} %, α ${res.alpha.toFixed(3)}, latent energy kept ${(100 * res.energy).toFixed(1)} %`);
          if (l === 0) await testPause('conversion');
        }
      } finally {
        states.close();
      }
    }

    const out = resolve(o.out);
    const report: ConvertReport = {
      ...exactReportHeader({
        model: o.model, out, modelType: cfg.modelType, dims: { layers: nLayers, hidden: D, heads: H, kvHeads: G, headDim: d }, dtype,
        kvLoraRank: r, ropeDim: dR, freqFold: M, requested: { freqFold: M, ropeDim: dR }, qLoraRank, collapse, balance, order,
        attentionBias: false, // set once the layers are converted
        search: { scoredOn: 'none (--no-eval: fixed shape)', trace: [] },
        calib: { file: o.calib, documents: calibDocs.length, heldOutDocuments: nHeld, ...calib },
        before, after,
      }),
      layers: stats,
      evaluations: [],
      seconds: { load: tLoad, pass1: tPass1, freqFoldSearch: 0, conversion: 0, evaluation: 0, save: 0, convertTotal: 0, convertCpu: 0 },
      peakRssBytes: 0,
    };

    const { writeReport } = await import('../report/report.js');
    await withAtomicDir(out, { overwrite: o.overwrite, source: convertInputs(o) }, async (dir) => {
      const tConv = performance.now();
      const spill = join(dir, '.converted-layers');
      mkdirSync(spill);
      await writeCheckpoint(spill, convertedLayers());
      report.seconds.conversion = secs(tConv);
      const tSave = performance.now();
      const conv = openCheckpoint(spill);
      try {
        const layerTensors = (l: number): NamedTensor[] => layerNames[l]!.map((name) => ({ name, tensor: conv.get(name) }));
        const w = await writeCheckpoint(dir, outputTensors(o.model, nLayers, layerTensors));
        log(`wrote ${w.files.join(', ')} (${w.tensorCount} tensors)`);
      } finally {
        conv.close();
      }
      rmSync(spill, { recursive: true, force: true });
      setStage(`writing ${out}: config, transmla.json, report.html`);
      await testPause('write');
      report.parameters.attentionBias = attentionBias;
      const p = report.parameters;
      const configJson = mlaConfigJson(cfg, {
        kvLoraRank: p.kvLoraRank, qLoraRank: p.qLoraRank, qkRopeHeadDim: p.qkRopeHeadDim,
        qkNopeHeadDim: p.qkNopeHeadDim, vHeadDim: p.vHeadDim, attentionBias: p.attentionBias,
      });
      writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson, null, 2) + '\n');
      writeHfFolderExtras(o.model, dir);
      report.seconds.save = secs(tSave);
      report.seconds.convertTotal = secs(tStart);
      const u = process.resourceUsage();
      report.seconds.convertCpu = (u.userCPUTime + u.systemCPUTime) / 1e6;
      report.peakRssBytes = peakRssBytes();
      writeFileSync(join(dir, 'transmla.json'), JSON.stringify(report, null, 2) + '\n');
      try {
        await writeReport(dir);
      } catch (e) {
        log(`warning: report.html not written: ${(e as Error).message}`);
      }
    });
    log(`saved ${out}`);
    return report;
  } finally {
    keyCovs?.close();
    ck.close();
  }
}
