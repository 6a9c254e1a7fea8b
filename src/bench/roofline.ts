// The memory roofline of decode timings: the bytes a step must read over the memory bandwidth
// is the fastest a step can be. The bandwidth is read between timed repetitions (bench.ts stops
// the engine child at every repetition boundary), so each context is set against the probes
// taken just before and just after its fastest repetition, in the same minutes and under the same
// load, rather than against one figure taken before the run. The spread over all probes of a run
// gives the roofline as a range, and a step faster than its roofline always carries the reason.
import type { AboveRooflineKind, BandwidthSample, DecodeAtContext, ProbeAtBoundary, RooflinePoint } from '../schema/bench-json.js';

export type { AboveRooflineKind, ProbeAtBoundary, RooflinePoint } from '../schema/bench-json.js';

const mib = (n: number): string => `${(n / 2 ** 20).toFixed(n >= 10 * 2 ** 20 ? 0 : 1)} MiB`;
const gbs = (n: number): string => `${(n / 1e9).toFixed(1)} GB/s`;

interface AboveFacts { bytesPerStep: number; achievedBytesPerSecond: number; usedBytesPerSecond: number; bestBytesPerSecond: number; lastLevelCacheBytes: number | null }

export function aboveRooflineKind(o: AboveFacts): AboveRooflineKind {
  if (o.lastLevelCacheBytes !== null && o.bytesPerStep <= o.lastLevelCacheBytes) return 'cache-resident';
  return o.achievedBytesPerSecond <= o.bestBytesPerSecond ? 'disturbed probe' : 'faster than every probe';
}

/** The reason a step read faster than the bandwidth its roofline used. */
export function aboveRooflineReason(o: AboveFacts): string {
  const llc = o.lastLevelCacheBytes;
  const kind = aboveRooflineKind(o);
  if (kind === 'cache-resident') {
    return `above the measured bandwidth: cache-resident weights (a step reads ${mib(o.bytesPerStep)}; the last-level cache holds ${mib(llc ?? 0)}), so it reads from cache, not memory`;
  }
  if (kind === 'disturbed probe') {
    return `bandwidth probe disturbed by load: the probes next to this timing read ${gbs(o.usedBytesPerSecond)}, the best of the run ${gbs(o.bestBytesPerSecond)}, ` +
      `against which this step is at ${Math.round((100 * o.achievedBytesPerSecond) / o.bestBytesPerSecond)} % of the roofline`;
  }
  return `faster than every bandwidth probe of the run (best ${gbs(o.bestBytesPerSecond)}): part of the ${mib(o.bytesPerStep)} a step reads stays in cache` +
    `${llc === null ? '' : ` (last level ${mib(llc)})`}, or the probe (one memchr pass) reads memory more slowly than the decode does`;
}

/**
 * Roofline points of one engine's run. `probes` are the readings taken at its repetition
 * boundaries (possibly none), `upFront` the figure measured before the runs.
 */
export function rooflineOf(contexts: DecodeAtContext[], probes: ProbeAtBoundary[], upFront: number, lastLevelCacheBytes: number | null): RooflinePoint[] {
  const all = [upFront, ...probes.map((p) => p.bytesPerSecond)];
  const lo = Math.min(...all), hi = Math.max(...all);
  return contexts.map((c) => {
    const mine = probes.filter((p) => p.context === c.context);
    // Repetition r's time arrives with the probe before repetition r + 1.
    let best = -1, bestMs = Infinity;
    for (const p of mine) if (p.previousMs !== null && p.previousMs < bestMs) { bestMs = p.previousMs; best = p.beforeRep - 1; }
    const before = mine.find((p) => p.beforeRep === best), after = mine.find((p) => p.beforeRep === best + 1);
    const adjacent = before && after ? { before: strip(before), after: strip(after) } : null;
    const bw = adjacent ? Math.max(adjacent.before.bytesPerSecond, adjacent.after.bytesPerSecond) : upFront;
    const minMs = (c.bytesPerStep / bw) * 1000;
    const achieved = c.bytesPerStep / (c.msPerToken / 1000);
    const fraction = minMs / c.msPerToken;
    const facts = { bytesPerStep: c.bytesPerStep, achievedBytesPerSecond: achieved, usedBytesPerSecond: bw, bestBytesPerSecond: hi, lastLevelCacheBytes };
    return {
      context: c.context, minMsPerToken: minMs, fractionOfRoofline: fraction, achievedBytesPerSecond: achieved,
      bandwidthBytesPerSecond: bw, bandwidthSource: adjacent ? 'adjacent probes' : 'up-front measurement', adjacent,
      bandwidthRange: [lo, hi],
      minMsPerTokenRange: [(c.bytesPerStep / hi) * 1000, (c.bytesPerStep / lo) * 1000],
      fractionOfRooflineRange: [achieved / hi, achieved / lo],
      aboveRoofline: fraction > 1 ? aboveRooflineReason(facts) : null,
      aboveRooflineKind: fraction > 1 ? aboveRooflineKind(facts) : null,
    };
  });
}

function strip(p: ProbeAtBoundary): BandwidthSample {
  return { at: p.at, bytesPerSecond: p.bytesPerSecond, singleThreadBytesPerSecond: p.singleThreadBytesPerSecond, parallelBytesPerSecond: p.parallelBytesPerSecond };
}

/** "58 %", or "107 %*" for a point past the roofline (its reason is printed as the footnote). */
export function formatRooflineShare(p: Pick<RooflinePoint, 'fractionOfRoofline' | 'aboveRoofline'>): string {
  return `${(100 * p.fractionOfRoofline).toFixed(0)} %${p.fractionOfRoofline > 1 ? '*' : ''}`;
}
