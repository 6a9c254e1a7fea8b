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
// - biases: stock DeepSeek-V3 (attention_bias false) has none. What is exact is folded: the part
//   of the latent bias that only feeds the NoPE keys adds q·W_UK·b to every key's score alike and
//   drops out of the softmax. Everything else is refused with the reason (a query bias varies
//   with the key; a RoPE-key bias rotates with position; a value bias becomes the constant
//   output W_o·W_UV·b, for which stock DeepSeek has no slot);
// - config.json with DeepseekV3Config keys only, every MLP dense (first_k_dense_replace =
//   num_hidden_layers), lm_head.weight always written, rope_scaling carried as is (absent, linear
//   or llama3: the stock rotary embedding computes the same frequencies over qk_rope_head_dim);
// - transmla.json (variant "deepseek-v3") and README.md with the perplexity of the exact model
//   and of the stock-semantics model side by side.
import { existsSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { ropeScalingJson } from '../arch/args.js';
import { STOCK_VARIANT, stockDeepseekV3Config } from '../arch/deepseek-stock.js';
import { loadModel } from '../arch/load.js';
import { HiddenStates } from '../convert/calibrate.js';
import { assembleModel, tensorOf } from '../convert/mla-build.js';
import {
  calibrationSet, calibrationTokens, evaluateStages, evaluationTexts, sha256File, writeModelFolder, type CalibEvalOptions,
} from '../convert/pipeline.js';
import { checkOutputDir } from '../io/atomic-dir.js';
import { openCheckpoint } from '../io/checkpoint.js';
import type { NamedTensor } from '../io/safetensors.js';
import type { FloatDType } from '../kernels/types.js';
import { MlaAttention } from '../models/mla-attention.js';
import type { StockEvalReport, StockExportReport } from '../schema/transmla-json.js';
import type { Tensor } from '../tensor.js';
import { foldAttentionBiases, stockLayer, type StockLayer } from './deepseek-v3-layer.js';

export interface StockExportOptions extends CalibEvalOptions {
  /** The exact MLA folder (written by `transmla convert`). */
  model: string;
  out: string;
  overwrite?: boolean;
  /** Calibration text; default: the one recorded in the folder's transmla.json. */
  calib?: string;
  /** Per-channel latent scales that steady the latent's per-token RMS before the fit (default true). */
  stabilize?: boolean;
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
  const dR = mla.qkRopeHeadDim, dn = mla.qkNopeHeadDim, dv = mla.vHeadDim, r = mla.kvLoraRank, rq = mla.qLoraRank;
  const qh = dn + dR;
  const permute = !mla.ropeInterleave;
  const notes: string[] = [];
  const stabilize = o.stabilize ?? true;

  // Biases first: refuse before any work.
  const folded = exact.layers.map((l, i) => {
    if (!(l.attn instanceof MlaAttention)) throw new Error(`layer ${i} is not MLA attention`);
    return foldAttentionBiases(l.attn, i);
  });
  if (folded.some((x) => x)) notes.push('A latent bias of kv_a_proj_with_mqa that reaches only the NoPE keys was dropped: it adds the same amount to every key\'s score and drops out of the softmax (exact).');
  if (permute) notes.push('q_pe/k_pe rows were permuted from rotate-half to interleaved pairs (exact: same scores).');
  if (cfg.ropeScaling) notes.push(`rope_scaling ${cfg.ropeScaling.type} carried as is: the stock rotary embedding applies it over qk_rope_head_dim, as this engine does (exact). llama.cpp GGUF export refuses llama3 scaling.`);

  // --- Calibration (sequential: each layer sees the inputs of the exported layers before it).
  const t0 = performance.now();
  const c = calibrationSet(calibFile, o);
  const samples = calibrationTokens(tok, c);
  log(`calibration: ${c.samples} × ${c.seqLen} tokens from ${calibFile} (seed ${c.seed}, ${c.heldOut.length} documents held out)`);
  const built: StockLayer[] = [];
  const states = HiddenStates.embed(exact, samples);
  try {
    for (let l = 0; l < exact.layers.length; l++) {
      const s = stockLayer(exact.layers[l]!, l, states, { stabilize, dtype, permute });
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

  const report: StockExportReport = {
    tool: 'transmla',
    variant: STOCK_VARIANT,
    method: 'strict DeepSeek-V3 export: calibrated kv_a_layernorm (q_a_layernorm) with least-squares refit of kv_b_proj (q_b_proj)',
    created: new Date().toISOString(),
    source: {
      path: typeof (conversion?.source as { path?: unknown } | undefined)?.path === 'string' ? (conversion!.source as { path: string }).path : null,
      exactFolder: resolve(o.model),
    },
    output: resolve(o.out),
    conversion,
    parameters: {
      kvLoraRank: r, qLoraRank: rq, qkRopeHeadDim: dR, qkNopeHeadDim: dn, vHeadDim: dv, dtype,
      ropePermuted: permute,
      ropeScaling: cfg.ropeScaling ? JSON.stringify(ropeScalingJson(cfg.ropeScaling)) : 'none',
      latentNormFit: `${stabilize ? 'latent channels rescaled by s (s² by least squares so that Σ s_i²c_i² is as constant as possible per token), then ' : ''}latent rows of kv_a_proj_with_mqa (q_a_proj) scaled by α so the calibration latent has mean square 1; g_i = α·RMS(c_i)/RMS(n_i), n = c/rms(c); W' = W·diag(1/s)·S_cn·S_nn⁻¹·diag(1/g) (float64 Grams over calibration latents)`,
      softmaxScale: `(qk_nope_head_dim + qk_rope_head_dim)^−½ = ${(1 / Math.sqrt(qh)).toPrecision(6)}`,
    },
    layers: built.map((b, l) => ({ kvResidual: b.kvResidual, qResidual: b.qResidual, kvNormKept: b.kvNormKept, latentBiasFolded: folded[l]! })),
    calibration: { file: resolve(calibFile), sha256: sha256File(calibFile), samples: c.samples, seqLen: c.seqLen, tokens: c.samples * c.seqLen, seed: c.seed, order: 'sequential' },
    evaluations,
    notes,
    seconds: { calibration: calSecs, evaluation: evalSecs, save: 0 },
  };

  const t2 = performance.now();
  const config = stockDeepseekV3Config(cfg, mla, dtype);
  await writeModelFolder(o.out, { overwrite: o.overwrite ?? false, inputs: [o.model, calibFile] }, async () => ({
    srcDir: o.model, inputs: [o.model, calibFile], overwrite: o.overwrite ?? false,
    tensors: stockTensors(o.model, built, dtype, cfg.tieWordEmbeddings),
    config: JSON.stringify(config, null, 2),
    report: () => { report.seconds.save = (performance.now() - t2) / 1000; return report; },
    files: [{ name: 'README.md', text: modelCard(report, config) }],
    html: report.conversion !== null, log,
  }));
  log(`saved ${resolve(o.out)}`);
  return report;
}

/** The exact folder's tensors with each layer's attention replaced, lm_head.weight always present. */
function* stockTensors(srcDir: string, layers: readonly StockLayer[], dtype: FloatDType, tied: boolean): Generator<NamedTensor> {
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
        yield { name, tensor: t };
        continue;
      }
      const l = Number(m[1]);
      if (done.has(l)) continue;
      done.add(l);
      const L = layers[l];
      if (!L) throw new Error(`no exported attention for layer ${l}`);
      for (const t of L.tensors) yield { name: t.name, tensor: tensorOf(t.data, t.shape, dtype) };
    }
    if (done.size !== layers.length) throw new Error(`the checkpoint has attention tensors for ${done.size} layers, the export ${layers.length}`);
    // A tied model may store the shared matrix as lm_head.weight only: stock code needs the embedding.
    if (!embed && head && tied) yield { name: 'model.embed_tokens.weight', tensor: head };
    const lm = head ?? (tied ? embed : null);
    if (!lm) throw new Error('the checkpoint has neither lm_head.weight nor a tied embedding');
    yield { name: 'lm_head.weight', tensor: lm };
  } finally {
    ck.close();
  }
}

function modelCard(rep: StockExportReport, config: Record<string, unknown>): string {
  const conv = rep.conversion as { parameters?: Record<string, unknown> } | null;
  const base = basename(rep.source.path ?? rep.source.exactFolder);
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
    '',
  ].join('\n');
}
