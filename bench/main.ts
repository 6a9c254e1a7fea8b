// Benchmark dispatcher: `npm run bench -- <name> [--out file] [args...]` imports bench/<name>.ts,
// awaits its `run(args)`, prints the JSON result and writes it to --out or, by default, to
// bench/results/<name>-<hostname>-<date>.json. Any bench module exporting run() works.
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const benchDir = dirname(fileURLToPath(import.meta.url));

function available(): string[] {
  return readdirSync(benchDir)
    .filter((f) => f.endsWith('.ts') && f !== 'main.ts')
    .map((f) => f.slice(0, -3))
    .sort();
}

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\nusage: npm run bench -- <${available().join('|')}> [--out file] [args...]\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  const [name, ...argv] = process.argv.slice(2);
  if (!name || name.startsWith('-')) fail('missing benchmark name');
  if (!/^[a-z0-9][a-z0-9-]*$/.test(name) || name === 'main' || !existsSync(join(benchDir, `${name}.ts`))) fail(`unknown benchmark '${name}'`);

  let out: string | undefined;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out') {
      out = argv[++i];
      if (!out) fail('--out needs a file name');
    } else if (a.startsWith('--out=')) {
      out = a.slice('--out='.length);
    } else {
      rest.push(a);
    }
  }

  const mod = (await import(pathToFileURL(join(benchDir, `${name}.ts`)).href)) as { run?: (args: string[]) => Promise<object> };
  if (typeof mod.run !== 'function') fail(`bench/${name}.ts does not export run(args)`);
  const result = await mod.run(rest);

  const date = new Date().toISOString().slice(0, 10);
  const file = out ? resolve(out) : join(benchDir, 'results', `${name}-${hostname()}-${date}.json`);
  mkdirSync(dirname(file), { recursive: true });
  const json = `${JSON.stringify(result, null, 2)}\n`;
  writeFileSync(file, json);
  process.stdout.write(json);
  process.stderr.write(`bench: wrote ${file}\n`);
}

await main();
