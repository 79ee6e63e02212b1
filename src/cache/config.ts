/**
 * Per-cache settings, in <cache>/config.json (written atomically, 0600).
 * Only the TypeScript side reads it: bounds are enforced when images are
 * written (--warm, the background warmer) and by --cleanup, never on the hot
 * path.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../image/format.js';
import { CxError } from '../common/errors.js';

export interface CacheConfig {
  /** Upper bound of the images' total size in bytes; 0 = no bound. */
  maxSize: number;
  /** Upper bound of the number of images; 0 = no bound. */
  maxEntries: number;
}

export const DEFAULT_CONFIG: Readonly<CacheConfig> = { maxSize: 1024 ** 3, maxEntries: 5000 };

export function configPath(dir: string): string {
  return path.join(dir, 'config.json');
}

/** Reads the config; missing or unreadable fields fall back to the defaults. */
export function readConfig(dir: string): CacheConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(configPath(dir), 'utf8'));
  } catch {
    return { ...DEFAULT_CONFIG };
  }
  const obj = (raw && typeof raw === 'object' ? raw : {}) as Record<string, unknown>;
  const num = (v: unknown, d: number): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.floor(v) : d);
  return { maxSize: num(obj.maxSize, DEFAULT_CONFIG.maxSize), maxEntries: num(obj.maxEntries, DEFAULT_CONFIG.maxEntries) };
}

/** Writes the config atomically; the directory must exist (Store.ensure). */
export function writeConfig(dir: string, cfg: CacheConfig): void {
  writeFileAtomic(configPath(dir), Buffer.from(`${JSON.stringify(cfg, null, 2)}\n`), 0o600);
}

const UNITS: Record<string, number> = {
  '': 1e9, // a bare number is gigabytes, as in ccache
  b: 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12,
  ki: 1024, mi: 1024 ** 2, gi: 1024 ** 3, ti: 1024 ** 4,
};

/**
 * ccache's size syntax: a number with an optional suffix k, M, G, T (powers
 * of 1000) or Ki, Mi, Gi, Ti (powers of 1024), optionally followed by "B";
 * no suffix means G; "0" means no limit.
 */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$/i.exec(text);
  if (!m) {
    throw new CxError('usage', `invalid size '${text}' (examples: 500M, 2G, 1.5GiB, 0 for no limit)`, { reason: 'size' });
  }
  const value = Number(m[1]);
  const unit = (m[2] ?? (/b\s*$/i.test(text) ? 'b' : '')).toLowerCase();
  const factor = UNITS[unit];
  if (factor === undefined) throw new CxError('usage', `invalid size unit in '${text}'`, { reason: 'size' });
  return Math.round(value * factor);
}

/** A non-negative integer count; "0" means no limit. */
export function parseCount(text: string): number {
  if (!/^\s*\d+\s*$/.test(text)) throw new CxError('usage', `invalid count '${text}' (a whole number, 0 for no limit)`, { reason: 'count' });
  return Number(text);
}
