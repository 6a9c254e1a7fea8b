// GGUF reader and writer (our own implementation of the format documented in ggml's
// docs/gguf.md and ggml/include/gguf.h). Layout, all little-endian:
//   "GGUF" · u32 version · u64 tensor_count · u64 kv_count
//   kv_count × (string key · u32 value_type · value)
//   tensor_count × (string name · u32 n_dims · u64 ne[n_dims] · u32 ggml_type · u64 offset)
//   padding to `general.alignment` (default 32) · data section
// A string is u64 byte length + UTF-8 bytes; an array is u32 item type · u64 count · items.
// Tensor offsets are relative to the data section and must be multiples of the alignment.
//
// The reader validates the whole header before returning and never allocates from a length
// it has not checked against the bytes left in the file; tensor data is read lazily.
// The writer builds the header in memory, then streams tensor data one tensor at a time into a
// temporary file that is renamed over the target when complete.
//
// Split by responsibility: gguf-types.ts (format constants and types), gguf-parse.ts (header
// parser), gguf-read.ts (GgufFile, readGguf), gguf-write.ts (writeGguf). This module re-exports
// their public API, which the rest of transmla imports from here.
export {
  GGUF_DEFAULT_ALIGNMENT, GGUF_MAX_ARRAY_DEPTH, GGUF_MAX_ARRAY_LENGTH, GGUF_MAX_DIMS, GGUF_MAX_TENSOR_NAME_BYTES,
  GgufError, ggmlTypeName,
  type GgufArray, type GgufBigIntType, type GgufMetadataEntry, type GgufNumberType, type GgufScalarType, type GgufTensorInfo,
  type GgufValue, type GgufValueType,
} from './gguf-types.js';
export { GgufFile, readGguf } from './gguf-read.js';
export { writeGguf, type GgufTensorInput, type GgufWriteInput } from './gguf-write.js';
