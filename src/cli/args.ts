// Minimal flag parser for the CLI: `--name value`, `--name=value`, boolean `--flag`, positionals.
// Commands declare their flags so a typo is an error, not a silently ignored option. Every
// problem with the command line is a UsageError: main.ts prints it with the command's usage and
// exits 2 (other failures exit 1).
import { OptionError } from '../option-error.js';

export class UsageError extends OptionError {
  override name = 'UsageError';
}

export interface FlagSpec {
  /** 'string' takes a value; 'boolean' does not. */
  [name: string]: 'string' | 'boolean';
}

export interface ParsedArgs {
  positionals: string[];
  flags: Map<string, string | true>;
}

export function parseArgs(argv: string[], spec: FlagSpec): ParsedArgs {
  const positionals: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') { positionals.push(...argv.slice(i + 1)); break; }
    if (!a.startsWith('--')) { positionals.push(a); continue; }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    const kind = spec[name];
    if (!kind) throw new UsageError(`unknown option --${name}`);
    if (kind === 'boolean') {
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      flags.set(name, true);
    } else {
      const v = eq >= 0 ? a.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new UsageError(`--${name} needs a value`);
      flags.set(name, v);
    }
  }
  return { positionals, flags };
}

export function str(p: ParsedArgs, name: string): string | undefined {
  const v = p.flags.get(name);
  return typeof v === 'string' ? v : undefined;
}

export function bool(p: ParsedArgs, name: string): boolean {
  return p.flags.get(name) === true;
}

export function int(p: ParsedArgs, name: string, dflt?: number, min = 0): number | undefined {
  const v = str(p, name);
  if (v === undefined) return dflt;
  if (!/^-?\d+$/.test(v) || Number(v) < min) throw new UsageError(`--${name} must be an integer ≥ ${min}, got "${v}"`);
  return Number(v);
}

/** Bounds for num(): gt/ge below, lt/le above. */
export interface NumRange {
  gt?: number;
  ge?: number;
  lt?: number;
  le?: number;
}

function rangeText(r: NumRange): string {
  const lo = r.gt !== undefined ? `(${r.gt}` : r.ge !== undefined ? `[${r.ge}` : null;
  const hi = r.lt !== undefined ? `${r.lt})` : r.le !== undefined ? `${r.le}]` : null;
  if (lo && hi) return ` in ${lo}, ${hi}`;
  if (lo) return r.gt !== undefined ? ` > ${r.gt}` : ` ≥ ${r.ge}`;
  if (hi) return r.lt !== undefined ? ` < ${r.lt}` : ` ≤ ${r.le}`;
  return '';
}

export function num(p: ParsedArgs, name: string, dflt?: number, range: NumRange = {}): number | undefined {
  const v = str(p, name);
  if (v === undefined) return dflt;
  const x = Number(v);
  const ok = v.trim() !== '' && Number.isFinite(x) &&
    (range.gt === undefined || x > range.gt) && (range.ge === undefined || x >= range.ge) &&
    (range.lt === undefined || x < range.lt) && (range.le === undefined || x <= range.le);
  if (!ok) throw new UsageError(`--${name} must be a number${rangeText(range)}, got "${v}"`);
  return x;
}

/** The value of a flag that must be given. */
export function required(p: ParsedArgs, name: string, what: string): string {
  const v = str(p, name);
  if (v === undefined || v === '') throw new UsageError(`--${name} ${what} is required`);
  return v;
}

/** A flag restricted to a few words. */
export function oneOf<T extends string>(p: ParsedArgs, name: string, allowed: readonly T[], dflt: T): T {
  const v = str(p, name);
  if (v === undefined) return dflt;
  if (!(allowed as readonly string[]).includes(v)) {
    const list = allowed.length > 1 ? `${allowed.slice(0, -1).join(', ')} or ${allowed[allowed.length - 1]}` : allowed[0];
    throw new UsageError(`--${name} must be ${list}, got "${v}"`);
  }
  return v as T;
}

/** Exactly one of two alternatives (e.g. a rank or a fraction). */
export function exactlyOne(p: ParsedArgs, a: string, b: string, hint: string): void {
  const has = (n: string): boolean => p.flags.has(n);
  if (has(a) && has(b)) throw new UsageError(`give either --${a} or --${b}, not both`);
  if (!has(a) && !has(b)) throw new UsageError(`give ${hint}`);
}

/** The single positional argument (the model, a folder…). */
export function onePositional(p: ParsedArgs, what: string): string {
  if (p.positionals.length !== 1) throw new UsageError(`expected exactly one ${what}${p.positionals.length > 1 ? `, got ${p.positionals.length}: ${p.positionals.join(' ')}` : ''}`);
  return p.positionals[0]!;
}
