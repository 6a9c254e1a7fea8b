// The trainer's master copy of a model: every checkpoint tensor widened to the backend's
// precision (fp32 for training, f64 for gradient checks), under its checkpoint name, with a
// gradient buffer when it is trained. Layers look their parameters up here by name; saving
// walks the same list back into checkpoint tensors, so names round-trip by construction.
import { kernels } from '../kernels/index.js';
import type { FloatDType } from '../kernels/types.js';
import type { Tensor, WeightSource } from '../tensor.js';
import type { TrainBackend, Vec } from './backend.js';

export interface Param {
  /** The checkpoint tensor name. */
  readonly name: string;
  readonly shape: readonly number[];
  /** Master values (updated in place by the optimizer). */
  readonly data: Vec;
  /** Accumulated gradient; null when the parameter is frozen. */
  grad: Vec | null;
  /** Part of the attention the conversion rewrote (what `--train attention` trains). */
  readonly attention: boolean;
  /** Weight decay applies (matrices); norms and biases are exempt, as usual. */
  readonly decay: boolean;
  /** The dtype the checkpoint stores it in (and saving writes it back in). */
  readonly dtype: FloatDType;
}

export type TrainSelection = 'attention' | 'all';

/** Tensors the trainer drops on load (buffers some exporters save, never parameters). */
const IGNORED = /\.rotary_emb\.inv_freq$/;

export class ParamStore {
  readonly list: Param[] = [];
  private readonly byName = new Map<string, Param>();
  /** Names a layer asked for; whatever was loaded and never used is an error (see checkAllUsed). */
  private readonly used = new Set<string>();

  constructor(readonly backend: TrainBackend) {}

  /**
   * Widens every tensor of `src` into a master copy. `isAttention(name)` marks the parameters
   * `--train attention` trains; gradients are allocated for the selected ones only.
   * `storedDtype` overrides the recorded dtype (a resumed run reads fp32 master copies of
   * tensors the checkpoint stores narrower).
   */
  static load(backend: TrainBackend, src: WeightSource, isAttention: (name: string) => boolean, train: TrainSelection, storedDtype?: (name: string) => FloatDType): ParamStore {
    const store = new ParamStore(backend);
    for (const name of src.names()) {
      if (IGNORED.test(name)) continue;
      const t = src.get(name);
      const n = t.data.length;
      const data = backend.alloc(n);
      if (t.dtype === 'f32') data.set(t.data as Float32Array);
      else if (backend.precision === 'f32') kernels().toF32(t.data as Uint16Array, t.dtype, data as Float32Array);
      else {
        const tmp = new Float32Array(n);
        kernels().toF32(t.data as Uint16Array, t.dtype, tmp);
        data.set(tmp);
      }
      const attention = isAttention(name);
      const trained = train === 'all' || attention;
      const dtype = storedDtype ? storedDtype(name) : t.dtype;
      store.add({ name, shape: [...t.shape], data, grad: trained ? backend.alloc(n) : null, attention, decay: t.shape.length >= 2, dtype });
    }
    return store;
  }

  add(p: Param): void {
    if (this.byName.has(p.name)) throw new Error(`parameter "${p.name}" given twice`);
    this.list.push(p);
    this.byName.set(p.name, p);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** Forgets a tensor (a redundant copy the model never reads; it is not saved either). */
  drop(name: string): void {
    const p = this.byName.get(name);
    if (!p) return;
    this.byName.delete(name);
    this.list.splice(this.list.indexOf(p), 1);
  }

  /**
   * Stored copies of another parameter (a tied head written as lm_head.weight beside the
   * embedding): not trained or counted, but saved again with the values of the one they copy,
   * so a checkpoint keeps the tensor set it was loaded with.
   */
  readonly aliases: { name: string; of: Param; dtype: FloatDType }[] = [];

  /** Makes `name` a stored copy of parameter `of` (see aliases); no-op when `name` is absent. */
  alias(name: string, of: string): void {
    const p = this.byName.get(name);
    const target = this.byName.get(of);
    if (!p || !target || p === target) return;
    if (p.shape.join() !== target.shape.join()) throw new Error(`"${name}" [${p.shape.join(', ')}] cannot be a copy of "${of}" [${target.shape.join(', ')}]`);
    this.drop(name);
    this.aliases.push({ name, of: target, dtype: p.dtype });
  }

  /** The parameter `name` with the given shape (a clear error otherwise); marks it used. */
  get(name: string, shape: readonly number[]): Param {
    const p = this.byName.get(name);
    if (!p) throw new Error(`checkpoint has no tensor "${name}"`);
    if (p.shape.length !== shape.length || p.shape.some((s, i) => s !== shape[i])) {
      throw new Error(`tensor "${name}" has shape [${p.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    this.used.add(name);
    return p;
  }

  /** `name` when present (optional biases and norms: the checkpoint says whether they exist). */
  optional(name: string, shape: readonly number[]): Param | null {
    return this.byName.has(name) ? this.get(name, shape) : null;
  }

  /** Fails when a loaded tensor is used by no layer: saving would carry it untrained, silently. */
  checkAllUsed(): void {
    const unused = this.list.filter((p) => !this.used.has(p.name)).map((p) => p.name);
    if (unused.length > 0) throw new Error(`the checkpoint has tensors this model does not use: ${unused.slice(0, 8).join(', ')}${unused.length > 8 ? ', …' : ''}`);
  }

  trainable(): Param[] {
    return this.list.filter((p) => p.grad !== null);
  }

  zeroGrads(): void {
    for (const p of this.list) p.grad?.fill(0);
  }

  count(which: 'all' | 'trainable' = 'all'): number {
    let n = 0;
    for (const p of this.list) if (which === 'all' || p.grad) n += p.data.length;
    return n;
  }

  /**
   * The master weights as engine tensors (f32 views of the same memory, no copy): an engine
   * model built from this source follows every optimizer step without being rebuilt.
   */
  asWeightSource(): WeightSource {
    if (this.backend.precision !== 'f32') throw new Error('only fp32 master weights can back an engine model');
    const map = new Map<string, Tensor>(this.list.map((p) => [p.name, { dtype: 'f32' as FloatDType, shape: [...p.shape], data: p.data as Float32Array }]));
    return {
      names: () => [...map.keys()],
      has: (n) => map.has(n),
      get: (n) => {
        const t = map.get(n);
        if (!t) throw new Error(`no tensor named "${n}"`);
        return t;
      },
    };
  }
}
