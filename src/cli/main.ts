#!/usr/bin/env node
// transmla CLI entry (run.ts has the dispatcher, so tests can call it in-process).
import { runCli } from './run.js';

runCli(process.argv.slice(2)).then((code) => {
  // Writes to a pipe are asynchronous: process.exit would drop what the reader has not taken yet
  // (a --json report piped to jq was cut at 64 KiB). Exit once both streams have flushed.
  let pending = 2;
  const done = (): void => { if (--pending === 0) process.exit(code); };
  process.stdout.write('', done);
  process.stderr.write('', done);
});
