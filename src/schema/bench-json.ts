// bench.json (`transmla bench`), as types: read by report/, written by bench/.
import type { FloatDType, WeightDType } from '../kernels/types.js';

export interface BandwidthResult {
  /** Best bytes/s over all thread counts: the machine figure. */
  bytesPerSecond: number;
  singleThreadBytesPerSecond: number;
  parallelBytesPerSecond: number;
  threads: number;
  bufferBytes: number;
  reps: number;
  method: string;
}

export interface DecodeAtContext {
  context: number;
  /** The context exceeds max_position_embeddings: measured for speed only. */
  beyondTrainedWindow: boolean;
  tokensPerSecond: number;
  msPerToken: number;
  /** Cache bytes held at this context as the engine stores it (DecodeBench.cacheDtype). */
  cacheBytes: number;
  /** Bytes one decode step must read at least: every weight once + the whole cache once. */
  bytesPerStep: number;
  /** Resident set size right after this context's decode (process-wide). */
  rssBytes: number;
}

export interface DecodeBench {
  engine: 'transmla' | 'llama.cpp';
  model: string;
  attention: string;
  /** How the weight matrices are stored (q8_0/q4_0: quantized). */
  weightDtype: WeightDType;
  params: number;
  vocab: number;
  trainedContext: number;
  /** Cached values per token over all layers. */
  cacheElementsPerToken: number;
  /** Bytes per token of the cache as the engine stores it. */
  cacheBytesPerToken: number;
  /** Bytes per token of the cache at the weights' dtype (the conversion's reporting figure). */
  cacheBytesPerTokenAtModelDtype: number;
  cacheDtype: FloatDType;
  /** How the cache was filled before the timed steps: by prefill, or (ours) by repeating the rows of one prefilled chunk. */
  cacheFill?: 'prefill' | 'repeated-chunk';
  /** Weight bytes a decode step reads (the embedding contributes one row unless it is also the head). */
  weightBytesPerStep: number;
  decodeTokens: number;
  reps: number;
  /** Threads the engine ran with. */
  threads: number;
  prefillSeconds: number;
  contexts: DecodeAtContext[];
  /** This process's peak resident set size at the end of the run. */
  peakRssBytes: number;
}

/** One reading of the memory bandwidth: one scan by one thread and one by all workers. */
export interface BandwidthSample {
  /** When the reading started, ms since the epoch (performance.timeOrigin + now(), comparable across processes). */
  at: number;
  /** The better of the two scans. */
  bytesPerSecond: number;
  singleThreadBytesPerSecond: number;
  parallelBytesPerSecond: number;
}

/** A bandwidth reading at a repetition boundary of one engine's run. */
export interface ProbeAtBoundary extends BandwidthSample {
  context: number;
  /** The repetition it preceded (= reps: read after the last one). */
  beforeRep: number;
  /** Milliseconds of the repetition before it (null before the first). */
  previousMs: number | null;
}

export type AboveRooflineKind = 'cache-resident' | 'disturbed probe' | 'faster than every probe';

/**
 * The memory roofline at one context. Files written before bandwidth was read between timed
 * repetitions have only the first four fields (report/ copes with that).
 */
export interface RooflinePoint {
  context: number;
  /** bytesPerStep / bandwidthBytesPerSecond: the fastest a decode step can be on this machine. */
  minMsPerToken: number;
  /** minMsPerToken / measured ms per token (1 = at the memory roofline). */
  fractionOfRoofline: number;
  /** bytesPerStep / measured time per step. */
  achievedBytesPerSecond: number;
  /**
   * The bandwidth used: the better of the two readings next to the fastest repetition (a reading
   * disturbed by other processes is low), or the up-front figure when no reading was taken.
   */
  bandwidthBytesPerSecond: number;
  bandwidthSource: 'adjacent probes' | 'up-front measurement';
  /** The readings just before and just after the fastest repetition. */
  adjacent: { before: BandwidthSample; after: BandwidthSample } | null;
  /** [slowest, fastest] bandwidth over every reading of the run and the up-front figure. */
  bandwidthRange: [number, number];
  /** The roofline at the fastest and at the slowest bandwidth of that range. */
  minMsPerTokenRange: [number, number];
  fractionOfRooflineRange: [number, number];
  /** Why the step was faster than its roofline (fractionOfRoofline > 1); null when it was not. */
  aboveRoofline: string | null;
  /** The same reason as a key (for charts and scripts). */
  aboveRooflineKind: AboveRooflineKind | null;
}

export interface BenchRun extends DecodeBench {
  role: 'model' | 'compare';
  roofline: RooflinePoint[];
  /** Bandwidth read at every repetition boundary of this run, in order. */
  bandwidthProbes: ProbeAtBoundary[];
}

export interface BenchRatio {
  context: number;
  /** model tokens/s ÷ comparison tokens/s (our engine for both). */
  decodeSpeedup: number;
  /** model cache bytes ÷ comparison cache bytes. */
  cacheBytesRatio: number;
}

export interface BenchReport {
  tool: 'transmla bench';
  created: string;
  machine: {
    cpuModel: string; cpus: number; totalMemoryBytes: number; kernels: string; node: string; loadAverageBefore: number; loadAverageAfter: number;
    lastLevelCacheBytes: number | null;
  };
  /** Measured before the runs (best of a few readings). */
  bandwidth: BandwidthResult;
  /** Every reading taken between timed repetitions, over all runs: how many and their range. */
  bandwidthProbes: { count: number; minBytesPerSecond: number; maxBytesPerSecond: number };
  model: string;
  compare: string | null;
  /** Where the comparison model came from. */
  compareSource: 'given' | 'transmla.json source' | 'none';
  contexts: number[];
  runs: BenchRun[];
  ratios: BenchRatio[];
  /** Models llama.cpp could not run, and why. */
  llamaCppSkipped: { model: string; reason: string }[];
  notes: string[];
}
