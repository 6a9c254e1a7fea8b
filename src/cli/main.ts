#!/usr/bin/env node
// transmla CLI entry: dispatches to a command; turns expected errors into one clear line and exit 1.
import { commands } from './commands.js';
import { UsageError } from './args.js';
import { currentStage, installInterruptHandlers, InterruptedError, interruptedBy, signalExitCode } from '../io/interrupt.js';

const WRITERS = new Set(['convert', 'sweep', 'finetune', 'import-llama2c', 'export-llama2c', 'export']);

function help(): string {
  const rows = Object.keys(commands).map((n) => `  ${n}`).join('\n');
  return `usage: transmla <command> [options]\n\ncommands:\n${rows}\n\nrun \`transmla <command> --help\` for a command's options.`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(help());
    return name ? 0 : 1;
  }
  const load = commands[name];
  if (!load) {
    console.error(`transmla: unknown command "${name}"\n\n${help()}`);
    return 1;
  }
  const cmd = await load();
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(`${cmd.summary}\n\nusage: ${cmd.usage}`);
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
      console.error(`transmla ${name}: ${sig} arrived after the work finished (last stage: ${currentStage()})`);
      return signalExitCode(sig);
    }
    return code;
  } catch (e) {
    let c: unknown = e;
    while (c instanceof Error && !(c instanceof InterruptedError)) c = c.cause;
    if (c instanceof InterruptedError) {
      console.error(`transmla ${name}: interrupted by ${c.signal} during ${c.stage}; temporary output removed`);
      return signalExitCode(c.signal);
    }
    if (e instanceof UsageError) {
      console.error(`transmla ${name}: ${e.message}\nusage: ${cmd.usage}`);
      return 2;
    }
    const err = e as Error;
    // Our own errors carry a clear message; a stack is noise for users unless asked for.
    console.error(`transmla ${name}: ${err?.message ?? String(e)}`);
    if (process.env.TRANSMLA_DEBUG) console.error(err?.stack);
    return 1;
  }
}

main(process.argv.slice(2)).then((code) => process.exit(code));
