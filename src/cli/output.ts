/** Formatting shared by the admin commands: sizes, ages, tables, JSON. */

export interface Out {
  /** A line (or lines) on stdout. */
  line(text?: string): void;
  /** A line on stderr. */
  err(text: string): void;
}

export const stdio: Out = {
  line: (text = '') => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(`${text}\n`),
};

/** Prints a JSON document (bigints as decimal strings) on one stdout write. */
export function printJson(out: Out, value: unknown): void {
  out.line(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2));
}

export const hex = (v: bigint | number): string => `0x${v.toString(16)}`;

/** 1536 -> "1.5 KiB"; exact bytes below 1 KiB. */
export function formatBytes(n: number | bigint): string {
  let v = Number(n);
  if (v < 1024) return `${v} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}

/** A duration in milliseconds as "42 s", "5 min", "3 h", "2 d". */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

/** ISO-like local time without milliseconds: 2026-11-28 07:01:02. */
export function formatTime(ms: number): string {
  const d = new Date(ms);
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** Left-aligned columns; numeric-looking cells right-aligned. */
export function table(rows: readonly (readonly string[])[], header?: readonly string[]): string[] {
  const all = header ? [header, ...rows] : [...rows];
  const widths: number[] = [];
  for (const r of all) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  const numeric = (c: string): boolean => /^[\d.,]+( ?[KMGT]?i?B| %| s| min| h| d)?$/.test(c);
  return all.map((r) =>
    r.map((c, i) => {
      const w = widths[i] ?? 0;
      const last = i === r.length - 1;
      if (last) return c;
      if (numeric(c) && !(header && r === header)) return c.padStart(w);
      return c.padEnd(w);
    }).join('  ').trimEnd());
}

/** "label  value" lines with the labels padded to one width. */
export function keyValues(pairs: readonly (readonly [string, string])[], indent = ''): string[] {
  const w = Math.max(0, ...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${indent}${k.padEnd(w)}  ${v}`.trimEnd());
}
