/** Result model shared by the benchmark driver and the report writers. */
import type { Machine } from './machine.js';
import type { Command, RowKind, Sample } from './runner.js';
import type { Ratio, Summary } from './stats.js';

export interface Row {
  id: string;
  kind: RowKind;
  label: string;
  command: string;
  summary: Summary;
  /** Median minor page faults and peak RSS (KiB) per run (NaN without the C runner). */
  minflt: number;
  maxrssKiB: number;
  /** Runs whose exit status was not the expected one. */
  badRuns: number;
  note?: string;
  samples: Sample[];
}

export interface ImageInfo {
  ok: boolean;
  warmMs: number;
  /** Snapshot time as the CLI reports it ("(232 KiB, 31 ms)"), without Node's start-up. */
  snapshotMs?: number;
  bytes: number;
  regions: number;
  files: number;
  detail: string;
  /** A maps listing through the launcher showed the image: restore really happens. */
  restores: boolean;
  /** In-process restore time (ms) reported by --internal-restore-dry (launcher start to the jump). */
  restoreMs?: Summary;
  slots?: number;
}

export interface Group {
  name: string;
  title: string;
  rounds: number;
  warmup: number;
  rows: Row[];
  /** Paired ratios vs the group's cold row, by row id. */
  vsCold: Record<string, Ratio>;
  image?: ImageInfo;
  hyperfine?: { label: string; medianMs: number; runs: number }[];
}

export interface Target {
  what: string;
  limit: string;
  measured: string;
  ok: boolean | null;
  why?: string;
}

export interface Workload {
  name: string;
  rows: Row[];
  ratio: Ratio | null;
  rounds: number;
  note?: string;
}

export interface PssResult {
  instances: number;
  coldKiB: number;
  restoredKiB: number;
  coldRssKiB: number;
  restoredRssKiB: number;
  restoredOk: boolean;
  note?: string;
}

export interface Results {
  machine: Machine;
  quick: boolean;
  harness: string;
  notes: string[];
  groups: Group[];
  workloads: Workload[];
  pss: PssResult | null;
  targets: Target[];
  elapsedS: number;
}

export type { Command };
