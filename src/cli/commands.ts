// The command table. Each command lives in src/cli/commands/<name>.ts and only parses flags
// and calls the library. Loaded lazily so `transmla --help` stays instant.

import type { Command } from './command.js';

export type { Command } from './command.js';

export const commands: Record<string, () => Promise<Command>> = {
  inspect: () => import('./commands/inspect.js').then((m) => m.command),
  ppl: () => import('./commands/ppl.js').then((m) => m.command),
  generate: () => import('./commands/generate.js').then((m) => m.command),
  'import-llama2c': () => import('./commands/import-llama2c.js').then((m) => m.command),
  'export-llama2c': () => import('./commands/export-llama2c.js').then((m) => m.command),
  convert: () => import('./commands/convert.js').then((m) => m.command),
  export: () => import('./commands/export.js').then((m) => m.command),
  bench: () => import('./commands/bench.js').then((m) => m.command),
  report: () => import('./commands/report.js').then((m) => m.command),
  sweep: () => import('./commands/sweep.js').then((m) => m.command),
  serve: () => import('./commands/serve.js').then((m) => m.command),
  finetune: () => import('./commands/finetune.js').then((m) => m.command),
  validate: () => import('./commands/validate.js').then((m) => m.command),
};
