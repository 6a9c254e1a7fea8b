// Strict DeepSeek-V3 export (docs/methods.md#strict-export, #biases; docs/stock-engines.md) (`transmla export <mla-folder> --target deepseek-v3`, and
// `transmla convert … --target deepseek-v3`): the exact MLA folder written by `convert` (no
// kv_a_layernorm) becomes a folder stock DeepSeek-V3 code loads with no custom keys:
//
// - kv_a_layernorm (and q_a_layernorm with q_lora_rank) added and calibrated, and kv_b_proj
//   (q_b_proj) refit by least squares over calibration latents to absorb what the per-token
//   normalisation changes, after a per-channel rescaling of the latent that steadies its RMS
//   (latent-norm.ts); layer inputs come from the already-exported layers (sequential calibration);
// - q_pe/k_pe rows permuted to interleaved pairs when the source folder is rotate-half
//   (rope_interleave: false), so stock interleaved RoPE reproduces it exactly;
// - biases: stock DeepSeek-V3 (attention_bias false) has none. What is exact is dropped: the part
//   of the latent bias that only feeds the NoPE keys adds q·W_UK·b to every key's score alike and
//   drops out of the softmax. The rest (query bias, RoPE-key bias, the constant output W_o·W_UV·b
//   of a value bias, an o_proj bias) is folded into the weights as b·(uᵀx), uᵀx the calibrated
//   least-squares reproduction of 1 from the layer input (docs/methods.md#bias-fold), with the
//   residual recorded per layer; a layer whose residual exceeds --max-bias-residual is refused;
// - config.json with DeepseekV3Config keys only, every MLP dense (first_k_dense_replace =
//   num_hidden_layers), lm_head.weight always written, rope_scaling carried as is (absent, linear
//   or llama3: the stock rotary embedding computes the same frequencies over qk_rope_head_dim);
// - transmla.json (variant "deepseek-v3") and README.md with the perplexity of the exact model
//   and of the stock-semantics model side by side.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stockDeepseekConfig } from '../arch/deepseek-stock.js';
import { loadModel } from '../arch/load.js';
import { HiddenStates } from '../eval/hidden-states.js';
import { assembleModel, tensorOf } from '../convert/mla-build.js';
import { paddedRanksNote, padLayerRank, padShapeOf } from '../convert/rank-pad.js';
import {
  calibrationSet, calibrationTokens, evaluateStages, evaluationTexts, stockOutputTensors, writeModelFolder, type CalibEvalOptions,
} from '../convert/pipeline.js';
import { checkOutputDir } from '../io/atomic-dir.js';
import { MlaAttention } from '../models/mla-attention.js';
import type { StockEvalReport, StockExportReport } from '../schema/transmla-json.js';
import { stockLayer, type StockLayer } from '../convert/stock-layer.js';
import { modelCard, stockNotes, stockReport } from '../convert/stock-report.js';
import { biasPlans, DEFAULT_MAX_BIAS_RESIDUAL, foldOrRefuse, type FoldedWeights } from '../convert/stock-bias.js';
import { OptionError } from '../option-error.js';

export interface StockExportOptions extends CalibEvalOptions {
  /** The exact MLA folder (written by `transmla convert`). */
  model: string;
  out: string;
  overwrite?: boolean;
  /** Calibration text; default: the one recorded in the folder's transmla.json. */
  calib?: string;
  /** Per-channel latent scales that steady the latent's per-token RMS before the fit (default true). */
  stabilize?: boolean;
  /** Refuse a layer whose calibrated bias fold leaves a larger relative error (default DEFAULT_MAX_BIAS_RESIDUAL). */
  maxBiasResidual?: number;
}

