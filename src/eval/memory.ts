import { readFileSync } from 'node:fs';

/**
 * This process's peak resident set size. Linux: VmHWM, which starts afresh at exec (getrusage's
 * maxrss does not: a child forked from a large parent would inherit the parent's peak).
 */
export function peakRssBytes(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // Not Linux: fall through to getrusage.
  }
  return process.resourceUsage().maxRSS * 1024;
}
