// The transmla library API. The CLI (src/cli) is a thin layer over exactly these functions.

// Kernels and linear algebra
export { kernels, tsKernels, loadNativeKernels } from './kernels/index.js';
export type { Kernels, FloatData, FloatDType, HalfDType, QuantDType, WeightData, WeightDType, EighResult, AttentionArgs } from './kernels/index.js';
export type { Tensor, WeightSource, WeightTensor } from './tensor.js';
export { tensorBytes } from './tensor.js';

// Checkpoint I/O
export { openSafetensors, writeSafetensors, SafetensorsError } from './io/safetensors.js';
export { openCheckpoint, writeCheckpoint, CheckpointError } from './io/checkpoint.js';
export { writeHfFolderExtras } from './io/hf-folder.js';
export { withAtomicDir, AtomicDirError } from './io/atomic-dir.js';
export { resolveModel, HubError } from './io/hub.js';
export { readGguf, writeGguf, GgufError } from './io/gguf.js';

export { readLlama2c, writeLlama2c, Llama2cFormatError } from './io/llama2c.js';
export { importLlama2c, exportLlama2c } from './export/llama2c.js';
export { loadTokenizer } from './tokenizer/tokenizer.js';
export type { TextTokenizer } from './tokenizer/tokenizer.js';

// Model families
export { FAMILIES, readConfig, parseConfig, buildModel, familyFor } from './arch/registry.js';
export { HfConfigError } from './arch/args.js';
export type { ModelArgs, RopeScaling } from './arch/args.js';
export type { Family } from './arch/family.js';
export type { MixtralArgs } from './arch/mixtral.js';
export { openGgufModel } from './arch/gguf.js';
export { mlaSemantics } from './arch/deepseek.js';

// Engine
export { loadModel } from './arch/load.js';
export type { LoadedModel, LoadModelOptions } from './arch/load.js';
export { Decoder } from './models/decoder.js';
export { generate } from './models/generate.js';
export { describeModel, formatModelReport, inspectModel } from './arch/describe.js';
export { parseKvQuant } from './models/latent-quant.js';

// Evaluation
export { perplexity, readEvalText, tokenizeForPerplexity } from './eval/perplexity.js';
export { fidelity } from './eval/fidelity.js';

// Conversion
export { convertModel, convertStreaming } from './convert/transmla.js';
export type { ConvertOptions } from './convert/transmla.js';
export type { ConvertReport, Mha2mlaReport, StockExportReport } from './schema/transmla-json.js';
export { convertMha2mla } from './convert/mha2mla.js';
export { exportDeepseekV3 } from './export/deepseek-v3.js';
export type { StockExportOptions } from './export/deepseek-v3.js';
export { stockDeepseekV3Config, STOCK_DEEPSEEK_V3_KEYS } from './arch/deepseek-stock.js';
export { exportModel, convertToTarget, EXPORT_TARGETS } from './export/targets.js';
export type { ExportOptions, ExportResult, ExportTarget } from './export/targets.js';
export { exportDeepseek2Gguf } from './export/gguf-deepseek2.js';
export { exportLlamaGguf } from './export/gguf-llama.js';
export { exportMixtralGguf } from './export/gguf-mixtral.js';
export { runSweep } from './convert/sweep.js';
export { writeReport } from './report/report.js';

// Validation against stock engines
export { validatePath, validateFolder, validateGguf, formatValidateReport, ValidateError } from './validate/validate.js';
export type { ValidateReport, EngineVerdict, ValidateOptions } from './validate/validate.js';
export { ENGINES } from './validate/rules.js';
export type { EngineId, Finding, Impact, KernelStatus } from './validate/rules.js';

// Serving and training
export { startServer } from './serve/server.js';
export { finetune } from './train/finetune.js';
