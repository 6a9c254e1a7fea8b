// llama.cpp (node-llama-cpp's prebuilt CPU binary) as the reference the engine tests compare
// against. In CI a llama.cpp that does not start is a failure; elsewhere those tests skip.
import { after, before } from 'node:test';
import type { ControlledEvaluateInputItem, Llama, LlamaModel as CppModel, Token } from 'node-llama-cpp';
import { logSoftmax } from './random-llama.js';

export interface LlamaCppHarness {
  /** Why llama.cpp is unavailable (tests skip with it), or false. */
  unavailable(): string | false;
  /**
   * llama.cpp's next-token log-probabilities after each prefix of `ids`, with an f32 KV cache and
   * no flash attention (its default f16 cache alone moves log-probs by ~1e-2 on these models).
   * The context gets 32 spare positions: when the tokens fill it exactly, the last logits row
   * llama.cpp returns for deepseek2 differs (seen at 256 tokens in a 256-token context).
   */
  logProbs(gguf: string, ids: number[], vocab: number): Promise<Float64Array[]>;
  /** The same for several sequences with one model load; `visit` gets each sequence's rows in turn. */
  eachLogProbs(gguf: string, seqs: number[][], vocab: number, visit: (i: number, rows: Float64Array[]) => void): Promise<void>;
}

/** Registers before/after hooks that start and dispose one llama.cpp for the calling test file. */
export function useLlamaCpp(): LlamaCppHarness {
  let llama: Llama | null = null;
  let unavailable: string | false = false;
  before(async () => {
    try {
      const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
      llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
    } catch (e) {
      if (process.env.CI === 'true') throw e;
      unavailable = `node-llama-cpp could not start: ${(e as Error).message}`;
    }
  });
  after(async () => {
    await llama?.dispose();
  });
  async function rowsOf(model: CppModel, ids: number[], vocab: number): Promise<Float64Array[]> {
    const ctx = await model.createContext({
      contextSize: Math.max(64, ids.length + 32), batchSize: Math.max(64, ids.length), threads: 2,
      flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32',
    });
    const seq = ctx.getSequence();
    const res = await seq.controlledEvaluate(ids.map((t): ControlledEvaluateInputItem => [t as Token, { generateNext: { logits: true } }]));
    await ctx.dispose();
    return ids.map((_, i) => {
      const m = res[i]?.next.logits;
      if (!m || m.size !== vocab) throw new Error(`llama.cpp returned ${m?.size ?? 0} logits at position ${i}, expected ${vocab}`);
      const row = new Float64Array(vocab);
      for (const [tok, v] of m) row[tok] = v;
      return logSoftmax(row);
    });
  }
  async function eachLogProbs(gguf: string, seqs: number[][], vocab: number, visit: (i: number, rows: Float64Array[]) => void): Promise<void> {
    const model: CppModel = await llama!.loadModel({ modelPath: gguf, gpuLayers: 0 });
    try {
      for (let i = 0; i < seqs.length; i++) visit(i, await rowsOf(model, seqs[i]!, vocab));
    } finally {
      await model.dispose();
    }
  }
  return {
    unavailable: () => unavailable,
    async logProbs(gguf, ids, vocab) {
      let out: Float64Array[] = [];
      await eachLogProbs(gguf, [ids], vocab, (_, rows) => { out = rows; });
      return out;
    },
    eachLogProbs,
  };
}
