// The strict export's transmla.json and model card, for the default `convert` (which writes the
// stock folder in the same sweep) and for `export --target deepseek-v3` of an exact folder.
import { basename, resolve } from 'node:path';
import { ropeScalingJson, type ModelArgs } from '../arch/args.js';
import { STOCK_VARIANT } from '../arch/deepseek-stock.js';
import type { MlaShapeFields } from '../arch/deepseek-stock.js';
import type { FloatDType } from '../kernels/types.js';
import type { RopeScaling } from '../models/rope.js';
import type { StockEvalReport, StockExportReport } from '../schema/transmla-json.js';
import type { CalibrationSet } from './pipeline.js';
import { sha256File } from './pipeline.js';
import type { StockLayer } from './stock-layer.js';
import { needsCalibration, type BiasPlan, type FoldedWeights } from './stock-bias.js';

/** What the export did beyond the norm fit, for the card and transmla.json. */
export function stockNotes(plans: readonly BiasPlan[], maxBias: number, permute: boolean, ropeScaling: RopeScaling | null): string[] {
  const notes: string[] = [];
  if (plans.some((x) => x.latentKeyOnly)) notes.push('A latent bias of kv_a_proj_with_mqa that reaches only the NoPE keys was dropped: it adds the same amount to every key\'s score and drops out of the softmax (exact).');
  if (plans.some(needsCalibration)) {
    notes.push(`Attention biases stock DeepSeek-V3 cannot hold (query, RoPE key, value/o_proj) were folded into the weights as b·(uᵀx), uᵀx the least-squares reproduction of the constant 1 from the layer's normed input over the calibration tokens (docs/methods.md#bias-fold); ` +
      `per-layer residuals are in transmla.json (layers[].biasFold), bounded by --max-bias-residual ${maxBias}.`);
  }
  if (permute) notes.push('q_pe/k_pe rows were permuted from rotate-half to interleaved pairs (exact: same scores).');
  if (ropeScaling) notes.push(`rope_scaling ${ropeScaling.type} carried as is: the stock rotary embedding applies it over qk_rope_head_dim, as this engine does (exact). llama.cpp GGUF export refuses llama3 scaling.`);
  return notes;
}

export interface StockReportFacts {
  conversion: Record<string, unknown> | null;
  sourcePath: string | null;
  exactFolder: string | null;
  out: string;
  args: ModelArgs;
  mla: MlaShapeFields;
  dtype: FloatDType;
  permute: boolean;
  stabilize: boolean;
  /** Per layer: the fit's residuals (the layers themselves are not kept: a streaming conversion holds one). */
  built: readonly Pick<StockLayer, 'kvResidual' | 'qResidual' | 'kvNormKept'>[];
  plans: readonly BiasPlan[];
  folds: readonly (FoldedWeights | null)[];
  maxBiasResidual: number;
  calib: CalibrationSet;
  evaluations: StockEvalReport[];
  notes: string[];
  seconds: StockExportReport['seconds'];
}

export function stockReport(f: StockReportFacts): StockExportReport {
  const { mla: m, calib: c } = f;
  return {
    tool: 'transmla',
    variant: STOCK_VARIANT,
    method: 'strict DeepSeek-V3 export: calibrated kv_a_layernorm (q_a_layernorm) with least-squares refit of kv_b_proj (q_b_proj)',
    created: new Date().toISOString(),
    source: { path: f.sourcePath, exactFolder: f.exactFolder },
    output: resolve(f.out),
    conversion: f.conversion,
    parameters: {
      kvLoraRank: m.kvLoraRank, qLoraRank: m.qLoraRank, qkRopeHeadDim: m.qkRopeHeadDim, qkNopeHeadDim: m.qkNopeHeadDim, vHeadDim: m.vHeadDim, dtype: f.dtype,
      ropePermuted: f.permute,
      ropeScaling: f.args.ropeScaling ? JSON.stringify(ropeScalingJson(f.args.ropeScaling)) : 'none',
      latentNormFit: `${f.stabilize ? 'latent channels rescaled by s (s² by least squares so that Σ s_i²c_i² is as constant as possible per token), then ' : ''}latent rows of kv_a_proj_with_mqa (q_a_proj) scaled by α so the calibration latent has mean square 1; g_i = α·RMS(c_i)/RMS(n_i), n = c/rms(c); W' = W·diag(1/s)·S_cn·S_nn⁻¹·diag(1/g) (float64 Grams over calibration latents)`,
      softmaxScale: `(qk_nope_head_dim + qk_rope_head_dim)^−½ = ${(1 / Math.sqrt(m.qkNopeHeadDim + m.qkRopeHeadDim)).toPrecision(6)}`,
    },
    layers: f.built.map((b, l) => ({ kvResidual: b.kvResidual, qResidual: b.qResidual, kvNormKept: b.kvNormKept, latentBiasFolded: f.plans[l]!.latentKeyOnly, ...(f.folds[l] && { biasFold: f.folds[l]!.report }) })),
    ...(f.plans.some(needsCalibration) && { maxBiasResidual: f.maxBiasResidual }),
    calibration: { file: resolve(c.file), sha256: sha256File(c.file), samples: c.samples, seqLen: c.seqLen, tokens: c.samples * c.seqLen, seed: c.seed, order: 'sequential' },
    evaluations: f.evaluations,
    notes: f.notes,
    seconds: f.seconds,
  };
}

