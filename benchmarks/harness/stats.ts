/** Order statistics for benchmark samples. Medians, never means: exec times have long right tails. */

export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  const a = sorted[lo] as number;
  const b = sorted[hi] as number;
  return a + (b - a) * (pos - lo);
}

export interface Summary {
  n: number;
  median: number;
  p25: number;
  p75: number;
  min: number;
  max: number;
}

export function summarize(values: readonly number[]): Summary {
  const s = [...values].sort((x, y) => x - y);
  return {
    n: s.length,
    median: quantile(s, 0.5),
    p25: quantile(s, 0.25),
    p75: quantile(s, 0.75),
    min: s[0] ?? NaN,
    max: s[s.length - 1] ?? NaN,
  };
}

/**
 * Ratio a/b with spread from paired rounds: the runner runs every command once
 * per round, so round r of `a` and round r of `b` ran seconds apart under the
 * same machine conditions. Median and inter-quartile range of the per-round
 * ratios; `ofMedians` is the plain ratio of the two medians.
 */
export interface Ratio {
  ofMedians: number;
  median: number;
  p25: number;
  p75: number;
  n: number;
}

export function pairedRatio(a: ReadonlyMap<number, number>, b: ReadonlyMap<number, number>): Ratio {
  const rs: number[] = [];
  for (const [round, va] of a) {
    const vb = b.get(round);
    if (vb !== undefined && vb > 0) rs.push(va / vb);
  }
  const sa = summarize([...a.values()]);
  const sb = summarize([...b.values()]);
  const r = summarize(rs);
  return { ofMedians: sa.median / sb.median, median: r.median, p25: r.p25, p75: r.p75, n: r.n };
}
