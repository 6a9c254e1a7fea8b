// What a command module (src/cli/commands/<name>.ts) exports as `command`.
export interface Command {
  summary: string;
  usage: string;
  run(argv: string[]): Promise<number | void>;
}
