// transmla report <folder>: rebuilds report.html from the folder's transmla.json (+ bench.json).
import { parseArgs, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { writeReport } from '../../report/report.js';

export const command: Command = {
  usage: 'transmla report <folder>',
  async run(argv) {
    const p = parseArgs(argv, {});
    if (p.positionals.length !== 1) throw new UsageError('expected exactly one folder');
    console.log(await writeReport(p.positionals[0]!));
  },
};
