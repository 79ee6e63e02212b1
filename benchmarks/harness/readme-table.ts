/**
 * The README's performance table, generated from a results file
 * (benchmarks/results/latest.json) so the README cannot disagree with the run
 * it cites. `npm run bench -- --update-committed` rewrites the block between
 * the markers; test/unit/readme-numbers.test.ts fails when the committed
 * README and results drift apart.
 */
import * as fs from 'node:fs';

export const BEGIN = '<!-- performance table: generated from benchmarks/results/latest.json by benchmarks/harness/readme-table.ts; do not edit -->';
export const END = '<!-- end of performance table -->';

interface RowLike { id: string; kind: string; summary: { median: number; n: number } }
interface GroupLike { name: string; title: string; rows: RowLike[] }
interface WorkloadLike { name: string; rows: RowLike[] }
/** The part of Results the table reads (the committed JSON has no samples). */
export interface ResultsLike {
  machine: { date: string; kernel: string; glibc: string; cpu: string; cores: number; commit: string; virt: string };
  quick: boolean;
  groups: GroupLike[];
  workloads: WorkloadLike[];
}

const msText = (v: number): string => (v >= 10 ? v.toFixed(1) : v.toFixed(2));

function median(rows: RowLike[], kind: string): number | null {
  return rows.find((r) => r.kind === kind)?.summary.median ?? null;
}

/** Cold and restored medians of a group, or null when it did not run. */
function pair(res: ResultsLike, name: string): { cold: number; restored: number; runs: number } | null {
  const g = res.groups.find((x) => x.name === name);
  if (!g) return null;
  const cold = median(g.rows, 'cold');
  const restored = median(g.rows, 'restored');
  const runs = g.rows.find((r) => r.kind === 'restored')?.summary.n ?? 0;
  return cold !== null && restored !== null ? { cold, restored, runs } : null;
}

const range = (xs: number[], f: (v: number) => string): string => {
  const lo = Math.min(...xs);
  const hi = Math.max(...xs);
  return f(lo) === f(hi) ? f(lo) : `${f(lo)}-${f(hi)}`;
};

/** The table and the line naming its source run, without the markers. */
export function performanceTable(res: ResultsLike): string {
  const m = res.machine;
  const L: string[] = [];
  L.push(`From \`npm run bench${res.quick ? ' -- --quick' : ''}\` at commit ${m.commit} on ${m.date.slice(0, 10)} (${m.cpu}, ` +
    `${m.cores} cores, ${m.virt}; ${m.kernel.split(' ').slice(0, 2).join(' ')}, glibc ${m.glibc}): medians of interleaved runs; ` +
    'full table in [benchmarks/results/latest.md](benchmarks/results/latest.md).');
  L.push('');
  L.push('| command | cold | restored | restored / cold |');
  L.push('|---|---:|---:|---:|');
  const simple = (label: string, name: string, extra = ''): void => {
    const p = pair(res, name);
    if (p) L.push(`| ${label} | ${msText(p.cold)} ms | ${msText(p.restored)} ms | ${(p.restored / p.cold).toFixed(2)}${extra} |`);
  };
  const bashStatic = res.groups.find((g) => g.name === 'bash')?.rows.find((r) => r.kind === 'static' && r.id.includes('bash-static'));
  simple('`bash -c true`', 'bash', bashStatic ? ` (\`bash-static\`: ${msText(bashStatic.summary.median)} ms)` : '');
  simple('`dash -c true`', 'dash');
  const small = ['sed', 'ls', 'mawk'].map((n) => ({ n, p: pair(res, n) })).filter((x) => x.p !== null);
  if (small.length) {
    const ps = small.map((x) => x.p as { cold: number; restored: number });
    const label = small.map((x) => res.groups.find((g) => g.name === x.n)?.title ?? x.n).map((t) => `\`${t}\``).join(', ');
    L.push(`| ${label} | ${range(ps.map((p) => p.cold), msText)} ms | ${range(ps.map((p) => p.restored), msText)} ms | ` +
      `${range(ps.map((p) => p.restored / p.cold), (v) => v.toFixed(2))} |`);
  }
  simple('`cmake --version`', 'cmake');
  const boot = res.workloads.find((w) => w.name.startsWith('examples/boot/'));
  if (boot) {
    const cold = median(boot.rows, 'cold');
    const restored = median(boot.rows, 'restored');
    if (cold !== null && restored !== null) {
      L.push(`| boot demo (\`examples/boot/rc.sh\`, shims first on PATH) | ${msText(cold)} ms | ${msText(restored)} ms | ` +
        `${(restored / cold).toFixed(2)} (${(cold / restored).toFixed(2)}x faster) |`);
    }
  }
  const init = (label: string, name: string): void => {
    const p = pair(res, name);
    if (p) L.push(`| ${label} | ${msText(p.cold)} ms | ${msText(p.restored)} ms | ${(p.restored / p.cold).toFixed(3)} (**${(p.cold / p.restored).toFixed(1)}x** faster) |`);
  };
  init('`bash -c \'. ~/.bashrc; true\'` vs `--after-init=~/.bashrc bash -c true`', 'bash-init');
  const py = res.groups.find((g) => g.name === 'python-init');
  init(`\`python3 -c 'import ...'\` vs \`--after-init --preload ... python3 -c pass\` (${py ? py.title.replace(/^python3 after /, '') : ''})`, 'python-init');
  const floor = res.groups.find((g) => g.name === 'floor');
  const f = floor && median(floor.rows, 'floor');
  const miss = floor && median(floor.rows, 'miss');
  if (f && miss) {
    L.push('');
    L.push(`A miss (launcher present, no image) costs ${(miss - f).toFixed(3)} ms over a plain exec of a static program ` +
      `(${msText(miss)} vs ${msText(f)} ms, the floor group of the same run).`);
  }
  return L.join('\n');
}

/** The README text with the block between the markers replaced; throws when the markers are missing. */
export function replaceTable(readme: string, table: string): string {
  const a = readme.indexOf(BEGIN);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error('README.md has no performance table markers');
  return `${readme.slice(0, a + BEGIN.length)}\n${table}\n${readme.slice(b)}`;
}

/** The block currently between the markers. */
export function currentTable(readme: string): string {
  const a = readme.indexOf(BEGIN);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error('README.md has no performance table markers');
  return readme.slice(a + BEGIN.length, b).trim();
}

export function updateReadme(readmePath: string, res: ResultsLike): void {
  fs.writeFileSync(readmePath, replaceTable(fs.readFileSync(readmePath, 'utf8'), performanceTable(res)));
}
