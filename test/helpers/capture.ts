// Captures what code writes to stdout/stderr (process.*.write, console.*) while it runs, without
// swallowing the test runner's own output: writes are routed by async context
// (AsyncLocalStorage), so only writes made from inside capture() are taken.
import { AsyncLocalStorage } from 'node:async_hooks';

interface Sink {
  out: string;
  err: string;
}

const store = new AsyncLocalStorage<Sink>();
let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  for (const [stream, key] of [[process.stdout, 'out'], [process.stderr, 'err']] as const) {
    const original = stream.write.bind(stream);
    stream.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      const sink = store.getStore();
      // The runner's own reports (a test file's child writes v8-serialized frames to stdout, each
      // starting with the serializer header 0xFF 0x0F, then a 4-byte size) can be flushed from a
      // callback that inherited a capture's async context; they are never the captured code's output.
      const frame = typeof chunk !== 'string' && chunk.length > 6 && chunk[0] === 0xff && chunk[1] === 0x0f;
      if (!sink || frame) return (original as (...a: unknown[]) => boolean)(chunk, ...rest);
      sink[key] += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
      (rest.find((r) => typeof r === 'function') as (() => void) | undefined)?.();
      return true;
    }) as typeof stream.write;
  }
}

/** Runs fn, returning its result and everything it wrote to stdout and stderr. */
export async function capture<T>(fn: () => Promise<T>): Promise<{ value: T; out: string; err: string }> {
  install();
  const sink: Sink = { out: '', err: '' };
  const value = await store.run(sink, fn);
  return { value, out: sink.out, err: sink.err };
}
