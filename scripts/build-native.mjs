// Builds the native addon (build/Release/transmla.node) with node-gyp.
// Points node-gyp at the headers beside the running Node so no download is needed.
// A failed build is loud but not fatal: the TypeScript kernels take over, and
// TRANSMLA_REQUIRE_NATIVE=1 (set by .ci/run) turns a missing addon into an error at load time.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const prefix = resolve(dirname(process.execPath), '..');
const args = ['rebuild', '--release'];
if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);

function findNodeGyp() {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return process.env.npm_config_node_gyp;
  const candidates = [
    join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    join(dirname(process.execPath), 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  return candidates.find((c) => existsSync(c));
}

const gyp = findNodeGyp();
if (!gyp) {
  console.error('transmla: node-gyp not found; the native addon was NOT built (TypeScript kernels will be used).');
  process.exit(process.env.TRANSMLA_REQUIRE_NATIVE === '1' ? 1 : 0);
}
const r = spawnSync(process.execPath, [gyp, ...args], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('\n*** transmla: the native addon failed to build; falling back to the (much slower) TypeScript kernels. ***\n');
  process.exit(process.env.TRANSMLA_REQUIRE_NATIVE === '1' ? 1 : 0);
}
