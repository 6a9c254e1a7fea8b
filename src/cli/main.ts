#!/usr/bin/env node
// transmla CLI entry (run.ts has the dispatcher, so tests can call it in-process).
import { runCli } from './run.js';

runCli(process.argv.slice(2)).then((code) => process.exit(code));
