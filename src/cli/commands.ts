// The command table. Each command lives in src/cli/commands/<name>.ts and only parses flags
// and calls the library. Modules load lazily so `transmla --help` stays instant; the one-line
// descriptions live here for the same reason.

import type { Command } from './command.js';

export type { Command } from './command.js';

interface Entry {
  /** One line for the command list and the head of `<command> --help`. */
  summary: string;
  /** Whether a <model> argument may be a Hub id (adds the Hub notes to --help). */
  hub: boolean;
  load(): Promise<Command>;
}

const table: Record<string, Entry> = {
  inspect: { summary: 'architecture, parameters, heads and KV-cache bytes of a model', hub: true, load: () => import('./commands/inspect.js').then((m) => m.command) },
  ppl: { summary: 'perplexity on a text (GPTQ/TransMLA convention)', hub: true, load: () => import('./commands/ppl.js').then((m) => m.command) },
  generate: { summary: 'generate text from a prompt, streaming tokens', hub: true, load: () => import('./commands/generate.js').then((m) => m.command) },
  convert: { summary: 'convert a GQA/MHA model to Multi-head Latent Attention (TransMLA or MHA2MLA)', hub: true, load: () => import('./commands/convert.js').then((m) => m.command) },
  export: { summary: 'export a converted MLA folder for stock engines (DeepSeek-V3 folder or llama.cpp GGUF)', hub: true, load: () => import('./commands/export.js').then((m) => m.command) },
  validate: { summary: 'check an MLA folder or deepseek2 GGUF against transformers, vLLM, SGLang, llama.cpp', hub: true, load: () => import('./commands/validate.js').then((m) => m.command) },
  bench: { summary: 'decode speed vs context, against the source model, llama.cpp and the roofline', hub: true, load: () => import('./commands/bench.js').then((m) => m.command) },
  report: { summary: 'rebuild report.html of a converted folder', hub: false, load: () => import('./commands/report.js').then((m) => m.command) },
  sweep: { summary: 'convert at several KV-cache fractions and chart perplexity against them', hub: true, load: () => import('./commands/sweep.js').then((m) => m.command) },
  serve: { summary: 'serve a model over an OpenAI-compatible HTTP API', hub: true, load: () => import('./commands/serve.js').then((m) => m.command) },
  finetune: { summary: 'fine-tune a converted model to recover quality (optionally distilled)', hub: true, load: () => import('./commands/finetune.js').then((m) => m.command) },
  'import-llama2c': { summary: 'llama2.c checkpoint (.bin) and tokenizer → Hugging Face llama folder', hub: false, load: () => import('./commands/import-llama2c.js').then((m) => m.command) },
  'export-llama2c': { summary: 'Hugging Face llama folder → llama2.c checkpoint (.bin)', hub: true, load: () => import('./commands/export-llama2c.js').then((m) => m.command) },
};

export const commands: Record<string, () => Promise<Command>> = Object.fromEntries(Object.entries(table).map(([n, e]) => [n, e.load]));

export function commandSummary(name: string): string | undefined {
  return table[name]?.summary;
}

export function commandTakesHubModel(name: string): boolean {
  return table[name]?.hub === true;
}
