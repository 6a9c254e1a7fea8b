// Named scratch buffers shared by all layers of a model, grown on demand and then reused,
// so a decode step allocates nothing. Layers run one after another, so one buffer per name
// serves them all; a name must not be used by two things that are live at the same time.
export class Workspace {
  private readonly bufs = new Map<string, Float32Array>();

  /** A view of exactly n floats; contents are whatever the last user left (not zeroed). */
  get(name: string, n: number): Float32Array {
    let b = this.bufs.get(name);
    if (!b || b.length < n) {
      b = new Float32Array(Math.max(n, b ? 2 * b.length : 0));
      this.bufs.set(name, b);
    }
    return b.length === n ? b : b.subarray(0, n);
  }

  /** Bytes held (for reporting memory use). */
  bytes(): number {
    let n = 0;
    for (const b of this.bufs.values()) n += b.byteLength;
    return n;
  }

  /** Drops every buffer (after a long prefill, to give the memory back). */
  clear(): void {
    this.bufs.clear();
  }
}
