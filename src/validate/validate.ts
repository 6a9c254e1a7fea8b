// transmla validate: reads a checkpoint folder (config.json + safetensors headers, no tensor
// data) or a .gguf file, runs the rules (rules.ts, gguf-rules.ts; recorded.ts cross-checks
// config.json against the folder's transmla.json) and reports, engine by
// engine, whether it will load, compute what the checkpoint means, and reach the fast path.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { openCheckpoint } from '../io/checkpoint.js';
import { readGguf } from '../io/gguf.js';
import { runGgufRules } from './gguf-rules.js';
import { checkRecordedFacts } from './recorded.js';
import {
  ENGINE_LABELS, ENGINES, EXPORT_FIX, kernelTables,
  runFolderRules, type EngineId, type Finding, type Impact, type KernelStatus, type TensorFact,
} from './rules.js';

export interface EngineVerdict {
  engine: EngineId;
  label: string;
  loads: boolean;
  /** Computes what the checkpoint means; 'unknown' when it does not load or a part is unchecked. */
  correct: boolean | 'unknown';
  fastPath: boolean;
  /** "<impact>: <message>" for every finding that touches this engine, worst first. */
  reasons: string[];
  /** vLLM and SGLang: which attention kernels the latent shape admits. */
  kernels?: KernelStatus[];
}

export interface ValidateReport {
  path: string;
  kind: 'hf-folder' | 'gguf';
  /** One line describing the checkpoint. */
  summary: string;
  engines: EngineVerdict[];
  findings: Finding[];
  /** Distinct suggested fixes. */
  fixes: string[];
  /** Engines whose verdicts decide `ok`. */
  checked: EngineId[];
  /** false when any checked engine would not load it or would compute something else. */
  ok: boolean;
}

export interface ValidateOptions {
  /** Engines whose verdicts decide `ok` (default: all that apply). */
  engines?: readonly EngineId[];
}

export class ValidateError extends Error {
  override name = 'ValidateError';
}

const engineShort = (e: EngineId): string => (e === 'transformers' ? 'transformers' : e === 'vllm' ? 'vLLM' : e === 'sglang' ? 'SGLang' : 'llama.cpp');

/**
 * Distinct fixes, with the placeholder folder filled in; the several reasons to run
 * `transmla export` become one line listing what it will do.
 */
function collectFixes(fixes: string[], path: string): string[] {
  const exportWhy: string[] = [];
  const other: string[] = [];
  for (const f of fixes) {
    if (f.startsWith(EXPORT_FIX)) {
      const why = /\((.*)\)$/.exec(f.slice(EXPORT_FIX.length))?.[1];
      if (why && !exportWhy.includes(why)) exportWhy.push(why);
    } else if (!other.includes(f)) other.push(f);
  }
  const hasExport = fixes.some((f) => f.startsWith(EXPORT_FIX));
  const exp = EXPORT_FIX.replace('<folder>', path) + (exportWhy.length > 0 ? ` (${exportWhy.join('; ')})` : '');
  return [...(hasExport ? [exp] : []), ...other];
}

const ORDER: Impact[] = ['will-not-load', 'incorrect', 'unknown', 'not-fast', 'note'];

function verdict(engine: EngineId, findings: readonly Finding[], kernels?: KernelStatus[]): EngineVerdict {
  const mine = findings.filter((f) => f.impact[engine] !== undefined)
    .sort((a, b) => ORDER.indexOf(a.impact[engine]!) - ORDER.indexOf(b.impact[engine]!));
  const has = (i: Impact): boolean => mine.some((f) => f.impact[engine] === i);
  const loads = !has('will-not-load');
  return {
    engine,
    label: ENGINE_LABELS[engine],
    loads,
    correct: !loads || has('unknown') ? (has('incorrect') ? false : 'unknown') : !has('incorrect'),
    fastPath: loads && !has('not-fast'),
    reasons: mine.map((f) => `${f.impact[engine]}: ${f.message}${f.effect?.[engine] ? `; ${engineShort(engine)}: ${f.effect[engine]}` : ''}`),
    ...(kernels ? { kernels } : {}),
  };
}

function report(path: string, kind: ValidateReport['kind'], summary: string, findings: Finding[], engines: EngineVerdict[], o: ValidateOptions): ValidateReport {
  const decide = engines.filter((e) => !o.engines || o.engines.includes(e.engine));
  const fixes = collectFixes(findings.filter((f) => f.fix && decide.some((e) => f.impact[e.engine] !== undefined && f.impact[e.engine] !== 'note')).map((f) => f.fix!), path);
  return { path, kind, summary, engines, findings, fixes, checked: decide.map((e) => e.engine), ok: decide.every((e) => e.loads && e.correct !== false) };
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ValidateError(`${path}: cannot read: ${(e as Error).message}`);
  }
}

