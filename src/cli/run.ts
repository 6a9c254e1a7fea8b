// The CLI's dispatcher: picks the command, prints help and the version, and maps failures to exit
// codes — 2 for usage errors (unknown command or flag, missing or bad value; printed with the
// command's usage), 1 for any other failure (one line; the stack only with TRANSMLA_DEBUG).
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { commands, commandSummary, commandTakesHubModel } from './commands.js';
import { HUB_HELP } from './model-arg.js';
import { OptionError } from '../option-error.js';
import { currentStage, installInterruptHandlers, InterruptedError, interruptedBy, signalExitCode } from '../io/interrupt.js';

const WRITERS = new Set(['convert', 'sweep', 'finetune', 'import-llama2c', 'export-llama2c', 'export']);

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

const stdio: CliIo = {
  out: (t) => { process.stdout.write(`${t}\n`); },
  err: (t) => { process.stderr.write(`${t}\n`); },
};

/** The version in the package.json of this installation (found upward from this file: src/ or dist/src/). */
export function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++, dir = dirname(dir)) {
    const p = join(dir, 'package.json');
    if (!existsSync(p)) continue;
    const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === 'transmla' && typeof pkg.version === 'string') return pkg.version;
  }
  throw new Error('cannot find transmla\'s package.json');
}

export function helpText(): string {
  const names = Object.keys(commands);
  const w = Math.max(...names.map((n) => n.length));
  const rows = names.map((n) => `  ${n.padEnd(w)}  ${commandSummary(n)}`).join('\n');
  return `usage: transmla <command> [options]\n       transmla --version\n\ncommands:\n${rows}\n\n` +
    'run `transmla <command> --help` (or `transmla help <command>`) for its options.';
}

function commandHelp(name: string, usage: string): string {
  return `transmla ${name}: ${commandSummary(name)}\n\nusage: ${usage}${commandTakesHubModel(name) ? `\n${HUB_HELP}` : ''}`;
}

export async function runCli(argv: string[], io: CliIo = stdio): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-V' || name === 'version') {
    io.out(packageVersion());
    return 0;
  }
  if (name === '--help' || name === '-h' || (name === 'help' && rest.length === 0)) {
    io.out(helpText());
    return 0;
  }
  if (!name) {
    io.err(helpText());
    return 2;
  }
  if (name === 'help') return runCli([rest[0]!, '--help'], io);
  const load = commands[name];
  if (!load) {
    io.err(`transmla: unknown command "${name}"\n\n${helpText()}`);
    return 2;
  }
  const cmd = await load();
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(commandHelp(name, cmd.usage));
    return 0;
  }
  // Commands that write outputs stop cooperatively on SIGINT/SIGTERM (interrupt.ts), so temp
  // files go and the message names the stage; the others keep the default (die at once).
  if (WRITERS.has(name)) installInterruptHandlers(`transmla ${name}`);
  try {
    const code = (await cmd.run(rest)) ?? 0;
    const sig = interruptedBy();
    if (sig) {
      // The signal came too late to stop anything (the work had finished); still honour it.
      io.err(`transmla ${name}: ${sig} arrived after the work finished (last stage: ${currentStage()})`);
      return signalExitCode(sig);
    }
    return code;
  } catch (e) {
    let c: unknown = e;
    while (c instanceof Error && !(c instanceof InterruptedError)) c = c.cause;
    if (c instanceof InterruptedError) {
      io.err(`transmla ${name}: interrupted by ${c.signal} during ${c.stage}; temporary output removed`);
      return signalExitCode(c.signal);
    }
    if (e instanceof OptionError) {
      io.err(`transmla ${name}: ${e.message}\nusage: ${cmd.usage}`);
      return 2;
    }
    const err = e as Error;
    // Our own errors carry a clear message; a stack is noise for users unless asked for.
    io.err(`transmla ${name}: ${err?.message ?? String(e)}`);
    if (process.env.TRANSMLA_DEBUG) io.err(String(err?.stack));
    return 1;
  }
}
