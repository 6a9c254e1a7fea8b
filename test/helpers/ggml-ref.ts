// llama.cpp's own Q8_0/Q4_0 code as a reference: test/helpers/ggml-quant.c is compiled (cc) and
// run against the shared libraries node-llama-cpp ships (it has no llama-quantize binary and no
// quantization API, but libggml-base/libllama export quantize_row_*_ref, dequantize_row_* and
// llama_model_quantize). In CI a driver that cannot be built is a failure; elsewhere tests skip.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';

export interface GgmlRef {
  /** Why the reference is unavailable (tests skip with it), or false. */
  unavailable(): string | false;
  /** quantize_row_q8_0_ref / quantize_row_q4_0_ref of x. */
  quantize(type: 'q8_0' | 'q4_0', x: Float32Array): Uint8Array;
  /** dequantize_row_q8_0 / dequantize_row_q4_0 of whole blocks. */
  dequantize(type: 'q8_0' | 'q4_0', blocks: Uint8Array): Float32Array;
  /** llama_model_quantize(inGguf → outGguf) with ftype Q8_0/Q4_0, pure (every quantizable tensor gets the type). */
  quantizeModel(type: 'q8_0' | 'q4_0', inGguf: string, outGguf: string): void;
}

function libraryDir(): string {
  if (process.platform !== 'linux' || process.arch !== 'x64') throw new Error(`no node-llama-cpp CPU libraries for ${process.platform}-${process.arch} here`);
  // The package exports only its entry (dist/index.js); the libraries sit in ../bins/linux-x64.
  const entry = createRequire(import.meta.url).resolve('@node-llama-cpp/linux-x64');
  return join(dirname(entry), '..', 'bins', 'linux-x64');
}

export function useGgmlRef(): GgmlRef {
  let tmp = '';
  let exe = '';
  let base = '';
  let llama = '';
  let unavailable: string | false = false;
  before(() => {
    try {
      const dir = libraryDir();
      base = join(dir, 'libggml-base.so');
      const ll = readdirSync(dir).find((f) => /^libllama(\.v[\d.]+)?\.so$/.test(f));
      if (!existsSync(base) || !ll) throw new Error(`${dir} lacks libggml-base.so or libllama*.so`);
      llama = join(dir, ll);
      tmp = mkdtempSync(join(tmpdir(), 'transmla-ggml-'));
      exe = join(tmp, 'ggml-quant');
      const src = join(dirname(fileURLToPath(import.meta.url)), 'ggml-quant.c');
      const cc = spawnSync(process.env.CC ?? 'cc', ['-O1', '-o', exe, src, '-ldl'], { encoding: 'utf8' });
      if (cc.error || cc.status !== 0) throw new Error(`cannot compile ${src}: ${cc.error?.message ?? cc.stderr}`);
    } catch (e) {
      if (process.env.CI === 'true') throw e;
      unavailable = `llama.cpp's quantizer is unavailable: ${(e as Error).message}`;
    }
  });
  after(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });
  const run = (args: string[]): void => {
    const r = spawnSync(exe, args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ggml-quant ${args.join(' ')} failed: ${r.stderr}`);
  };
  let n = 0;
  return {
    unavailable: () => unavailable,
    quantize(type, x) {
      const i = join(tmp, `x${n}.f32`), o = join(tmp, `y${n++}.bin`);
      writeFileSync(i, x);
      run(['rows', base, type, i, o]);
      return new Uint8Array(readFileSync(o));
    },
    dequantize(type, blocks) {
      const i = join(tmp, `b${n}.bin`), o = join(tmp, `d${n++}.f32`);
      writeFileSync(i, blocks);
      run(['deq', base, type, i, o]);
      const b = readFileSync(o);
      return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4).slice();
    },
    quantizeModel(type, inGguf, outGguf) {
      run(['model', llama, type, inGguf, outGguf]);
    },
  };
}