function readJson(path: string): Record<string, unknown> | null {
  if (!existsSync(path)) return null;
  try {
    const j = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    return typeof j === 'object' && j !== null && !Array.isArray(j) ? (j as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** Why an MHA2MLA folder cannot be exported, and the conversion that gives a stock folder (its source, through TransMLA). */
function mha2mlaHasNoStockForm(folder: string, report: Record<string, unknown> | null): string {
  const source = (report?.source as { path?: unknown } | undefined)?.path;
  const fraction = (report?.parameters as { kvFraction?: unknown } | undefined)?.kvFraction;
  const calib = (report?.calibration as { file?: unknown } | undefined)?.file;
  return `${folder} is an MHA2MLA folder (RoPE keys per KV head); stock DeepSeek-V3 code has one RoPE key shared by all heads, so it has no stock form. ` +
    `Convert the source with TransMLA (the default method) instead: transmla convert ${typeof source === 'string' ? source : '<source model>'} --target deepseek-v3 ` +
    `${typeof fraction === 'number' ? `--kv-fraction ${Number(fraction.toFixed(6))}` : '--kv-fraction F'} --calib ${typeof calib === 'string' ? calib : 'FILE'} --out DIR`;
}

export async function exportDeepseekV3(o: StockExportOptions): Promise<StockExportReport> {
  const log = o.log ?? (() => {});
  // A bad --out fails now, not after calibration and evaluation.
  checkOutputDir(o.out, { overwrite: o.overwrite ?? false, source: [o.model, ...(o.calib ? [o.calib] : [])] });
  const loaded = loadModel(o.model);
  if (loaded.mha2mla) throw new Error(mha2mlaHasNoStockForm(o.model, readJson(join(o.model, 'transmla.json'))));
  if (!loaded.mla) throw new Error(`${o.model} is not an MLA (DeepSeek-V3) folder; convert it first (\`transmla convert … --target deepseek-v3\`)`);
  if (loaded.mla.semantics !== 'exact') throw new Error(`${o.model} already runs in stock DeepSeek-V3 semantics (no transmla.json marking it as the exact variant); there is nothing to export`);
  const tok = loaded.tokenizer;
  if (!tok) throw new Error(`${o.model} has no tokenizer; calibration needs one`);
  const exact = loaded.model, cfg = loaded.config, mla = loaded.mla;
  const dtype = exact.weightDtype;
  const conversion = readJson(join(o.model, 'transmla.json'));
  const calibFile = o.calib ?? (() => {
    const f = (conversion?.calibration as Record<string, unknown> | undefined)?.file;
    if (typeof f === 'string' && existsSync(f)) return f;
    throw new Error(`give --calib FILE (${o.model}/transmla.json records no calibration file that exists here)`);
  })();
  const permute = !mla.ropeInterleave;
  const stabilize = o.stabilize ?? true;
  const maxBias = o.maxBiasResidual ?? DEFAULT_MAX_BIAS_RESIDUAL;
  if (!(maxBias >= 0)) throw new OptionError(`--max-bias-residual must be a number ≥ 0, got ${maxBias}`);

  // Biases first: refuse what has no fold before any work.
  const plans = biasPlans(exact.layers);
  const notes = [...stockNotes(plans, maxBias, permute, cfg.ropeScaling), ...(mla.kvLoraRanks || mla.qkRopeHeadDims ? [paddedRanksNote(exact.layers.map((x) => (x.attn as MlaAttention).p.kvLoraRank), exact.layers.map((x) => (x.attn as MlaAttention).p.qkRopeHeadDim))] : [])];

  // --- Calibration (sequential: each layer sees the inputs of the exported layers before it).
  const t0 = performance.now();
  const c = calibrationSet(calibFile, o);
  const samples = await calibrationTokens(tok, c);
  log(`calibration: ${c.samples} × ${c.seqLen} tokens from ${calibFile} (seed ${c.seed}, ${c.heldOut.length} documents held out)`);
  const built: StockLayer[] = [];
  const folds: (FoldedWeights | null)[] = [];
  const states = HiddenStates.embed(exact, samples);
  try {
    for (let l = 0; l < exact.layers.length; l++) {
      const layer = exact.layers[l]!;
      const fold = foldOrRefuse(layer, l, plans[l]!, states, maxBias, log, exact.layers.length);
      folds.push(fold);
      const s = stockLayer(layer, l, states, { stabilize, dtype, permute, fold });
      built.push(s);
      if (l + 1 < exact.layers.length) states.advance(s.layer);
      log(`  layer ${l + 1}/${exact.layers.length}: kv_b_proj refit residual ${(100 * s.kvResidual).toFixed(3)} %${s.qResidual === null ? '' : `, q_b_proj ${(100 * s.qResidual).toFixed(3)} %`}`);
    }
  } finally {
    states.close();
  }
  const stock = assembleModel(exact, built.map((b) => b.layer));
  const calSecs = (performance.now() - t0) / 1000;

  // --- Evaluation: exact (reference) vs stock semantics on the same tokens.
  const t1 = performance.now();
  const evaluations: StockEvalReport[] = [];
  for (const { text: t, result: f } of await evaluateStages(exact, [stock], tok, evaluationTexts(o, c), o)) {
    const st = f.models[0]!;
    const gap = 100 * (st.ppl / f.reference.ppl - 1);
    evaluations.push({ text: t.name, sha256: t.sha, ctx: f.ctx, chunks: f.chunks, predictions: f.predictions, convention: f.convention, exact: f.reference, stock: st, pplGapPercent: gap });
    log(`${t.name}: ${f.chunks} chunks × ${f.ctx} tokens`);
    log(`  exact MLA (no kv_a_layernorm)   ppl ${f.reference.ppl.toFixed(4)}`);
    log(`  stock DeepSeek-V3 semantics     ppl ${st.ppl.toFixed(4)}  (${gap >= 0 ? '+' : ''}${gap.toFixed(2)} %)  KL ${st.kl.toFixed(5)}  top-1 ${(100 * st.top1).toFixed(2)} %`);
  }
  const evalSecs = (performance.now() - t1) / 1000;

  const report = stockReport({
    conversion, sourcePath: typeof (conversion?.source as { path?: unknown } | undefined)?.path === 'string' ? (conversion!.source as { path: string }).path : null,
    exactFolder: resolve(o.model), out: o.out, args: cfg, mla, dtype, permute, stabilize, built, plans, folds, maxBiasResidual: maxBias, calib: c, evaluations, notes,
    seconds: { calibration: calSecs, evaluation: evalSecs, save: 0 },
  });

  const t2 = performance.now();
  const config = stockDeepseekConfig(cfg, mla, dtype);
  await writeModelFolder(o.out, { overwrite: o.overwrite ?? false, inputs: [o.model, calibFile] }, async () => ({
    srcDir: o.model, inputs: [o.model, calibFile], overwrite: o.overwrite ?? false,
    // Per-layer ranks: one kv_lora_rank in the stock config, every layer padded to the largest (rank-pad.ts).
    tensors: stockOutputTensors(o.model, built.length, (l) => padLayerRank(built[l]!.tensors, padShapeOf(exact.layers[l]!.attn as MlaAttention, mla))
      .map((t) => ({ name: t.name, tensor: tensorOf(t.data, t.shape, dtype) })), cfg.tieWordEmbeddings),
    config: JSON.stringify(config, null, 2),
    report: () => { report.seconds.save = (performance.now() - t2) / 1000; return report; },
    files: () => [{ name: 'README.md', text: modelCard(report, config) }],
    html: report.conversion !== null, log,
  }));
  return report;
}
