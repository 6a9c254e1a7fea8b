// `npm run bench -- mixtral-stream [--layers 3] [--mem-cap-gib 5] [--max-disk-gb 25] [--calib-samples 8]
//   [--calib-seqlen 128] [--work DIR] [--keep] [--reuse-source]`
//
// The bigger-than-memory conversion (README "Converting a model larger than RAM"): a synthetic
// checkpoint with Mixtral-8x7B's widths (hidden 4096, 32/8 heads × 128, 8 experts × 14336, vocab
// 32000; random bf16 weights, bench/lib/synthetic-mixtral.ts) and as many layers as --max-disk-gb
// allows for source + output, converted by `transmla convert --no-eval` (default stock output: the
// DeepSeek-V2 MoE folder, kv_lora_rank 512 + qk_rope_head_dim 64) in a child process confined to a
// memory cgroup whose limit is below the checkpoint's size (cgroup v1 memory.limit_in_bytes with
// memsw, or v2 memory.max + memory.swap.max, as a child of this process's own cgroup: systemd-run
// --scope needs systemd as PID 1, which this machine does not have).
// Measured: the child's RSS every 200 ms (VmRSS; VmHWM at the end), the cgroup's peak charge
// (page cache included) and limit hits, and the wall time of every layer of both sweeps (from the
// converter's per-layer log lines), then the time to write the output. The JSON has the
// extrapolation to 32 layers and the load average before and after. Source and output are
// deleted afterwards unless --keep.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, getPriority, loadavg, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MIXTRAL_8X7B, mixtralBytes, writeSyntheticMixtral } from './lib/synthetic-mixtral.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CALIB = resolve(REPO, '..', 'shared', 'assets', 'text', 'kjv-old-testament-calib.txt');
const GiB = 2 ** 30;

interface Args { layers: number | null; memCapGib: number; maxDiskGb: number; samples: number; seqLen: number; work: string; keep: boolean; reuseSource: boolean }

function parse(argv: string[]): Args {
  const a: Args = { layers: null, memCapGib: 5, maxDiskGb: 25, samples: 8, seqLen: 128, work: '/tmp/transmla-mixtral-stream', keep: false, reuseSource: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!, v = argv[i + 1];
    const num = (): number => {
      const n = Number(v);
      if (!Number.isFinite(n) || n <= 0) throw new Error(`mixtral-stream: ${k} needs a positive number, got ${JSON.stringify(v)}`);
      i++;
      return n;
    };
    if (k === '--layers') a.layers = Math.floor(num());
    else if (k === '--mem-cap-gib') a.memCapGib = num();
    else if (k === '--max-disk-gb') a.maxDiskGb = num();
    else if (k === '--calib-samples') a.samples = Math.floor(num());
    else if (k === '--calib-seqlen') a.seqLen = Math.floor(num());
    else if (k === '--work') { a.work = resolve(v ?? ''); i++; }
    else if (k === '--keep') a.keep = true;
    else if (k === '--reuse-source') a.reuseSource = true;
    else throw new Error(`mixtral-stream: unknown argument ${k}`);
  }
  return a;
}

/** A memory cgroup under this process's own, limited to `bytes` with no swap; its folder. */
function makeCgroup(bytes: number): { dir: string; version: 1 | 2 } {
  const lines = readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n');
  const v1 = lines.find((l) => l.split(':')[1]?.split(',').includes('memory'));
  const name = `transmla-mixtral-stream-${process.pid}`;
  if (v1 && existsSync('/sys/fs/cgroup/memory')) {
    const dir = join('/sys/fs/cgroup/memory', v1.split(':')[2]!, name);
    mkdirSync(dir);
    writeFileSync(join(dir, 'memory.limit_in_bytes'), String(bytes));
    if (existsSync(join(dir, 'memory.memsw.limit_in_bytes'))) writeFileSync(join(dir, 'memory.memsw.limit_in_bytes'), String(bytes));
    return { dir, version: 1 };
  }
  const v2 = lines.find((l) => l.startsWith('0::'));
  if (v2 && existsSync(join('/sys/fs/cgroup', v2.slice(3), 'cgroup.controllers'))) {
    const dir = join('/sys/fs/cgroup', v2.slice(3), name);
    mkdirSync(dir);
    writeFileSync(join(dir, 'memory.max'), String(bytes));
    if (existsSync(join(dir, 'memory.swap.max'))) writeFileSync(join(dir, 'memory.swap.max'), '0');
    return { dir, version: 2 };
  }
  throw new Error('mixtral-stream: no writable memory cgroup (neither cgroup v1 memory nor v2) to cap the conversion with');
}

function readNum(path: string): number | null {
  try { return Number(readFileSync(path, 'utf8').trim().split(/\s+/)[0]); } catch { return null; }
}

