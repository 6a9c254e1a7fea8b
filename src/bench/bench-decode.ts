// Decode speed of one model at several context lengths, in the current process:
// - our engine: the cache is filled by prefill (512 tokens at a time, ascending contexts so the
//   whole run costs one prefill of the longest context), then `decodeTokens` greedy steps are
//   timed per context (one token per forward, logits and argmax included, as generation does);
// - llama.cpp (node-llama-cpp, CPU, default f16 KV cache) on a GGUF of the same weights in the
//   same dtype, written by our exporter (llama architecture for Llama-family folders, deepseek2 for
//   stock-semantics MLA folders), driven the same way.
// The speed figure is the best of `reps` repetitions (others share the machine; the best is the
// least disturbed). Each result carries what a decode step must read (weights + cache), so the
// caller can set it against a measured memory bandwidth (the roofline).
// Token ids are pseudo-random: decode cost does not depend on which tokens are cached.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportFolderGguf, ggufExportUnsupported } from '../export/gguf.js';
import type { Decoder } from '../models/decoder.js';
import { loadModel } from '../arch/load.js';
import { kernels } from '../kernels/index.js';
import { loadNativeAddon } from '../kernels/native.js';
import type { FloatDType, QuantDType, WeightDType } from '../kernels/types.js';
import { CacheBuffer, HalfCacheBuffer, type KvCache } from '../models/kv-cache.js';
import { describeModel } from '../arch/describe.js';
import { argmax } from '../models/sample.js';
import { bytesPerElement, isQuantDType, tensorBytes } from '../tensor.js';
import { peakRssBytes } from '../eval/memory.js';
import type { DecodeAtContext, DecodeBench } from '../schema/bench-json.js';

export type { DecodeAtContext, DecodeBench } from '../schema/bench-json.js';

export interface DecodeBenchOptions {
  /** Cached tokens before the timed steps, ascending order not required. */
  contexts: number[];
  /** Timed decode steps per context (default 64). */
  decodeTokens?: number;
  /** Repetitions per context; the fastest counts (default 3). */
  reps?: number;
  /** Threads (our native kernels' OpenMP team, llama.cpp's threads); default: what the engine picks. */
  threads?: number;
  /** Progress lines. */
  log?: (line: string) => void;
  /** Our engine's load-time weight quantization (--weights); llama.cpp gets a GGUF of that type. */
  weights?: QuantDType | null;
  /** Our engine's KV cache dtype (default f16, as llama.cpp's). */
  kvDtype?: FloatDType;
  /**
   * How our engine's cache is filled up to each context: 'prefill' (default) runs the prompt;
   * 'repeated-chunk' prefills one chunk and repeats its rows up to the context (a decode step
   * reads every row whatever it holds, so the timing is the same; prefill of 16K tokens of a
   * 1B model takes many minutes on a shared machine).
   */
  fill?: 'prefill' | 'repeated-chunk';
  /** Awaited before each timed repetition and after the last one (bench.ts reads the memory bandwidth there). */
  between?: (b: RepBoundary) => Promise<void>;
}

/** A point between timed repetitions: before repetition `rep` (`rep` = reps: after the last), with the previous one's time. */
export interface RepBoundary { context: number; rep: number; previousMs: number | null }


function pseudoRandomIds(n: number, vocab: number, seed: number): number[] {
  let s = seed >>> 0;
  // Skip the lowest ids (special tokens on Llama vocabularies).
  const lo = Math.min(3, vocab - 1);
  return Array.from({ length: n }, () => { s = (Math.imul(s, 1103515245) + 12345) >>> 0; return lo + (s % (vocab - lo)); });
}

/** Bytes of weights one decode step reads: every layer's attention and MLP, the final norm and head, one embedding row. */
export function decodeStepWeightBytes(model: Decoder): number {
  const c = model.config;
  let n = model.head.weightBytes() + model.norm.byteLength;
  if (model.embed !== model.head.weight) n += tensorBytes(model.embed.dtype, c.hiddenSize);
  for (const l of model.layers) n += l.inputNorm.byteLength + l.postNorm.byteLength + l.attn.decodeWeightBytes() + l.mlp.decodeWeightBytes();
  return n;
}

/** Fills cache rows [from, to) with copies of rows [0, from) (f32 and half stores), and sets its length to `to`. */
function repeatRows(cache: KvCache, from: number, to: number): void {
  cache.reserve(to);
  for (const l of cache.layers) {
    for (const b of l.buffers) {
      if (!(b instanceof CacheBuffer || b instanceof HalfCacheBuffer)) throw new Error('bench: a repeated-chunk fill needs an f32/f16/bf16 cache (not --kv-quant)');
      const w = b.width;
      for (let p = from; p < to; p += from) b.data.copyWithin(p * w, 0, Math.min(from, to - p) * w);
    }
  }
  cache.length = to;
}

