// Bounded, crash-free rendering of values read from untrusted files, for error messages.
// JSON.stringify is unsafe there: a value nested 10^5 deep overflows the stack, and a 1 MB
// string or a 10^5-item array would make a message nobody can read. String(v) is unsafe too:
// {"toString": 1} makes it throw a TypeError.

/** Default size of a preview in characters. */
export const PREVIEW_CHARS = 120;

/**
 * A JSON-like rendering of `v` of at most about `max` characters: long strings, arrays and
 * objects are cut with "…", nesting below a few levels is shown as [...] / {...}. Never calls
 * methods of the value, so it cannot throw.
 */
export function preview(v: unknown, max: number = PREVIEW_CHARS): string {
  let out = '';
  let full = false;
  const emit = (s: string): void => {
    if (full) return;
    if (out.length + s.length > max) {
      out += s.slice(0, Math.max(0, max - out.length)) + '…';
      full = true;
    } else out += s;
  };
  const walk = (x: unknown, depth: number): void => {
    if (full) return;
    if (typeof x === 'string') {
      // Cut before quoting so a huge string is never copied whole; emit() adds the "…".
      emit(JSON.stringify(x.length > max ? x.slice(0, max + 1) : x));
    } else if (typeof x === 'number') emit(Object.is(x, -0) ? '-0' : String(x));
    else if (typeof x === 'bigint') emit(`${x}n`);
    else if (typeof x === 'boolean' || x === null || x === undefined) emit(String(x));
    else if (Array.isArray(x)) {
      if (depth >= 4) return emit(x.length === 0 ? '[]' : '[…]');
      emit('[');
      for (let i = 0; i < x.length && !full; i++) {
        if (i > 0) emit(',');
        walk(x[i], depth + 1);
      }
      emit(']');
    } else if (typeof x === 'object') {
      const keys = Object.keys(x);
      if (depth >= 4) return emit(keys.length === 0 ? '{}' : '{…}');
      emit('{');
      for (let i = 0; i < keys.length && !full; i++) {
        if (i > 0) emit(',');
        walk(keys[i], depth + 1);
        emit(':');
        walk((x as Record<string, unknown>)[keys[i]!], depth + 1);
      }
      emit('}');
    } else emit(typeof x);
  };
  walk(v, 0);
  return out;
}

/** `s` itself when short, else its first `max` characters and "…" (for unquoted file names). */
export function clipText(s: string, max: number = PREVIEW_CHARS): string {
  return s.length <= max ? s : `${s.slice(0, max)}…`;
}
