// Hugging Face folders ⇄ llama2.c checkpoints: `transmla import-llama2c` (a .bin and its
// tokenizer → a Hugging Face llama folder) and `transmla export-llama2c` (a Llama-family folder
// → a .bin run.c runs). The format itself is io/llama2c.ts.
import { copyFileSync, existsSync, mkdtempSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { siblingLlama2cTokenizer } from '../arch/load.js';
import { registerTempPath } from '../io/interrupt.js';
import type { ModelArgs } from '../arch/args.js';
import { readConfig } from '../arch/registry.js';
import { checkOutputDir, checkOutputFile, withAtomicDir } from '../io/atomic-dir.js';
import { INDEX_FILE, openCheckpoint, writeCheckpoint } from '../io/checkpoint.js';
import {
  LLAMA2C_RMS_EPS, LLAMA2C_ROPE_THETA, Llama2cFormatError, llama2cToHf, readLlama2c, writeLlama2c,
  type Llama2cCheckpoint, type Llama2cHeader, type Llama2cLayer,
} from '../io/llama2c.js';
import { permuteRopeRows } from '../io/rope-rows.js';
import { kernels } from '../kernels/index.js';
import type { Tensor, WeightSource } from '../tensor.js';
import { encodeLlama2cTokenizerBin, Llama2cTokenizer } from '../tokenizer/llama2c-tokenizer.js';
import { toHfTokenizerFiles } from '../tokenizer/llama2c-to-hf.js';
export interface ImportLlama2cOptions {
  /** Replace a non-empty output folder. Default false. */
  overwrite?: boolean;
}

export interface ImportLlama2cResult {
  outDir: string;
  header: Llama2cHeader;
  files: string[];
}

/**
 * Converts a llama2.c checkpoint and its tokenizer into a Hugging Face llama folder:
 * config.json, model.safetensors (f32), generation_config.json, tokenizer.json (+ config
 * and special-tokens map) equivalent to the llama2.c tokenizer, and the tokenizer itself
 * as tokenizer.bin (plus tokenizer.model when given a SentencePiece model).
 * @param tokenizerPath a llama2.c tokenizer .bin or a SentencePiece BPE .model
 */
export async function importLlama2c(binPath: string, tokenizerPath: string, outDir: string, opts: ImportLlama2cOptions = {}): Promise<ImportLlama2cResult> {
  // The inputs are files; an output folder holding them (e.g. their own folder) would delete them.
  const guard = { overwrite: opts.overwrite ?? false, source: [binPath, tokenizerPath] };
  checkOutputDir(outDir, guard);
  const ck = readLlama2c(binPath);
  const h = ck.header;
  if (tokenizerPath.endsWith('.vocab')) {
    throw new Llama2cFormatError(tokenizerPath, 'a SentencePiece .vocab file lacks piece types and the model type; pass the .model file beside it');
  }
  const isModel = tokenizerPath.endsWith('.model');
  const tok = isModel ? Llama2cTokenizer.fromSentencePieceFile(tokenizerPath) : Llama2cTokenizer.fromBinFile(tokenizerPath, h.vocabSize);
  if (tok.vocabSize !== h.vocabSize) {
    throw new Llama2cFormatError(tokenizerPath, `tokenizer has ${tok.vocabSize} tokens but ${binPath} has vocab_size ${h.vocabSize}`);
  }
  const hf = llama2cToHf(ck, { bosId: tok.bosId, eosId: tok.eosId });
  const tokFiles = toHfTokenizerFiles(tok, h.seqLen);
  const generation: Record<string, unknown> = { bos_token_id: tok.bosId, eos_token_id: tok.eosId, max_length: h.seqLen };
  const json = (v: unknown) => JSON.stringify(v, null, 2) + '\n';
  const files = await withAtomicDir(outDir, guard, async (tmp) => {
    const written = await writeCheckpoint(tmp, hf.tensors, { metadata: { source: `llama2.c v${h.version}` } });
    writeFileSync(join(tmp, 'config.json'), json(hf.config));
    writeFileSync(join(tmp, 'generation_config.json'), json(generation));
    for (const [name, content] of Object.entries(tokFiles)) writeFileSync(join(tmp, name), json(content));
    if (isModel) {
      writeFileSync(join(tmp, 'tokenizer.bin'), encodeLlama2cTokenizerBin(tok.vocab));
      copyFileSync(tokenizerPath, join(tmp, 'tokenizer.model'));
    } else {
      copyFileSync(tokenizerPath, join(tmp, 'tokenizer.bin'));
    }
    return [...written.files, 'config.json', 'generation_config.json', ...Object.keys(tokFiles), 'tokenizer.bin', ...(isModel ? ['tokenizer.model'] : [])];
  });
  return { outDir: resolve(outDir), header: h, files };
}

// ---------------------------------------------------------------------------------
// Hugging Face → llama2.c

function f32Of(t: Tensor): Float32Array {
  if (t.dtype === 'f32') return t.data as Float32Array;
  const out = new Float32Array(t.data.length);
  kernels().toF32(t.data as Uint16Array, t.dtype, out);
  return out;
}

/**
 * Builds a llama2.c checkpoint from an HF llama config and weights. Throws when the model
 * uses something llama2.c cannot express (biases, rope scaling, theta ≠ 10000, head_dim ≠
 * hidden/heads); returns warnings for what it approximates (rms_norm_eps ≠ 1e-5, which
 * run.c hard-codes).
 */
export function hfToLlama2c(c: ModelArgs, src: WeightSource, where: string): { checkpoint: Llama2cCheckpoint; warnings: string[] } {
  const no = (what: string): never => {
    throw new Llama2cFormatError(where, `cannot be expressed as a llama2.c checkpoint: ${what}`);
  };
  if (c.modelType !== 'llama') no(`model_type ${c.modelType} (llama only)`);
  if (c.attentionBias || c.oBias || c.mlpBias) no('the model has biases');
  if (c.ropeScaling) no(`rope_scaling ${c.ropeScaling.type}`);
  if (c.ropeTheta !== LLAMA2C_ROPE_THETA) no(`rope_theta ${c.ropeTheta} (run.c uses ${LLAMA2C_ROPE_THETA})`);
  if (c.headDim * c.numHeads !== c.hiddenSize) no(`head_dim ${c.headDim} × ${c.numHeads} heads ≠ hidden_size ${c.hiddenSize}`);
  const act = c.raw.hidden_act ?? 'silu';
  if (act !== 'silu') no(`hidden_act ${String(act)}`);
  const warnings: string[] = [];
  if (c.rmsNormEps !== LLAMA2C_RMS_EPS) warnings.push(`rms_norm_eps ${c.rmsNormEps} is not stored in llama2.c files; run.c uses ${LLAMA2C_RMS_EPS}`);
  const D = c.hiddenSize;
  const V = c.vocabSize;
  const hd = c.headDim;
  const kv = c.numKvHeads * hd;
  const get = (name: string, shape: number[]): Float32Array => {
    if (!src.has(name)) throw new Llama2cFormatError(where, `no tensor "${name}"`);
    const t = src.get(name);
    if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
      throw new Llama2cFormatError(where, `tensor "${name}" has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    return f32Of(t);
  };
  // A tied head may be stored under either name.
  const embName = src.has('model.embed_tokens.weight') || !c.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  const header: Llama2cHeader = {
    version: 0,
    dim: D,
    hiddenDim: c.intermediateSize,
    nLayers: c.numLayers,
    nHeads: c.numHeads,
    nKvHeads: c.numKvHeads,
    vocabSize: V,
    seqLen: c.maxPositionEmbeddings,
    sharedClassifier: c.tieWordEmbeddings,
    groupSize: null,
  };
  const layers: Llama2cLayer[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}`;
    layers.push({
      rmsAtt: get(`${p}.input_layernorm.weight`, [D]),
      wq: permuteRopeRows(get(`${p}.self_attn.q_proj.weight`, [D, D]), { blocks: c.numHeads, dim: hd }, 'interleaved'),
      wk: permuteRopeRows(get(`${p}.self_attn.k_proj.weight`, [kv, D]), { blocks: c.numKvHeads, dim: hd }, 'interleaved'),
      wv: get(`${p}.self_attn.v_proj.weight`, [kv, D]),
      wo: get(`${p}.self_attn.o_proj.weight`, [D, D]),
      rmsFfn: get(`${p}.post_attention_layernorm.weight`, [D]),
      w1: get(`${p}.mlp.gate_proj.weight`, [c.intermediateSize, D]),
      w2: get(`${p}.mlp.down_proj.weight`, [D, c.intermediateSize]),
      w3: get(`${p}.mlp.up_proj.weight`, [c.intermediateSize, D]),
    });
  }
  const checkpoint: Llama2cCheckpoint = {
    header,
    tokenEmbedding: get(embName, [V, D]),
    layers,
    rmsFinal: get('model.norm.weight', [D]),
    wcls: c.tieWordEmbeddings ? null : get('lm_head.weight', [V, D]),
  };
  return { checkpoint, warnings };
}

/** realpath when the file exists (symlinks seen through), else the resolved path. */
function realOrSelf(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return resolve(p);
  }
}

export interface ExportLlama2cOptions {
  /** 0 (legacy, default; what run.c of every llama2.c fork reads) or 1. */
  version?: 0 | 1;
  overwrite?: boolean;
}

/** Writes an HF llama folder as a llama2.c checkpoint. Returns the header written and any warnings. */
export function exportLlama2c(hfFolder: string, outBin: string, opts: ExportLlama2cOptions = {}): { header: Llama2cHeader; warnings: string[] } {
  // A bad --out fails before the weights are read (the input-file clash is checked below, per shard).
  checkOutputFile(outBin, { overwrite: opts.overwrite ?? false });
  const config = readConfig(hfFolder);
  const src = openCheckpoint(hfFolder);
  try {
    const { checkpoint, warnings } = hfToLlama2c(config, src, hfFolder);
    const version = opts.version ?? 0;
    const inputs = [join(hfFolder, 'config.json'), ...src.shardPaths(), ...(existsSync(join(hfFolder, INDEX_FILE)) ? [join(hfFolder, INDEX_FILE)] : [])];
    const target = realOrSelf(outBin);
    const clash = inputs.find((p) => realOrSelf(p) === target);
    if (clash) throw new Llama2cFormatError(resolve(outBin), `output is an input of the export (${clash}); choose another output file`);
    writeLlama2c(outBin, checkpoint, { version, overwrite: opts.overwrite ?? false });
    return { header: { ...checkpoint.header, version }, warnings };
  } finally {
    src.close();
  }
}

/**
 * Runs `fn` on a Hugging Face folder of `model`: the folder itself, or, for a llama2.c .bin (which
 * every <model> argument accepts), the folder importLlama2c writes into a temporary directory,
 * removed afterwards (also on an interrupt). The tokenizer is `tokenizer`, else the one beside
 * the checkpoint as the loaders find it (tokenizer.bin or the only other tok*.bin).
 */
export async function withHfFolder<T>(model: string, tokenizer: string | undefined, fn: (folder: string) => Promise<T>): Promise<T> {
  if (!model.endsWith('.bin') || !existsSync(model) || statSync(model).isDirectory()) return fn(model);
  const tok = tokenizer ?? siblingLlama2cTokenizer(model);
  if (!tok) throw new Llama2cFormatError(model, 'a llama2.c checkpoint needs its tokenizer to be converted: put tokenizer.bin beside it or pass --tokenizer FILE (tok*.bin or a SentencePiece .model)');
  const tmp = mkdtempSync(join(tmpdir(), 'transmla-llama2c-'));
  const unregister = registerTempPath(tmp);
  try {
    const folder = join(tmp, 'hf');
    await importLlama2c(model, tok, folder);
    return await fn(folder);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    unregister();
  }
}