function checkOptions(o: DecodeBenchOptions): { contexts: number[]; n: number; reps: number } {
  const n = o.decodeTokens ?? 64, reps = o.reps ?? 3;
  if (o.contexts.length === 0) throw new Error('bench: give at least one context length');
  for (const c of o.contexts) if (!Number.isInteger(c) || c < 1) throw new Error(`bench: context lengths must be positive integers, got ${c}`);
  if (!Number.isInteger(n) || n < 1) throw new Error(`bench: decode tokens must be a positive integer, got ${n}`);
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`bench: reps must be a positive integer, got ${reps}`);
  return { contexts: [...new Set(o.contexts)].sort((a, b) => a - b), n, reps };
}

const PREFILL_CHUNK = 512;

/** Our engine's decode speed on the model at `path`. */
export async function benchEngineDecode(path: string, o: DecodeBenchOptions): Promise<DecodeBench> {
  const { contexts, n, reps } = checkOptions(o);
  const log = o.log ?? (() => {});
  const k = kernels();
  const addon = k.backend === 'native' ? loadNativeAddon().addon : undefined;
  if (o.threads !== undefined) {
    if (!Number.isInteger(o.threads) || o.threads < 1) throw new Error(`bench: threads must be a positive integer, got ${o.threads}`);
    addon?.setThreads(o.threads);
  }
  const threads = addon ? addon.threads() : 1;
  const loaded = loadModel(path, { weights: o.weights ?? null, kvDtype: o.kvDtype ?? 'f16' });
  const model = loaded.model;
  const d = describeModel(loaded);
  const trained = loaded.config.maxPositionEmbeddings;
  const elems = model.newCache().elementsPerToken;
  const cacheBpt = model.newCache().bytesPerToken('f32');
  const fill = o.fill ?? 'prefill';
  const weightBytes = decodeStepWeightBytes(model);
  const ids = pseudoRandomIds(contexts[contexts.length - 1]!, loaded.config.vocabSize, 12345);
  const cache = model.newCache();
  let prefillMs = 0;
  const out: DecodeAtContext[] = [];
  for (const c of contexts) {
    // Continue the prefill from where the last context's prompt ended (its decode steps are dropped).
    cache.truncate(Math.min(cache.length, out.length > 0 ? out[out.length - 1]!.context : 0));
    cache.reserve(c + n);
    const t0 = performance.now();
    let logits: Float32Array = new Float32Array(0);
    const upTo = fill === 'prefill' ? c : Math.min(c, PREFILL_CHUNK);
    for (let p = cache.length; p < upTo; p += PREFILL_CHUNK) {
      logits = model.forward(ids.slice(p, Math.min(upTo, p + PREFILL_CHUNK)), cache);
      await new Promise<void>((r) => setImmediate(r));
    }
    if (upTo < c) {
      repeatRows(cache, upTo, c);
      logits = model.forward([ids[c - 1]!], cache, { pos0: c - 1 });
    }
    prefillMs += performance.now() - t0;
    const first = argmax(logits);
    let best = Infinity, prev: number | null = null;
    for (let r = 0; r < reps; r++) {
      await o.between?.({ context: c, rep: r, previousMs: prev });
      cache.truncate(c);
      let tok = first;
      const t1 = performance.now();
      for (let i = 0; i < n; i++) tok = argmax(model.forward([tok], cache));
      prev = performance.now() - t1;
      best = Math.min(best, prev);
    }
    await o.between?.({ context: c, rep: reps, previousMs: prev });
    const ms = best / n;
    out.push({
      context: c, beyondTrainedWindow: c + n > trained,
      tokensPerSecond: 1000 / ms, msPerToken: ms,
      cacheBytes: c * cacheBpt,
      bytesPerStep: weightBytes + c * cacheBpt,
      rssBytes: process.memoryUsage().rss,
    });
    log(`  transmla ${c} tokens: ${(1000 / ms).toFixed(1)} tok/s (${ms.toFixed(2)} ms/token)`);
  }
  return {
    engine: 'transmla', model: path, attention: d.attention, weightDtype: d.weightDtype, params: d.params, vocab: d.vocab, trainedContext: trained,
    cacheElementsPerToken: elems, cacheBytesPerToken: cacheBpt, cacheBytesPerTokenAtModelDtype: elems * bytesPerElement(model.weightDtype),
    cacheDtype: model.kvDtype, cacheFill: fill, weightBytesPerStep: weightBytes, decodeTokens: n, reps, threads, prefillSeconds: prefillMs / 1000,
    contexts: out, peakRssBytes: peakRssBytes(),
  };
}

