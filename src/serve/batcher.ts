// Continuous batching for the server: every running sequence (a choice of a request) asks for its
// next forward — a prefill chunk or one decode token, against its own KV cache — and waits; all
// asks pending when the event loop comes round run as one Decoder.hiddenBatch step (one GEMM per
// weight over all their rows instead of one GEMV per sequence, the LM head over the last rows of
// all of them), and each sequence gets its rows back. A sequence that finishes simply stops asking;
// a new request's sequences join at the next step. The engine's scratch memory is shared, so only
// one step runs at a time (JavaScript's single thread guarantees it: a step is synchronous).
import type { Decoder } from '../models/decoder.js';
import type { KvCache } from '../models/kv-cache.js';

export interface StepRequest {
  tokens: readonly number[];
  cache: KvCache;
  pos0: number;
  /**
   * 'last': the logits of the last token [V]; 'hidden': the final hidden states of every token
   * [T×D] (the caller scores them, e.g. echo + logprobs); 'none': only the cache is filled.
   */
  want: 'last' | 'hidden' | 'none';
}

export interface StepResult {
  /** A copy: the sequence keeps it across later steps. */
  logits: Float32Array | null;
  hidden: Float32Array | null;
}

interface Pending {
  req: StepRequest;
  resolve: (r: StepResult) => void;
  reject: (e: unknown) => void;
}

export interface BatcherOptions {
  /** Most rows (tokens, summed over sequences) one step runs (default 1024); a larger single ask runs alone. */
  maxStepTokens?: number;
  /** Most sequences one step runs (default 64). */
  maxStepSequences?: number;
}

export class Batcher {
  private pending: Pending[] = [];
  private scheduled = false;
  private readonly maxTokens: number;
  private readonly maxSeqs: number;
  /** Steps run and sequences they carried (for /health and the bench). */
  steps = 0;
  sequenceSteps = 0;

  constructor(private readonly model: Decoder, o: BatcherOptions = {}) {
    this.maxTokens = o.maxStepTokens ?? 1024;
    this.maxSeqs = o.maxStepSequences ?? 64;
    if (!(Number.isInteger(this.maxTokens) && this.maxTokens >= 1)) throw new Error(`maxStepTokens must be an integer ≥ 1, got ${this.maxTokens}`);
    if (!(Number.isInteger(this.maxSeqs) && this.maxSeqs >= 1)) throw new Error(`maxStepSequences must be an integer ≥ 1, got ${this.maxSeqs}`);
  }

  /** Sequences waiting for the next step. */
  get waiting(): number {
    return this.pending.length;
  }

  /** Runs `req` in the next step (with every other ask pending by then). */
  run(req: StepRequest): Promise<StepResult> {
    if (req.tokens.length === 0) return Promise.reject(new Error('a step needs at least one token'));
    return new Promise<StepResult>((resolve, reject) => {
      this.pending.push({ req, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // setImmediate, not a microtask: sequences resumed by the last step ask again first, and
    // the event loop reads new requests (which then join) before the step runs.
    setImmediate(() => {
      this.scheduled = false;
      this.step();
      if (this.pending.length > 0) this.schedule();
    });
  }

  private step(): void {
    // Oldest asks first, up to the step's budget (always at least one).
    let rows = 0, n = 0;
    while (n < this.pending.length && n < this.maxSeqs) {
      const T = this.pending[n]!.req.tokens.length;
      if (n > 0 && rows + T > this.maxTokens) break;
      rows += T;
      n++;
    }
    const batch = this.pending.splice(0, n);
    let results: StepResult[];
    try {
      results = this.forward(batch.map((p) => p.req), rows);
    } catch (e) {
      for (const p of batch) p.reject(e);
      return;
    }
    this.steps++;
    this.sequenceSteps += batch.length;
    batch.forEach((p, i) => p.resolve(results[i]!));
  }

  private forward(reqs: StepRequest[], rows: number): StepResult[] {
    const m = this.model, D = m.config.hiddenSize, V = m.config.vocabSize;
    const h = m.hiddenBatch(reqs.map((r) => ({ tokens: r.tokens, cache: r.cache, pos0: r.pos0 })));
    const wantLogits = reqs.filter((r) => r.want === 'last').length;
    // The last rows of the sequences that want logits, gathered so the head runs as one GEMM.
    const last = new Float32Array(wantLogits * D);
    const out: StepResult[] = [];
    let end = 0, j = 0;
    for (const r of reqs) {
      const start = end;
      end += r.tokens.length;
      if (r.want === 'last') last.set(h.subarray((end - 1) * D, end * D), (j++) * D);
      out.push({ logits: null, hidden: r.want === 'hidden' ? h.slice(start * D, end * D) : null });
    }
    if (end !== rows) throw new Error(`batch rows ${end} ≠ ${rows}`);
    if (wantLogits > 0) {
      const logits = new Float32Array(wantLogits * V);
      m.logitsFromHidden(last, wantLogits, logits);
      j = 0;
      reqs.forEach((r, i) => { if (r.want === 'last') { out[i]!.logits = logits.subarray(j * V, (j + 1) * V); j++; } });
    }
    return out;
  }
}