export function modelCard(rep: StockExportReport, config: Record<string, unknown>): string {
  const conv = rep.conversion as { parameters?: Record<string, unknown> } | null;
  const base = basename(rep.source.path ?? rep.source.exactFolder ?? rep.output);
  const p = rep.parameters;
  const rows = rep.evaluations.map((e) =>
    `| ${e.text} | ${e.ctx} × ${e.chunks} | ${e.exact.ppl.toFixed(4)} | ${e.stock.ppl.toFixed(4)} | ${e.pplGapPercent >= 0 ? '+' : ''}${e.pplGapPercent.toFixed(2)} % | ${e.stock.kl.toFixed(5)} | ${(100 * e.stock.top1).toFixed(2)} % |`);
  const cp = conv?.parameters ?? {};
  const convLines = Object.keys(cp).length
    ? ['', '## Conversion (TransMLA, training-free)', '', ...['kvFraction', 'freqFold', 'collapse', 'balanceKvRatio', 'calibOrder', 'pcaDamp'].filter((k) => k in cp).map((k) => `- ${k}: ${JSON.stringify(cp[k])}`)]
    : [];
  return [
    '---',
    `base_model: ${JSON.stringify(base)}`,
    'library_name: transformers',
    'pipeline_tag: text-generation',
    'tags:',
    '  - transmla',
    '  - mla',
    '  - deepseek_v3',
    '  - kv-cache-compression',
    '---',
    '',
    `# ${base} as DeepSeek-V3 Multi-head Latent Attention`,
    '',
    `Converted with transmla from \`${base}\` (GQA/MHA) to MLA and exported in the stock DeepSeek-V3 layout: ` +
      `\`DeepseekV3ForCausalLM\`, no custom code, every MLP dense (first_k_dense_replace = ${String(config.num_hidden_layers)}).`,
    '',
    '## Shape',
    '',
    `- kv_lora_rank ${p.kvLoraRank}, qk_rope_head_dim ${p.qkRopeHeadDim}, qk_nope_head_dim ${p.qkNopeHeadDim}, v_head_dim ${p.vHeadDim}, q_lora_rank ${p.qLoraRank ?? 'none'}`,
    `- KV cache per token per layer: ${p.kvLoraRank + p.qkRopeHeadDim} values (latent + shared RoPE key)`,
    `- weights ${p.dtype}; RoPE interleaved (rope_interleave true); rope_scaling ${p.ropeScaling}`,
    `- softmax scale ${p.softmaxScale}`,
    ...convLines,
    '',
    '## Export to stock semantics',
    '',
    `The exact conversion has no kv_a_layernorm; stock DeepSeek-V3 RMS-normalises the latent. The norm weight is calibrated and kv_b_proj refit by least squares on ${rep.calibration.tokens} calibration tokens (${rep.calibration.file}, seed ${rep.calibration.seed}): ${p.latentNormFit}.`,
    ...rep.notes.map((n) => `- ${n}`),
    '',
    '## Measured (transmla engine, f32 compute)',
    '',
    '| text | ctx × chunks | ppl exact MLA | ppl stock DeepSeek-V3 | gap | KL(exact ‖ stock) | top-1 agreement |',
    '|---|---|---|---|---|---|---|',
    ...rows,
    '',
    `Convention: ${rep.evaluations[0]?.convention ?? ''}`,
    '',
    `Per-layer relative least-squares error of the refit kv_b_proj: ${rep.layers.map((l) => (100 * l.kvResidual).toFixed(3) + ' %').join(', ')}.`,
    ...(rep.layers.some((l) => l.biasFold)
      ? ['', `Per-layer error of the calibrated bias fold (relative mean-square error of the attention output over the calibration tokens): ${rep.layers.map((l) => (l.biasFold ? `${(100 * l.biasFold.attention).toFixed(3)} %` : '–')).join(', ')}.`]
      : []),
    '',
  ].join('\n');
}