function duBytes(dir: string): number {
  let n = 0;
  for (const f of readdirSync(dir, { withFileTypes: true })) n += f.isDirectory() ? duBytes(join(dir, f.name)) : statSync(join(dir, f.name)).size;
  return n;
}

function rssOf(pid: number): { rss: number; hwm: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? 0) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return null;
  }
}

interface Phase { name: string; startS: number; endS: number; seconds: number; peakRssBytes: number }

export async function run(argv: string[]): Promise<object> {
  const a = parse(argv);
  const shape = MIXTRAL_8X7B;
  const { perLayer, rest } = mixtralBytes(shape);
  // Output: the same tensors plus one zero shared expert per layer (3·D·I bf16), attention a little smaller.
  const sharedBytes = 2 * 3 * shape.hidden * shape.intermediate;
  const diskPerLayer = 2 * perLayer + sharedBytes;
  const layers = a.layers ?? Math.floor((a.maxDiskGb * 1e9 - 2 * rest) / diskPerLayer);
  if (layers < 1 || layers * diskPerLayer + 2 * rest > a.maxDiskGb * 1e9) throw new Error(`mixtral-stream: ${layers} layer(s) need ${((layers * diskPerLayer + 2 * rest) / 1e9).toFixed(1)} GB of disk for source and output, over --max-disk-gb ${a.maxDiskGb}`);
  const sourceBytes = layers * perLayer + rest;
  const cap = Math.floor(a.memCapGib * GiB);
  if (cap >= sourceBytes) throw new Error(`mixtral-stream: --mem-cap-gib ${a.memCapGib} is not below the checkpoint's ${(sourceBytes / GiB).toFixed(2)} GiB`);
  const load0 = loadavg();
  const src = join(a.work, 'source'), out = join(a.work, 'out');
  // --reuse-source: a synthetic source of this many layers left by an earlier run (--keep, or an interrupted one).
  const reuse = a.reuseSource && existsSync(join(src, 'config.json')) && (JSON.parse(readFileSync(join(src, 'config.json'), 'utf8')) as { num_hidden_layers?: number }).num_hidden_layers === layers;
  if (!reuse) rmSync(a.work, { recursive: true, force: true });
  rmSync(out, { recursive: true, force: true });
  mkdirSync(a.work, { recursive: true });
  const log = (l: string): void => { process.stderr.write(`mixtral-stream: ${l}\n`); };
  const result: Record<string, unknown> = {
    bench: 'mixtral-stream', shape, layers, args: a, loadavgStart: load0, cpus: cpus().length, totalMemBytes: totalmem(),
  };
  const cg = makeCgroup(cap);
  try {
    const tw = performance.now();
    if (!reuse) await writeSyntheticMixtral(src, shape, layers, 1, log);
    result.sourceWriteSeconds = reuse ? null : (performance.now() - tw) / 1000;
    result.sourceReused = reuse;
    result.sourceBytesOnDisk = duBytes(src);
    log(`source: ${layers} layers, ${(duBytes(src) / GiB).toFixed(2)} GiB; memory cap ${(cap / GiB).toFixed(2)} GiB (cgroup v${cg.version} ${cg.dir})`);
    const convertArgs = ['convert', src, '--out', out, '--no-eval', '--calib', CALIB, '--kv-lora-rank', '512', '--rope-dim', '64', '--freqfold', '2',
      '--calib-samples', String(a.samples), '--calib-seqlen', String(a.seqLen)];
    // --expose-gc: the streaming source collects the previous layer before reading the next (pipeline.ts).
    const node = [process.execPath, '--expose-gc', '--import', 'tsx', join(REPO, 'src', 'cli', 'main.ts'), ...convertArgs];
    // nice 10 for the converter, unless this bench already runs niced (the child inherits it).
    const nice = getPriority() === 0 ? ['nice', '-n', '10'] : [];
    result.command = `${nice.length ? 'nice -n 10 ' : ''}transmla ${convertArgs.join(' ')} (in the memory cgroup; this bench at nice ${getPriority()})`;
    const t0 = performance.now();
    const marks: { s: number; line: string }[] = [];
    const samples: { s: number; rss: number }[] = [];
    let hwm = 0;
    // The shell joins the cgroup, then becomes the converter (same pid).
    const child = spawn('sh', ['-c', `echo $$ > "${cg.dir}/cgroup.procs" && exec "$@"`, 'sh', ...nice, ...node], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    const onData = (d: Buffer): void => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).replace(/\r/g, '');
        buf = buf.slice(i + 1);
        marks.push({ s: (performance.now() - t0) / 1000, line });
        if (/layer \d+\/\d+|^saved|^plan/.test(line)) log(`${marks.at(-1)!.s.toFixed(0)} s, RSS ${((rssOf(child.pid!)?.rss ?? 0) / GiB).toFixed(2)} GiB (peak so far ${(Math.max(hwm, ...samples.map((x) => x.rss)) / GiB).toFixed(2)}): ${line.trim()}`);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setInterval(() => {
      const r = rssOf(child.pid!);
      if (r) { samples.push({ s: (performance.now() - t0) / 1000, rss: r.rss }); hwm = Math.max(hwm, r.hwm); }
    }, 200);
    const code: number | null = await new Promise((res) => child.on('close', (c) => res(c)));
    clearInterval(timer);
    const total = (performance.now() - t0) / 1000;
    result.exitCode = code;
    result.convertSeconds = total;
    result.childPeakRssBytes = Math.max(hwm, ...samples.map((x) => x.rss));
    result.cgroup = cg.version === 1
      ? { limitBytes: cap, peakChargeBytes: readNum(join(cg.dir, 'memory.max_usage_in_bytes')), limitHits: readNum(join(cg.dir, 'memory.failcnt')), oomControl: readFileSync(join(cg.dir, 'memory.oom_control'), 'utf8').trim().split('\n') }
      : { limitBytes: cap, peakChargeBytes: readNum(join(cg.dir, 'memory.peak')), events: readFileSync(join(cg.dir, 'memory.events'), 'utf8').trim().split('\n') };
    result.logTail = marks.slice(-8).map((m) => m.line);
    // A failed conversion (e.g. killed at the memory cap) is a result too: its phases so far are written.
    if (code !== 0) result.error = `the conversion exited with ${code ?? 'a signal (the cgroup OOM killer: see cgroup.oomControl)'}: ${marks.slice(-3).map((m) => m.line.trim()).join(' | ')}`;
    // Phases from the converter's per-layer lines.
    const phases: Phase[] = [];
    let prev = marks.find((m) => m.line.startsWith('plan:'))?.s ?? 0;
    const peakIn = (s0: number, s1: number): number => Math.max(0, ...samples.filter((x) => x.s >= s0 && x.s <= s1).map((x) => x.rss));
    for (const m of marks) {
      const p1 = /^ {2}pass 1 \(original model\) layer (\d+)\/\d+$/.exec(m.line);
      const p2 = /^ {2}pass 2 layer (\d+)\/\d+:/.exec(m.line);
      const name = p1 ? `pass 1 layer ${p1[1]}` : p2 ? `pass 2 layer ${p2[1]}` : null;
      if (!name) continue;
      phases.push({ name, startS: prev, endS: m.s, seconds: m.s - prev, peakRssBytes: peakIn(prev, m.s) });
      prev = m.s;
    }
    phases.push({ name: code === 0 ? 'writing the output' : 'until the conversion ended', startS: prev, endS: total, seconds: total - prev, peakRssBytes: peakIn(prev, total) });
    result.phases = phases;
    if (code !== 0) return result;
    result.outputBytesOnDisk = duBytes(out);
    const perLayerS = (n: string): number[] => phases.filter((p) => p.name.startsWith(n)).map((p) => p.seconds);
    const mean = (x: number[]): number => x.reduce((s, v) => s + v, 0) / Math.max(1, x.length);
    // Layers after the first are representative (the first also pays JIT warm-up and the embedding).
    const steady = (x: number[]): number => mean(x.length > 1 ? x.slice(1) : x);
    const p1 = perLayerS('pass 1'), p2 = perLayerS('pass 2'), write = phases.at(-1)!.seconds;
    const startup = phases[0]!.startS;
    const layerPeak = Math.max(...phases.filter((p) => p.name.startsWith('pass')).map((p) => p.peakRssBytes));
    result.extrapolation32 = {
      assumptions: 'per-layer work and memory are the same for every layer (one layer in memory at a time); writing scales with the bytes written',
      pass1SecondsPerLayer: steady(p1), pass2SecondsPerLayer: steady(p2), writeSecondsPerLayer: write / layers,
      wallSeconds: startup + 32 * (steady(p1) + steady(p2) + write / layers),
      peakRssBytes: layerPeak,
      sourceBytes: 32 * perLayer + rest, outputBytes: 32 * (perLayer + sharedBytes) + rest,
    };
    log(`done in ${total.toFixed(0)} s; child peak RSS ${(Number(result.childPeakRssBytes) / GiB).toFixed(2)} GiB under a ${(cap / GiB).toFixed(2)} GiB cap`);
  } finally {
    result.loadavgEnd = loadavg();
    if (!a.keep) rmSync(a.work, { recursive: true, force: true });
    try { rmdirSync(cg.dir); } catch { /* still populated by an exiting process: the kernel frees it with the last task */ }
  }
  return result;
}
