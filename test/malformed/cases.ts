// Hand-made malformed files, one per parser check, each with the exact error it must produce.
// make.ts writes them under test/malformed/<format>/<name>/; malformed.test.ts checks that the
// committed bytes still match these builders and that loading each gives exactly `message`.
// Cases marked "regression" reproduce crashes the fuzzer (fuzz/) found before the parser fix.

export type Format = 'safetensors' | 'index' | 'config' | 'gguf' | 'llama2c' | 'llama2c-tok';

export interface MalformedCase {
  format: Format;
  name: string;
  why: string;
  files: () => Record<string, Uint8Array>;
  /** Path handed to the loader, relative to the case folder ('.' = the folder). */
  entry: string;
  error: 'SafetensorsError' | 'CheckpointError' | 'HfConfigError' | 'GgufError' | 'Llama2cFormatError' | 'TokenizerFormatError';
  /** The exact message given the case folder, or a pattern where V8 supplies part of the text. */
  message: (dir: string) => string | RegExp;
}

const enc = new TextEncoder();

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}

function i32s(...vs: number[]): Uint8Array {
  const b = new Uint8Array(4 * vs.length);
  vs.forEach((v, i) => new DataView(b.buffer).setInt32(4 * i, v, true));
  return b;
}

function u64(v: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
  return b;
}

function f32s(...vs: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(vs).buffer);
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ---------------------------------------------------------------------------------------------
// safetensors: [u64 header length][JSON header][data]

function st(header: string | Uint8Array, data: Uint8Array = new Uint8Array(0), len?: bigint): Uint8Array {
  const h = typeof header === 'string' ? enc.encode(header) : header;
  return concat([u64(len ?? BigInt(h.length)), h, data]);
}

const F32_W = '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
const ST = 'model.safetensors';

function stCase(name: string, why: string, file: () => Uint8Array, message: (p: string) => string | RegExp): MalformedCase {
  return { format: 'safetensors', name, why, entry: ST, error: 'SafetensorsError', files: () => ({ [ST]: file() }), message: (dir) => message(`${dir}/${ST}`) };
}

const DEEP = (n: number) => '['.repeat(n) + ']'.repeat(n);