/** A GGUF of the model in its weights' dtype (the file itself when it already is one); cleanup() removes a written one. */
export function ggufFor(path: string, dtype: WeightDType): { gguf: string; cleanup(): void } {
  const why = ggufExportUnsupported(path);
  if (why) throw new Error(why);
  if (path.endsWith('.gguf')) return { gguf: path, cleanup: () => {} };
  const dir = mkdtempSync(join(tmpdir(), 'transmla-bench-'));
  const gguf = join(dir, 'model.gguf');
  try {
    exportFolderGguf(path, gguf, dtype);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return { gguf, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** What the llama.cpp run reports about the model: taken from our engine's run on the same weights. */
export type ModelFacts = Pick<DecodeBench, 'model' | 'attention' | 'weightDtype' | 'params' | 'vocab' | 'trainedContext' | 'cacheElementsPerToken' | 'weightBytesPerStep'>;

/**
 * llama.cpp's decode speed on a GGUF (node-llama-cpp's prebuilt CPU binary, default f16 KV
 * cache, `threads` threads). `facts` describe the same weights (bytes per step, cache width).
 */
export async function benchLlamaCppDecode(gguf: string, facts: ModelFacts, o: DecodeBenchOptions & { threads: number }): Promise<DecodeBench> {
  const { contexts, n, reps } = checkOptions(o);
  const log = o.log ?? (() => {});
  let lib: typeof import('node-llama-cpp');
  try {
    lib = await import('node-llama-cpp');
  } catch (e) {
    throw new Error(`node-llama-cpp is not installed (it is a development dependency): ${(e as Error).message}`);
  }
  const elems = facts.cacheElementsPerToken;
  const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: lib.LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  const ctx = await model.createContext({ contextSize: contexts[contexts.length - 1]! + n + 16, batchSize: PREFILL_CHUNK, threads: o.threads });
  const seq = ctx.getSequence();
  // node-llama-cpp brands token ids; ours are plain vocabulary indices.
  const ids = pseudoRandomIds(contexts[contexts.length - 1]!, facts.vocab, 12345) as import('node-llama-cpp').Token[];
  const out: DecodeAtContext[] = [];
  let prefillMs = 0;
  try {
    for (const c of contexts) {
      // Keep the previous context's first c' − 1 prompt tokens; evaluate() then feeds token c − 1 and each sampled one.
      const keep = Math.min(seq.nextTokenIndex, out.length > 0 ? out[out.length - 1]!.context - 1 : 0);
      if (seq.nextTokenIndex > keep) await seq.eraseContextTokenRanges([{ start: keep, end: seq.nextTokenIndex }]);
      const t0 = performance.now();
      if (c - 1 > keep) await seq.evaluateWithoutGeneratingNewTokens(ids.slice(keep, c - 1));
      prefillMs += performance.now() - t0;
      let best = Infinity, prev: number | null = null;
      for (let r = 0; r < reps; r++) {
        if (seq.nextTokenIndex > c - 1) await seq.eraseContextTokenRanges([{ start: c - 1, end: seq.nextTokenIndex }]);
        await o.between?.({ context: c, rep: r, previousMs: prev });
        let got = 0;
        const t1 = performance.now();
        for await (const _tok of seq.evaluate([ids[c - 1]!], { temperature: 0 })) { if (++got === n) break; }
        prev = performance.now() - t1;
        best = Math.min(best, prev);
      }
      await o.between?.({ context: c, rep: reps, previousMs: prev });
      const ms = best / n;
      out.push({
        context: c, beyondTrainedWindow: c + n > facts.trainedContext, tokensPerSecond: 1000 / ms, msPerToken: ms,
        cacheBytes: c * elems * 2, bytesPerStep: facts.weightBytesPerStep + c * elems * 2, rssBytes: process.memoryUsage().rss,
      });
      log(`  llama.cpp ${c} tokens: ${(1000 / ms).toFixed(1)} tok/s (${ms.toFixed(2)} ms/token)`);
    }
  } finally {
    await ctx.dispose();
    await model.dispose();
    await llama.dispose();
  }
  const { model: m, attention, weightDtype, params, vocab, trainedContext, weightBytesPerStep } = facts;
  return {
    engine: 'llama.cpp', model: m, attention, weightDtype, params, vocab, trainedContext, cacheElementsPerToken: elems, weightBytesPerStep,
    cacheBytesPerToken: elems * 2, cacheBytesPerTokenAtModelDtype: elems * (isQuantDType(facts.weightDtype) ? 4 : bytesPerElement(facts.weightDtype)),
    cacheDtype: 'f16', decodeTokens: n, reps, threads: o.threads, prefillSeconds: prefillMs / 1000,
    contexts: out, peakRssBytes: peakRssBytes(),
  };
}