export function validateFolder(dir: string, o: ValidateOptions = {}): ValidateReport {
  const abs = resolve(dir);
  const cfgPath = join(abs, 'config.json');
  if (!existsSync(cfgPath)) throw new ValidateError(`${abs} has no config.json`);
  const config = readJson(cfgPath);
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new ValidateError(`${cfgPath}: expected a JSON object`);
  const tensors = new Map<string, TensorFact>();
  const ck = openCheckpoint(abs);
  try {
    for (const n of ck.names()) {
      const i = ck.info(n);
      tensors.set(n, { dtype: i.dtype, shape: i.shape });
    }
  } finally {
    ck.close();
  }
  const files = new Set(readdirSync(abs));
  let transmla: Record<string, unknown> | null = null;
  if (files.has('transmla.json')) {
    try {
      const j = JSON.parse(readFileSync(join(abs, 'transmla.json'), 'utf8'));
      transmla = typeof j === 'object' && j !== null && !Array.isArray(j) ? j : null;
    } catch {
      transmla = null;
    }
  }
  const c = config as Record<string, unknown>;
  const facts = { dir: abs, config: c, tensors, files, transmla };
  const rules = runFolderRules(facts);
  // config.json against what the folder records of its weights (recorded.ts): a config-only
  // finding whose premise the records contradict gives way to the recorded one.
  const recorded = checkRecordedFacts(facts);
  const dims = rules.dims;
  const findings = [...rules.findings.filter((f) => !recorded.supersedes.includes(f.rule)), ...recorded.findings];
  const kt = dims ? kernelTables(dims) : null;
  const engines = ENGINES.map((e) => verdict(e, findings, e === 'vllm' ? kt?.vllm : e === 'sglang' ? kt?.sglang : undefined));
  const dtypes = [...new Set([...tensors.values()].map((t) => t.dtype))].sort().join('/');
  const summary = dims
    ? `${String(c.model_type)}, ${dims.layers} layers, ${dims.heads} heads, hidden ${dims.hidden}; kv_lora_rank ${dims.kvLoraRank} + qk_rope_head_dim ${dims.qkRopeHeadDim} ` +
      `(cache row ${dims.kvLoraRank + dims.qkRopeHeadDim}), qk_nope_head_dim ${dims.qkNopeHeadDim}, v_head_dim ${dims.vHeadDim}, q_lora_rank ${dims.qLoraRank ?? 'none'}; ${tensors.size} tensors ${dtypes}`
    : `model_type ${JSON.stringify(c.model_type)}; ${tensors.size} tensors ${dtypes}`;
  return report(abs, 'hf-folder', summary, findings, engines, o);
}

export function validateGguf(path: string): ValidateReport {
  const abs = resolve(path);
  const f = readGguf(abs);
  const arch = f.getString('general.architecture');
  if (arch !== 'deepseek2') throw new ValidateError(`${abs}: general.architecture is ${JSON.stringify(arch ?? null)}; validate checks MLA GGUF files (deepseek2)`);
  const { findings, dims } = runGgufRules(f);
  const summary = dims
    ? `GGUF deepseek2, ${dims.layers} layers, ${dims.heads} heads, hidden ${dims.hidden}; kv_lora_rank ${dims.kvLoraRank} + rope ${dims.ropeDim}, q_lora_rank ${dims.qLoraRank || 'none'}, ${dims.kMla !== null ? 'MLA form' : 'legacy form'}; ${f.tensors.length} tensors`
    : `GGUF deepseek2; ${f.tensors.length} tensors`;
  // A GGUF file is llama.cpp's; the other engines are not asked.
  return report(abs, 'gguf', summary, findings, [verdict('llama.cpp', findings)], { engines: ['llama.cpp'] });
}

/** A folder or a .gguf file. */
export function validatePath(path: string, o: ValidateOptions = {}): ValidateReport {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new ValidateError(`${resolve(path)} does not exist`);
  }
  if (st.isFile()) {
    if (!path.endsWith('.gguf')) throw new ValidateError(`${resolve(path)}: give a checkpoint folder or a .gguf file`);
    return validateGguf(path);
  }
  return validateFolder(path, o);
}

// ---------------------------------------------------------------------------------------------
// Text form

const yn = (b: boolean | 'unknown'): string => (b === 'unknown' ? '?' : b ? 'yes' : 'NO');

export function formatValidateReport(r: ValidateReport): string {
  const lines = [`${r.path}`, `  ${r.summary}`, ''];
  const w = Math.max(...r.engines.map((e) => e.label.length));
  lines.push(`  ${'engine'.padEnd(w)}  loads  correct  fast path`);
  for (const e of r.engines) {
    lines.push(`  ${e.label.padEnd(w)}  ${yn(e.loads).padEnd(5)}  ${(e.loads ? yn(e.correct) : '-').padEnd(7)}  ${e.loads ? yn(e.fastPath) : '-'}`);
  }
  // Notes that say the same to every engine are printed once, after the engines.
  const shared = r.findings.filter((f) => r.engines.every((e) => f.impact[e.engine] === 'note'));
  const sharedText = new Set(shared.map((f) => `note: ${f.message}`));
  for (const e of r.engines) {
    lines.push('', `${e.label}:`);
    const own = e.reasons.filter((x) => !sharedText.has(x));
    for (const reason of own) lines.push(`  - ${reason}`);
    if (own.length === 0) lines.push('  - no problems found');
    if (e.kernels) {
      const byNote = new Map<string, string[]>();
      for (const k of e.kernels) byNote.set(`${k.usable ? 'usable' : 'not usable'}: ${k.note}`, [...(byNote.get(`${k.usable ? 'usable' : 'not usable'}: ${k.note}`) ?? []), k.name]);
      lines.push(`  kernels: ${[...byNote].map(([note, names]) => `${names.join(', ')} ${note}`).join('; ')}`);
    }
  }
  if (shared.length > 0) {
    lines.push('', 'notes:');
    for (const f of shared) lines.push(`  - ${f.message}`);
  }
  if (r.fixes.length > 0) {
    lines.push('', 'suggested fixes:');
    for (const f of r.fixes) lines.push(`  - ${f}`);
  }
  const bad = r.engines.filter((e) => r.checked.includes(e.engine)).filter((e) => !e.loads || e.correct === false).map((e) => `${e.engine} (${!e.loads ? 'will not load' : 'computes something else'})`);
  lines.push('', r.ok ? 'verdict: loads and computes correctly on every checked engine' : `verdict: will not load correctly on ${bad.join(', ')}`);
  return lines.join('\n');
}
