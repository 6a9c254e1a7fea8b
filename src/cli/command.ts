// What a command module (src/cli/commands/<name>.ts) exports as `command` (its one-line
// description is in commands.ts, so the top-level help needs no command loaded).
export interface Command {
  usage: string;
  run(argv: string[]): Promise<number | void>;
}