const safetensorsCases: MalformedCase[] = [
  stCase('too-short', 'fewer than 8 bytes', () => new Uint8Array(5), (p) => `${p}: file is 5 bytes, too short for the 8-byte header length`),
  stCase('header-length-2^64-1', 'header length field set to the largest u64', () => st(F32_W, new Uint8Array(8), 2n ** 64n - 1n), (p) => `${p}: header length 18446744073709551615 exceeds the 100000000-byte limit`),
  stCase('header-length-past-eof', 'header length larger than the file', () => st(F32_W, new Uint8Array(8), 1000n), (p) => `${p}: header length 1000 runs past the end of the file (${8 + F32_W.length + 8} bytes)`),
  stCase('header-length-zero', 'header length 0', () => st(F32_W, new Uint8Array(8), 0n), (p) => `${p}: header length 0 is too short for a JSON object`),
  stCase('header-length-off-by-one', 'header length one byte short: the JSON is cut', () => st(F32_W, new Uint8Array(8), BigInt(F32_W.length - 1)), (p) => new RegExp(`^${escapeRe(p)}: header is not valid JSON: `)),
  stCase('non-utf8-name', 'a tensor name with an invalid UTF-8 byte', () => st(concat([enc.encode('{"w'), Uint8Array.of(0xff), enc.encode('":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}')]), new Uint8Array(8)), (p) => `${p}: header is not valid UTF-8`),
  stCase('header-is-array', 'header JSON is not an object', () => st('[]'), (p) => `${p}: header is not a JSON object`),
  stCase('unknown-dtype', 'dtype no safetensors version defines', () => st('{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}', new Uint8Array(8)), (p) => `${p}: tensor "w": unknown dtype "Q4"`),
  stCase('dtype-prototype-key', 'dtype naming an Object.prototype member', () => st('{"w":{"dtype":"toString","shape":[2],"data_offsets":[0,8]}}', new Uint8Array(8)), (p) => `${p}: tensor "w": unknown dtype "toString"`),
  stCase('sub-byte-dtype', 'packed F4 dtype', () => st('{"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}', new Uint8Array(1)), (p) => `${p}: tensor "w": packed sub-byte dtypes are not supported "F4"`),
  stCase('shape-negative', 'negative dimension', () => st('{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}', new Uint8Array(8)), (p) => `${p}: tensor "w": shape [-1] has a dimension that is not a non-negative integer`),
  stCase('shape-float', 'fractional dimension', () => st('{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}', new Uint8Array(8)), (p) => `${p}: tensor "w": shape [1.5] has a dimension that is not a non-negative integer`),
  stCase('shape-2^53', 'dimension 2^53 (not a safe integer)', () => st('{"w":{"dtype":"U8","shape":[9007199254740992],"data_offsets":[0,8]}}', new Uint8Array(8)), (p) => `${p}: tensor "w": shape [9007199254740992] has a dimension that is not a non-negative integer`),
  stCase('shape-product-overflow', 'four dimensions of 2^20: 2^80 elements', () => st('{"w":{"dtype":"F32","shape":[1048576,1048576,1048576,1048576],"data_offsets":[0,8]}}', new Uint8Array(8)), (p) => `${p}: tensor "w": shape [1048576,1048576,1048576,1048576] is too large`),
  stCase('shape-deeply-nested', 'regression: a shape nested 10^4 deep overflowed JSON.stringify (RangeError)', () => st(`{"w":{"dtype":"F32","shape":[${DEEP(10_000)}],"data_offsets":[0,8]}}`, new Uint8Array(8)), (p) => `${p}: tensor "w": shape [[[[[…]]]]] has a dimension that is not a non-negative integer`),
  stCase('offsets-swapped', 'data_offsets end before start', () => st('{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}', new Uint8Array(8)), (p) => `${p}: tensor "w": data_offsets [8,0] must be non-negative integers with start <= end`),
  stCase('offsets-1e400', 'offsets that parse as Infinity', () => st('{"w":{"dtype":"F32","shape":[2],"data_offsets":[1e400,1e400]}}', new Uint8Array(8)), (p) => `${p}: tensor "w": data_offsets [Infinity,Infinity] must be non-negative integers with start <= end`),
  stCase('offsets-wrong-span', 'span does not match dtype × shape', () => st('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', new Uint8Array(8)), (p) => `${p}: tensor "w": data_offsets [0,4] span 4 bytes but F32 [2] needs 8`),
  stCase('offsets-past-end', 'tensor runs past the data section', () => st('{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', new Uint8Array(8)), (p) => `${p}: tensor "w": data_offsets [4,12] run past the end of the data section (8 bytes; file truncated?)`),
  stCase('offsets-overlap', 'two tensors share bytes', () => st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', new Uint8Array(12)), (p) => `${p}: tensors "a" [0, 8) and "b" [4, 12) overlap`),
  stCase('offsets-one-number', 'data_offsets with one item', () => st('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}}', new Uint8Array(8)), (p) => `${p}: tensor "w": data_offsets must be [start, end]`),
  stCase('metadata-deeply-nested', 'regression: a __metadata__ value nested 10^4 deep overflowed JSON.stringify (RangeError)', () => st(`{"__metadata__":{"k":{"a":${DEEP(10_000)}}}}`), (p) => `${p}: __metadata__["k"] must be a string, got {"a":[[[[…]]]]}`),
  stCase('long-tensor-name', 'regression: a 2,000-character name was copied into the message whole', () => st(`{"${'n'.repeat(2000)}":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, new Uint8Array(8)), (p) => `${p}: tensor "${'n'.repeat(119)}…: data_offsets [0,4] span 4 bytes but F32 [2] needs 8`),
  {
    format: 'safetensors',
    name: 'path-is-a-folder',
    why: 'regression: a folder opened fine and then failed with a bare EISDIR from readSync',
    entry: ST,
    error: 'SafetensorsError',
    files: () => ({ [`${ST}/keep.txt`]: enc.encode('this folder stands where a file should be\n') }),
    message: (dir) => `${dir}/${ST}: not a regular file`,
  },
];

// ---------------------------------------------------------------------------------------------
// index.json + shards

const IX = 'model.safetensors.index.json';
const SHARD = 'model-00001-of-00001.safetensors';

function shard(): Uint8Array {
  return st(F32_W, f32s(1, 2));
}

function ixCase(name: string, why: string, index: string, message: (ix: string, dir: string) => string | RegExp, extra: Record<string, Uint8Array> = { [SHARD]: shard() }): MalformedCase {
  return { format: 'index', name, why, entry: '.', error: 'CheckpointError', files: () => ({ [IX]: enc.encode(index), ...extra }), message: (dir) => message(`${dir}/${IX}`, dir) };
}

const indexCases: MalformedCase[] = [
  ixCase('traversal', 'shard path leaving the folder with ..', `{"weight_map":{"w":"../${SHARD}"}}`, (ix) => `${ix}: shard file name "../${SHARD}" contains ".."; refusing to read outside the folder`),
  ixCase('absolute-path', 'absolute shard path', '{"weight_map":{"w":"/etc/passwd"}}', (ix) => `${ix}: shard file name "/etc/passwd" must be a relative path inside the folder`),
  ixCase('nul-in-path', 'shard path with a NUL byte', `{"weight_map":{"w":"${SHARD}\\u0000"}}`, (ix) => `${ix}: shard file name "${SHARD}\\u0000" must be a relative path inside the folder`),
  ixCase('weight-map-array', 'weight_map of the wrong type', '{"weight_map":[1,2]}', (ix) => `${ix}: "weight_map" must be an object mapping tensor names to shard files`),
  ixCase('file-is-number', 'weight_map value not a string', '{"weight_map":{"w":3}}', (ix) => `${ix}: weight_map["w"] must be a file name string`),
  ixCase('empty-map', 'no tensors', '{"weight_map":{}}', (ix) => `${ix}: weight_map is empty`),
  ixCase('missing-shard', 'shard listed but absent', '{"weight_map":{"w":"model-00002-of-00002.safetensors"}}', (ix, dir) => `${ix} lists shard model-00002-of-00002.safetensors, which is missing from ${dir}`),
  ixCase('tensor-not-in-shard', 'index maps a tensor the shard lacks', `{"weight_map":{"w":"${SHARD}","ghost":"${SHARD}"}}`, (ix) => `${ix} maps tensor "ghost" to ${SHARD}, but that shard does not contain it`),
  ixCase('not-json', 'truncated JSON', '{"weight_map":{"w":', (ix) => new RegExp(`^${escapeRe(ix)}: not valid JSON: `)),
  ixCase('metadata-deeply-nested', 'regression: metadata nested 10^5 deep overflowed JSON.stringify (RangeError); 10^5 so the stack overflows on any machine', `{"metadata":{"total_size":${DEEP(100_000)}},"weight_map":{"w":"${SHARD}"}}`, (ix) => `${ix}: "metadata" entry "total_size" is nested too deeply`),
  ixCase('long-shard-name', 'regression: a 2,000-character shard name was copied into the message whole', `{"weight_map":{"w":"${'s'.repeat(2000)}"}}`, (ix, dir) => `${ix} lists shard ${'s'.repeat(120)}…, which is missing from ${dir}`),
  ixCase('long-tensor-name', 'regression: a 2,000-character tensor name was copied into the message whole', `{"weight_map":{"w":"${SHARD}","${'t'.repeat(2000)}":"${SHARD}"}}`, (ix) => `${ix} maps tensor "${'t'.repeat(119)}… to ${SHARD}, but that shard does not contain it`),
  {
    format: 'index',
    name: 'shard-is-a-folder',
    why: 'regression: a shard name naming a folder failed with a bare EISDIR',
    entry: '.',
    error: 'SafetensorsError',
    files: () => ({ [IX]: enc.encode('{"weight_map":{"w":"sub"}}'), 'sub/keep.txt': enc.encode('a folder, not a shard\n') }),
    message: (dir) => `${dir}/sub: not a regular file`,
  },
  {
    format: 'index',
    name: 'shard-header-length-huge',
    why: 'a shard whose header length is 2^63: the safetensors error names the shard',
    entry: '.',
    error: 'SafetensorsError',
    files: () => ({ [IX]: enc.encode(`{"weight_map":{"w":"${SHARD}"}}`), [SHARD]: st(F32_W, f32s(1, 2), 2n ** 63n) }),
    message: (dir) => `${dir}/${SHARD}: header length 9223372036854775808 exceeds the 100000000-byte limit`,
  },
];

// ---------------------------------------------------------------------------------------------
// config.json

const CFG = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 100,
};

const SUPPORTED = 'supported: model_type llama, mistral, qwen2 (SmolLM checkpoints are llama), mixtral, qwen3; architectures LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, MixtralForCausalLM, Qwen3ForCausalLM';

/** A config.json: CFG with `patch` applied; `raw` replaces "@RAW@" in the text (for JSON JS cannot produce). */
function cfgCase(name: string, why: string, patch: Record<string, unknown>, message: (p: string) => string | RegExp, raw?: string): MalformedCase {
  return {
    format: 'config',
    name,
    why,
    entry: '.',
    error: 'HfConfigError',
    files: () => {
      const obj: Record<string, unknown> = { ...CFG, ...patch };
      for (const [k, v] of Object.entries(patch)) if (v === undefined) delete obj[k];
      let text = JSON.stringify(obj, null, 2);
      if (raw !== undefined) text = text.replace('"@RAW@"', raw);
      return { 'config.json': enc.encode(text + '\n') };
    },
    message: (dir) => message(`${dir}/config.json`),
  };
}

const configCases: MalformedCase[] = [
  cfgCase('hidden-size-deeply-nested', 'regression: a value nested 10^4 deep overflowed JSON.stringify (RangeError)', { hidden_size: '@RAW@' }, (p) => `${p}: hidden_size must be a positive integer, got [[[[[…]]]]]`, DEEP(10_000)),
  cfgCase('quant-method-toString', 'regression: {"toString": 1} made String() throw a TypeError', { quantization_config: { quant_method: { toString: 1 } } }, (p) => `${p}: quantization_config declares a quantized checkpoint ({"toString":1}); only float32/float16/bfloat16 weights are supported`),
  cfgCase('architectures-prototype-key', 'regression: "toString" matched Object.prototype and was taken as a model type', { architectures: ['toString'], model_type: undefined }, (p) => `${p}: architectures ["toString"] is not supported (${SUPPORTED})`),
  cfgCase('huge-string', 'regression: a 1 MB value (here 2,000 characters) was copied into the message whole', { model_type: 'x'.repeat(2000) }, (p) => `${p}: model_type "${'x'.repeat(119)}… is not supported (${SUPPORTED})`),
  cfgCase('huge-array', 'regression: a 2,000-item array was copied into the message whole', { vocab_size: Array.from({ length: 2000 }, (_, i) => i) }, (p) => `${p}: vocab_size must be a positive integer, got [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,…`),
  cfgCase('number-1e400', 'a number that parses as Infinity', { rms_norm_eps: '@RAW@' }, (p) => `${p}: rms_norm_eps must be a positive number, got Infinity`, '1e400'),
  cfgCase('number-2^53+1', 'an integer JSON cannot represent exactly', { hidden_size: '@RAW@' }, (p) => `${p}: hidden_size must be a positive integer, got 9007199254740992`, '9007199254740993'),
  cfgCase('missing-hidden-size', 'required key absent', { hidden_size: undefined }, (p) => `${p}: hidden_size is required`),
  cfgCase('hidden-size-string', 'wrong type', { hidden_size: '64' }, (p) => `${p}: hidden_size must be a positive integer, got "64"`),
  cfgCase('kv-heads-not-dividing', 'heads not a multiple of KV heads', { num_key_value_heads: 3 }, (p) => `${p}: num_attention_heads (4) must be a multiple of num_key_value_heads (3)`),
  cfgCase('llama3-factors-reversed', 'llama3 RoPE with high_freq_factor <= low_freq_factor', { rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 8192 } }, (p) => `${p}: rope_scaling.high_freq_factor (1) must exceed low_freq_factor (4)`),
  {
    format: 'config',
    name: 'top-level-deeply-nested',
    why: 'a document that is an array nested 10^4 deep',
    entry: '.',
    error: 'HfConfigError',
    files: () => ({ 'config.json': enc.encode(DEEP(10_000)) }),
    message: (dir) => `${dir}/config.json: expected a JSON object`,
  },
  {
    format: 'config',
    name: 'config-is-a-folder',
    why: 'config.json is a folder',
    entry: '.',
    error: 'HfConfigError',
    files: () => ({ 'config.json/keep.txt': enc.encode('a folder, not a config\n') }),
    message: (dir) => new RegExp(`^${escapeRe(dir)}/config\\.json: cannot read: EISDIR`),
  },
  {
    format: 'config',
    name: 'not-utf8-json',
    why: 'bytes that are neither UTF-8 nor JSON',
    entry: '.',
    error: 'HfConfigError',
    files: () => ({ 'config.json': Uint8Array.of(0xff, 0xfe, 0x7b, 0x7d) }),
    message: (dir) => new RegExp(`^${escapeRe(dir)}/config\\.json: not valid JSON: `),
  },
];

// ---------------------------------------------------------------------------------------------
// GGUF

interface GgufSpec {
  magic?: Uint8Array;
  version?: number;
  /** Raw metadata records (key string + type + value), and their count as written. */
  kv?: Uint8Array[];
  kvCount?: bigint;
  tensors?: Uint8Array[];
  tensorCount?: bigint;
  alignment?: number;
  data?: Uint8Array;
}

function gstr(s: string | Uint8Array, len?: bigint): Uint8Array {
  const b = typeof s === 'string' ? enc.encode(s) : s;
  return concat([u64(len ?? BigInt(b.length)), b]);
}

/** A tensor-info record: name, n_dims, ne[], ggml type, offset. */
function gtensor(name: string, ne: (number | bigint)[], type: number, offset: number | bigint, nDims?: number): Uint8Array {
  return concat([gstr(name), u32(nDims ?? ne.length), ...ne.map((n) => u64(n)), u32(type), u64(offset)]);
}

function gguf(spec: GgufSpec): Uint8Array {
  const kv = spec.kv ?? [];
  const tensors = spec.tensors ?? [];
  const head = concat([spec.magic ?? enc.encode('GGUF'), u32(spec.version ?? 3), u64(spec.tensorCount ?? BigInt(tensors.length)), u64(spec.kvCount ?? BigInt(kv.length)), ...kv, ...tensors]);
  const align = spec.alignment ?? 32;
  const pad = new Uint8Array((align - (head.length % align)) % align);
  return concat([head, pad, spec.data ?? new Uint8Array(0)]);
}

const G = 'model.gguf';
const GF32 = (name = 'w', offset: number | bigint = 0) => gtensor(name, [2], 0, offset);

function gCase(name: string, why: string, file: () => Uint8Array, message: (p: string) => string): MalformedCase {
  return { format: 'gguf', name, why, entry: G, error: 'GgufError', files: () => ({ [G]: file() }), message: (dir) => message(`${dir}/${G}`) };
}

const ggufCases: MalformedCase[] = [
  {
    format: 'gguf',
    name: 'path-is-a-folder',
    why: 'regression: a folder opened fine and then failed with a bare EISDIR from readSync',
    entry: G,
    error: 'GgufError',
    files: () => ({ [`${G}/keep.txt`]: enc.encode('this folder stands where a file should be\n') }),
    message: (dir) => `${dir}/${G}: not a regular file`,
  },
  gCase('bad-magic', 'not a GGUF file', () => gguf({ magic: enc.encode('GGML') }), (p) => `${p}: bad magic "GGML" (not a GGUF file)`),
  gCase('version-1', 'GGUF v1 (32-bit counts)', () => gguf({ version: 1 }), (p) => `${p}: GGUF version 1 (32-bit counts) is not supported; re-export the file as version 3`),
  gCase('big-endian', 'version field byte-swapped', () => gguf({ version: 0x03000000 }), (p) => `${p}: version field 50331648 looks byte-swapped: big-endian GGUF files are not supported`),
  gCase('kv-count-2^63', 'metadata count 2^63', () => gguf({ kvCount: 2n ** 63n }), (p) => `${p}: metadata count is 9223372036854775808, too large`),
  gCase('kv-count-too-many', 'metadata count that cannot fit the file', () => gguf({ kvCount: 1000n }), (p) => `${p}: metadata count 1000 cannot fit in the 8 bytes left in the file`),
  gCase('key-length-2^63', 'string length 2^63', () => gguf({ kv: [gstr('k', 2n ** 63n)] }), (p) => `${p}: metadata key #0 length is 9223372036854775808, too large`),
  gCase('key-length-past-eof', 'string length larger than the file', () => gguf({ kv: [concat([gstr('k', 4096n), u32(4), u32(1)])] }), (p) => `${p}: metadata key #0 has length 4096 but only 32 bytes remain in the file`),
  gCase('unknown-value-type', 'value type 13', () => gguf({ kv: [concat([gstr('k'), u32(13), u32(0)])] }), (p) => `${p}: metadata "k" has unknown value type 13`),
  gCase('array-count-2^40', 'array count above the reader\'s item limit', () => gguf({ kv: [concat([gstr('a'), u32(9), u32(4), u64(2n ** 40n)])] }), (p) => `${p}: metadata "a" has 1099511627776 items, more than the limit of 67108864`),
  gCase('array-count-past-eof', 'array count larger than the bytes left', () => gguf({ kv: [concat([gstr('a'), u32(9), u32(8), u64(1000), gstr('x')])] }), (p) => `${p}: metadata "a" has 1000 string items (at least 8000 bytes) but only 15 bytes remain in the file`),
  gCase('arrays-nested-9-deep', 'arrays nested deeper than the reader allows', () => gguf({ kv: [concat([gstr('a'), u32(9), ...Array.from({ length: 9 }, () => concat([u32(9), u64(1)])), u32(4), u64(0)])] }), (p) => `${p}: metadata "a"[0][0][0][0][0][0][0][0]: arrays nested deeper than 8 levels`),
  gCase('bool-byte-2', 'bool stored as 2', () => gguf({ kv: [concat([gstr('b'), u32(7), Uint8Array.of(2)])] }), (p) => `${p}: metadata "b" is a bool with byte value 2 (must be 0 or 1)`),
  gCase('duplicate-key', 'the same key twice', () => gguf({ kv: [concat([gstr('k'), u32(4), u32(1)]), concat([gstr('k'), u32(4), u32(2)])] }), (p) => `${p}: duplicate metadata key "k"`),
  gCase('key-not-utf8', 'key with an invalid UTF-8 byte', () => gguf({ kv: [concat([gstr(Uint8Array.of(0x6b, 0xff)), u32(4), u32(1)])] }), (p) => `${p}: metadata key #0 is not valid UTF-8`),
  gCase('long-key', 'regression: a 2,000-byte key was copied into every message whole', () => gguf({ kv: [concat([gstr('k'.repeat(2000)), u32(13)])] }), (p) => `${p}: metadata "${'k'.repeat(119)}… has unknown value type 13`),
  gCase('alignment-zero', 'general.alignment 0', () => gguf({ kv: [concat([gstr('general.alignment'), u32(4), u32(0)])] }), (p) => `${p}: general.alignment 0 is not a power of two`),
  gCase('alignment-odd', 'general.alignment 3', () => gguf({ kv: [concat([gstr('general.alignment'), u32(4), u32(3)])] }), (p) => `${p}: general.alignment 3 is not a power of two`),
  gCase('alignment-wrong-type', 'general.alignment as i32', () => gguf({ kv: [concat([gstr('general.alignment'), u32(5), u32(32)])] }), (p) => `${p}: general.alignment must be u32, got i32`),
  gCase('n-dims-5', 'more dimensions than ggml has', () => gguf({ tensors: [gtensor('w', [1, 1, 1, 1, 1], 0, 0)], data: f32s(1) }), (p) => `${p}: tensor "w" has 5 dimensions (at most 4)`),
  gCase('ne-2^63', 'dimension 2^63', () => gguf({ tensors: [gtensor('w', [2n ** 63n], 0, 0)], data: f32s(1) }), (p) => `${p}: tensor "w" ne[0] is 9223372036854775808, too large`),
  gCase('elements-overflow', 'dimensions whose product passes 2^53', () => gguf({ tensors: [gtensor('w', [2 ** 30, 2 ** 30], 0, 0)], data: f32s(1) }), (p) => `${p}: tensor "w" has too many elements (ne = [1073741824, 1073741824, …])`),
  gCase('unknown-ggml-type', 'tensor type 1000', () => gguf({ tensors: [gtensor('w', [2], 1000, 0)], data: f32s(1, 2) }), (p) => `${p}: tensor "w" has unknown ggml type 1000`),
  gCase('partial-block', 'Q4_0 row not a multiple of 32', () => gguf({ tensors: [gtensor('w', [10], 2, 0)], data: new Uint8Array(32) }), (p) => `${p}: tensor "w" of type Q4_0 has 10 elements per row, not a multiple of the block size 32`),
  gCase('offset-unaligned', 'tensor offset not a multiple of 32', () => gguf({ tensors: [GF32('w', 4)], data: new Uint8Array(64) }), (p) => `${p}: tensor "w" offset 4 is not a multiple of the alignment 32`),
  gCase('offset-2^63', 'tensor offset 2^63', () => gguf({ tensors: [GF32('w', 2n ** 63n)], data: f32s(1, 2) }), (p) => `${p}: tensor "w" offset is 9223372036854775808, too large`),
  gCase('tensor-past-end', 'tensor data beyond the end of the file', () => gguf({ tensors: [GF32('w', 32)], data: f32s(1, 2) }), (p) => `${p}: tensor "w" occupies bytes 96..104 but the file has 72 bytes (truncated?)`),
  gCase('tensors-overlap', 'two tensors at the same offset', () => gguf({ tensors: [GF32('a', 0), GF32('b', 0)], data: f32s(1, 2) }), (p) => `${p}: tensor "b" (data at 96) overlaps tensor "a" (data 96..104)`),
  gCase('duplicate-tensor', 'the same tensor name twice', () => gguf({ tensors: [GF32('w', 0), GF32('w', 32)], data: new Uint8Array(40) }), (p) => `${p}: duplicate tensor name "w"`),
];

// ---------------------------------------------------------------------------------------------
// llama2.c checkpoints: dim 8, hidden 16, 1 layer, 2 heads, 2 KV heads, vocab 4, seq 4

const L2C = 'model.bin';
const L2C_PARAMS = [8, 16, 1, 2, 2, 4, 4];
/** f32 values of that model in v0 (shared classifier) and v1 layouts. */
const L2C_V0_FLOATS = 4 * 8 + 3 * 8 + 2 * 64 + 2 * 64 + 3 * 128 + 2 * 4 * 2;
const L2C_V1_FLOATS = L2C_V0_FLOATS - 2 * 4 * 2;

function l2cV0(params: number[] = L2C_PARAMS, floats = L2C_V0_FLOATS): Uint8Array {
  return concat([i32s(...params), new Uint8Array(4 * floats)]);
}

function l2cV1(opts: { version?: number; shared?: number; params?: number[]; group?: number; body?: number } = {}): Uint8Array {
  const h = new Uint8Array(256);
  const dv = new DataView(h.buffer);
  dv.setUint32(0, 0x616b3432, true);
  dv.setInt32(4, opts.version ?? 1, true);
  (opts.params ?? L2C_PARAMS).forEach((v, i) => dv.setInt32(8 + 4 * i, v, true));
  h[36] = opts.shared ?? 1;
  if (opts.group !== undefined) dv.setInt32(37, opts.group, true);
  return concat([h, new Uint8Array(opts.body ?? 4 * L2C_V1_FLOATS)]);
}

const HDR = (p: number[]) => `dim=${p[0]} hidden_dim=${p[1]} n_layers=${p[2]} n_heads=${p[3]} n_kv_heads=${p[4]} vocab_size=${Math.abs(p[5]!)} seq_len=${p[6]}`;
const IMPLAUSIBLE = (what: string, p: number[]) => `implausible llama2.c header (${what}); ${HDR(p)} — not a llama2.c checkpoint or corrupt`;

function lCase(name: string, why: string, file: () => Uint8Array, message: (p: string) => string): MalformedCase {
  return { format: 'llama2c', name, why, entry: L2C, error: 'Llama2cFormatError', files: () => ({ [L2C]: file() }), message: (dir) => message(`${dir}/${L2C}`) };
}

const llama2cCases: MalformedCase[] = [
  lCase('too-short', 'shorter than the 28-byte v0 header', () => new Uint8Array(10), (p) => `${p}: file of 10 bytes is too short for a llama2.c header (28 bytes)`),
  lCase('magic-short', '"ak42" magic but shorter than 256 bytes', () => l2cV1().subarray(0, 100), (p) => `${p}: file of 100 bytes starts with the "ak42" magic but is shorter than the 256-byte header`),
  lCase('version-3', 'unknown format version', () => l2cV1({ version: 3 }), (p) => `${p}: llama2.c format version 3 is not supported (supported: legacy v0, v1 f32, v2 Q8_0)`),
  lCase('shared-flag-2', 'shared_classifier byte neither 0 nor 1', () => l2cV1({ shared: 2 }), (p) => `${p}: shared_classifier flag is 2, expected 0 or 1`),
  lCase('dim-negative', 'negative dim', () => l2cV0([-8, 16, 1, 2, 2, 4, 4]), (p) => `${p}: ${IMPLAUSIBLE('dim = -8 is outside [1, 65536]', [-8, 16, 1, 2, 2, 4, 4])}`),
  lCase('vocab-int-min', 'vocab_size -2^31: its absolute value overflows int32', () => l2cV0([8, 16, 1, 2, 2, -(2 ** 31), 4]), (p) => `${p}: ${IMPLAUSIBLE('vocab_size = 2147483648 is outside [1, 4194304]', [8, 16, 1, 2, 2, -(2 ** 31), 4])}`),
  lCase('layers-huge', 'n_layers 2^31-1', () => l2cV0([8, 16, 2 ** 31 - 1, 2, 2, 4, 4]), (p) => `${p}: ${IMPLAUSIBLE('n_layers = 2147483647 is outside [1, 1024]', [8, 16, 2 ** 31 - 1, 2, 2, 4, 4])}`),
  lCase('heads-not-dividing', 'dim not a multiple of n_heads', () => l2cV0([8, 16, 1, 3, 3, 4, 4]), (p) => `${p}: ${IMPLAUSIBLE('dim is not a multiple of n_heads', [8, 16, 1, 3, 3, 4, 4])}`),
  lCase('odd-head-dim', 'head_dim 1: RoPE needs pairs', () => l2cV0([8, 16, 1, 8, 8, 4, 4]), (p) => `${p}: ${IMPLAUSIBLE('head_dim is odd, RoPE needs pairs', [8, 16, 1, 8, 8, 4, 4])}`),
  lCase('v2-group-zero', 'Q8_0 group size 0', () => l2cV1({ version: 2, group: 0 }), (p) => `${p}: ${IMPLAUSIBLE('group_size = 0', L2C_PARAMS)}`),
  lCase('truncated', 'one byte short of what the header implies', () => l2cV0().subarray(0, 28 + 4 * L2C_V0_FLOATS - 1), (p) => `${p}: truncated: the v0 header implies ${28 + 4 * L2C_V0_FLOATS} bytes but the file has ${28 + 4 * L2C_V0_FLOATS - 1}`),
  lCase('vocab-sign-flipped', 'negative vocab_size (unshared classifier) on a shared file: too short', () => l2cV0([8, 16, 1, 2, 2, -4, 4]), (p) => `${p}: truncated: the v0 header implies ${28 + 4 * (L2C_V0_FLOATS + 32)} bytes but the file has ${28 + 4 * L2C_V0_FLOATS}`),
  lCase('trailing-bytes', 'bytes beyond what the header implies', () => concat([l2cV1(), new Uint8Array(4)]), (p) => `${p}: the file has 4 bytes beyond the ${256 + 4 * L2C_V1_FLOATS} its v1 header implies (wrong format, or the vocab_size sign / shared-classifier flag is wrong)`),
  {
    format: 'llama2c',
    name: 'path-is-a-folder',
    why: 'regression: a folder opened fine and then failed with a bare EISDIR from readSync',
    entry: L2C,
    error: 'Llama2cFormatError',
    files: () => ({ [`${L2C}/keep.txt`]: enc.encode('this folder stands where a file should be\n') }),
    message: (dir) => `${dir}/${L2C}: not a regular file`,
  },
];

// ---------------------------------------------------------------------------------------------
// llama2.c tokenizer: i32 max_token_length, then per token f32 score, i32 length, bytes

const TOK = 'tokenizer.bin';

function tok(maxLen: number, tokens: { score?: number; len?: number; bytes: Uint8Array | string }[]): Uint8Array {
  return concat([
    i32s(maxLen),
    ...tokens.map((t) => {
      const b = typeof t.bytes === 'string' ? enc.encode(t.bytes) : t.bytes;
      return concat([f32s(t.score ?? 0), i32s(t.len ?? b.length), b]);
    }),
  ]);
}

function tCase(name: string, why: string, file: () => Uint8Array, message: (p: string) => string): MalformedCase {
  return { format: 'llama2c-tok', name, why, entry: TOK, error: 'TokenizerFormatError', files: () => ({ [TOK]: file() }), message: (dir) => message(`${dir}/${TOK}`) };
}

const tokenizerCases: MalformedCase[] = [
  {
    format: 'llama2c-tok',
    name: 'path-is-a-folder',
    why: 'the tokenizer path is a folder',
    entry: TOK,
    error: 'TokenizerFormatError',
    files: () => ({ [`${TOK}/keep.txt`]: enc.encode('a folder, not a tokenizer\n') }),
    message: (dir) => new RegExp(`^${escapeRe(dir)}/${TOK}: cannot read llama2\\.c tokenizer: EISDIR`),
  },
  tCase('too-short', 'shorter than the 4-byte header', () => new Uint8Array(3), (p) => `${p}: file of 3 bytes is too short for a llama2.c tokenizer header`),
  tCase('no-tokens', 'header only', () => i32s(8), (p) => `${p}: tokenizer has no tokens`),
  tCase('max-length-zero', 'max_token_length 0', () => tok(0, [{ bytes: 'a' }]), (p) => `${p}: max_token_length 0 is not plausible (not a llama2.c tokenizer?)`),
  tCase('max-length-int-max', 'max_token_length 2^31-1', () => tok(2 ** 31 - 1, [{ bytes: 'a' }]), (p) => `${p}: max_token_length 2147483647 is not plausible (not a llama2.c tokenizer?)`),
  tCase('length-negative', 'token length -1', () => tok(8, [{ bytes: 'a' }, { bytes: 'b', len: -1 }]), (p) => `${p}: token 1 has length -1, outside [0, max_token_length=8]`),
  tCase('length-past-eof', 'token length beyond the file', () => tok(8, [{ bytes: 'a', len: 8 }]), (p) => `${p}: truncated: token 0 needs 8 bytes at byte 12, 1 left`),
  tCase('record-cut', 'file ends inside a token record header', () => tok(8, [{ bytes: 'a' }, { bytes: 'b' }]).subarray(0, 15), (p) => `${p}: truncated: token 1 header at byte 13 needs 8 bytes, 2 left`),
  tCase('score-nan', 'NaN score', () => tok(8, [{ bytes: 'a', score: NaN }]), (p) => `${p}: token 0 has non-finite score NaN`),
  tCase('not-utf8', 'token bytes that are not UTF-8', () => tok(8, [{ bytes: Uint8Array.of(0x61, 0xc0, 0xaf) }]), (p) => `${p}: token 0 is not valid UTF-8`),
];

export const MALFORMED_CASES: readonly MalformedCase[] = [...safetensorsCases, ...indexCases, ...configCases, ...ggufCases, ...llama2cCases, ...tokenizerCases];
