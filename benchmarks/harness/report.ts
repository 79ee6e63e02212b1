/** Console table, Markdown, SVG chart and JSON of a benchmark run. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Ratio } from './stats.js';
import type { Group, Results, Row } from './types.js';

const ms = (v: number, d = 3): string => (Number.isFinite(v) ? v.toFixed(d) : '-');
const kib = (v: number): string => (Number.isFinite(v) ? v.toFixed(0) : '-');
const size = (b: number): string => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(1)} MiB` : `${Math.round(b / 1024)} KiB`);
const ratioText = (r: Ratio | undefined): string =>
  r ? `${r.ofMedians.toFixed(2)} (paired ${r.median.toFixed(2)}, IQR ${r.p25.toFixed(2)}-${r.p75.toFixed(2)})` : '-';

const KIND_NAME: Record<string, string> = {
  cold: 'cold', restored: 'restored', static: 'static', bindnow: 'LD_BIND_NOW=1 cold', miss: 'miss (no image)',
  dry: 'restore, no jump', floor: 'floor', workload: 'workload', adapter: 'cold through the adapter',
};

function pad(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

export function consoleReport(res: Results): string {
  const out: string[] = [];
  const m = res.machine;
  out.push(`cached-exec start-up benchmark${res.quick ? ' (--quick)' : ''} - ${m.date}`);
  out.push(`${m.kernel}, glibc ${m.glibc}, ${m.cpu} (${m.cores} cores), Node ${m.node}, commit ${m.commit}`);
  out.push(`harness: ${res.harness}`);
  out.push('');
  out.push(`${pad('group', 16)} ${pad('variant', 44)} ${pad('median ms', 10, true)} ${pad('p25-p75 ms', 15, true)} ${pad('runs', 5, true)}  vs cold`);
  for (const g of res.groups) {
    for (const r of g.rows) {
      const vs = g.vsCold[r.id];
      out.push(`${pad(g.name, 16)} ${pad(r.label, 44)} ${pad(ms(r.summary.median), 10, true)} ${pad(`${ms(r.summary.p25)}-${ms(r.summary.p75)}`, 15, true)} ${pad(String(r.summary.n), 5, true)}  ${vs ? vs.ofMedians.toFixed(2) : ''}${r.note ? `  [${r.note}]` : ''}`);
    }
  }
  for (const w of res.workloads) {
    for (const r of w.rows) {
      out.push(`${pad('workload', 16)} ${pad(`${w.name.replace(/ \(.*$/, '')}: ${r.label}`, 44)} ${pad(ms(r.summary.median, 1), 10, true)} ${pad(`${ms(r.summary.p25, 1)}-${ms(r.summary.p75, 1)}`, 15, true)} ${pad(String(r.summary.n), 5, true)}  ${r.kind === 'restored' && w.ratio ? w.ratio.ofMedians.toFixed(2) : ''}`);
    }
  }
  out.push('');
  out.push('targets:');
  for (const t of res.targets) {
    const mark = t.ok === null ? 'n/a ' : t.ok ? 'PASS' : 'MISS';
    out.push(`  ${mark}  ${t.what} ${t.limit}: ${t.measured}${t.why ? ` - ${t.why}` : ''}`);
  }
  return out.join('\n');
}

// ---------------------------------------------------------------------------

function mdRows(g: Group): string[] {
  const lines: string[] = [];
  for (const r of g.rows) {
    lines.push(`| ${r.label} | ${KIND_NAME[r.kind] ?? r.kind} | **${ms(r.summary.median)}** | ${ms(r.summary.p25)}-${ms(r.summary.p75)} | ${r.summary.n} | ${ratioText(g.vsCold[r.id])} | ${kib(r.minflt)} | ${kib(r.maxrssKiB)} | ${[r.note, r.badRuns ? `${r.badRuns} runs with an unexpected exit status` : ''].filter(Boolean).join('; ')} |`);
  }
  return lines;
}

export function markdown(res: Results, svgName: string): string {
  const m = res.machine;
  const L: string[] = [];
  L.push(`# cached-exec benchmark results${res.quick ? ' (quick run)' : ''}`);
  L.push('');
  L.push(`Produced by \`npm run bench${res.quick ? ' -- --quick' : ''}\` on ${m.date} in ${res.elapsedS.toFixed(0)} s. How to read this: \`benchmarks/README.md\`.`);
  L.push('');
  L.push('| machine | |');
  L.push('|---|---|');
  L.push(`| kernel | ${m.kernel} |`);
  L.push(`| glibc | ${m.glibc} |`);
  L.push(`| CPU | ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB (virtualisation: ${m.virt}) |`);
  L.push(`| Node | ${m.node} |`);
  L.push(`| cc | ${m.cc} |`);
  L.push(`| hyperfine | ${m.hyperfine} |`);
  L.push(`| cached-exec commit | ${m.commit} |`);
  L.push(`| harness | ${res.harness} |`);
  L.push('');
  L.push('## Targets');
  L.push('');
  L.push('| target | limit | measured | result |');
  L.push('|---|---|---|---|');
  for (const t of res.targets) {
    L.push(`| ${t.what} | ${t.limit} | ${t.measured} | ${t.ok === null ? 'n/a' : t.ok ? 'met' : `**missed**${t.why ? `: ${t.why}` : ''}`} |`);
  }
  L.push('');
  L.push(`![start-up time relative to cold](${svgName})`);
  L.push('');
  L.push('## Start-up time');
  L.push('');
  L.push('Each group ran as one interleaved set: every round runs each variant once, in a shuffled order, after the warmup rounds. ');
  L.push('Times are wall-clock from spawn to reaped exit, in milliseconds; "runs" is the number of timed runs of that variant. ');
  L.push('"vs cold" is the ratio of medians, then the median and inter-quartile range of the per-round ratios. ');
  L.push('Faults are minor page faults per run (median); peak RSS is the kernel\'s figure, which starts from the runner\'s own RSS (see the floor).');
  L.push('');
  for (const g of res.groups) {
    L.push(`### ${g.title}`);
    L.push('');
    L.push(`${g.rounds} runs per variant after ${g.warmup} warmup rounds.${g.image ? ` Image: ${g.image.ok ? `${size(g.image.bytes)}, ${g.image.regions} regions, ${g.image.files} files, --warm took ${ms(g.image.warmMs / 1000, 2)} s (CLI wall time incl. Node start)${g.image.restores ? ', restore verified (/proc/PID/maps, or the launcher\'s HIT record for post-init images)' : `; **not restored**: ${g.image.detail}`}` : `**none**: ${g.image.detail}`}.` : ''}`);
    L.push('');
    L.push('| variant | kind | median ms | p25-p75 ms | runs | vs cold | faults | peak RSS KiB | note |');
    L.push('|---|---|---:|---:|---:|---|---:|---:|---|');
    L.push(...mdRows(g));
    if (g.hyperfine?.length) {
      L.push('');
      L.push(`hyperfine cross-check (not interleaved, \`-N\`): ${g.hyperfine.map((h) => `${h.label} ${ms(h.medianMs)} ms median of ${h.runs} runs`).join('; ')}.`);
    }
    L.push('');
  }
  L.push('## Costs');
  L.push('');
  L.push('"restore in-process" is the launcher\'s own clock from its entry to just before the jump (`--internal-restore-dry` prints it); "dry run wall" is the same run timed from outside (exec of the launcher, restore, exit).');
  L.push('');
  L.push('| program | image size | regions | files | slots | --warm (snapshot as reported; CLI wall incl. Node) | restore in-process median | dry run wall median | dry - floor |');
  L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  const floor = res.groups.find((g) => g.name === 'floor')?.rows.find((r) => r.kind === 'floor')?.summary.median ?? NaN;
  for (const g of res.groups) {
    if (!g.image) continue;
    const dry = g.rows.find((r) => r.kind === 'dry');
    const rm = g.image.restoreMs;
    L.push(`| ${g.name} | ${g.image.ok ? size(g.image.bytes) : '-'} | ${g.image.ok ? g.image.regions : '-'} | ${g.image.ok ? g.image.files : '-'} | ${g.image.slots ?? '-'} | ${g.image.snapshotMs !== undefined ? `${g.image.snapshotMs} ms snapshot, ` : ''}${ms(g.image.warmMs / 1000, 2)} s wall | ${rm ? `${ms(rm.median)} ms (${rm.n} runs, IQR ${ms(rm.p25)}-${ms(rm.p75)})` : '-'} | ${dry ? `${ms(dry.summary.median)} ms (${dry.summary.n} runs)${dry.note ? ` - ${dry.note}` : ''}` : '-'} | ${dry ? `${ms(dry.summary.median - floor)} ms` : '-'} |`);
  }
  L.push('');
  const fg = res.groups.find((g) => g.name === 'floor');
  if (fg) {
    const f = fg.rows.find((r) => r.kind === 'floor');
    const miss = fg.rows.find((r) => r.kind === 'miss');
    if (f && miss) {
      L.push(`Miss path: \`cached-exec\` in front of the floor program with no image costs ${ms(miss.summary.median)} ms vs ${ms(f.summary.median)} ms direct (${fg.rounds} runs each): ${ms(miss.summary.median - f.summary.median)} ms of overhead, ${((miss.summary.median - f.summary.median) / f.summary.median).toFixed(2)}x the floor. The bash and dash groups show the same miss path in front of a real program.`);
      L.push('');
    }
  }
  if (res.pss) {
    const p = res.pss;
    L.push(`Memory: ${p.instances} concurrent \`bash -c 'echo ready; read x'\`, proportional set size per instance: cold ${kib(p.coldKiB)} KiB, restored ${kib(p.restoredKiB)} KiB (RSS ${kib(p.coldRssKiB)} vs ${kib(p.restoredRssKiB)} KiB)${p.note ? `; ${p.note}` : ''}.`);
    L.push('');
  }
  if (res.workloads.length) {
    L.push('## Workloads');
    L.push('');
    L.push('| workload | variant | median ms | p25-p75 ms | runs | with shims / without |');
    L.push('|---|---|---:|---:|---:|---|');
    for (const w of res.workloads) {
      for (const r of w.rows) {
        L.push(`| ${w.name} | ${r.label} | ${ms(r.summary.median, 1)} | ${ms(r.summary.p25, 1)}-${ms(r.summary.p75, 1)} | ${r.summary.n} | ${r.kind === 'restored' ? ratioText(w.ratio ?? undefined) : ''} |`);
      }
      if (w.note) L.push(`| | ${w.note} | | | | |`);
    }
    L.push('');
  }
  if (res.notes.length) {
    L.push('## Notes');
    L.push('');
    for (const n of res.notes) L.push(`- ${n}`);
    L.push('');
  }
  return L.join('\n');
}

// ---------------------------------------------------------------------------
// SVG: horizontal grouped bars, each program's bars relative to its own cold median.

const COLORS: Record<string, string> = {
  cold: '#8c8c8c', restored: '#1f77b4', static: '#ff7f0e', bindnow: '#bcbd22', miss: '#9467bd', dry: '#17becf',
};
const TARGETS: Record<string, number> = { bash: 0.75, dash: 0.6, cmake: 0.3 };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function svg(res: Results): string {
  const shown = ['cold', 'restored', 'static'];
  const groups = res.groups.filter((g) => g.rows.some((r) => r.kind === 'cold'));
  const floor = res.groups.find((g) => g.name === 'floor')?.rows.find((r) => r.kind === 'floor')?.summary.median;
  const W = 960;
  const left = 190;
  const right = 150;
  const plotW = W - left - right;
  const barH = 14;
  const gap = 3;
  const groupGap = 16;
  const top = 78;
  const maxRel = 1.3;
  let y = top;
  const parts: string[] = [];
  const x = (rel: number): number => left + (Math.min(rel, maxRel) / maxRel) * plotW;
  for (const g of groups) {
    const cold = g.rows.find((r) => r.kind === 'cold') as Row;
    const rows = g.rows.filter((r) => shown.includes(r.kind));
    const h = rows.length * (barH + gap) - gap;
    parts.push(`<text x="${left - 10}" y="${y + h / 2 + 4}" text-anchor="end" font-size="13" font-weight="bold">${esc(g.title)}</text>`);
    for (const r of rows) {
      const rel = r.summary.median / cold.summary.median;
      const color = COLORS[r.kind] ?? '#444';
      const dim = r.note && r.kind === 'restored' ? ' fill-opacity="0.35"' : '';
      parts.push(`<rect x="${left}" y="${y}" width="${(x(rel) - left).toFixed(1)}" height="${barH}" fill="${color}"${dim}><title>${esc(`${r.label}: ${ms(r.summary.median)} ms median of ${r.summary.n} runs`)}</title></rect>`);
      const label = `${ms(r.summary.median, r.summary.median >= 10 ? 1 : 2)} ms${r.kind !== 'cold' ? ` (${rel.toFixed(2)})` : ''}${r.note && r.kind === 'restored' ? ' not restored' : ''}${r.kind === 'static' ? ` ${r.label.split(' ')[0]}` : ''}`;
      parts.push(`<text x="${(x(rel) + 4).toFixed(1)}" y="${y + barH - 3}" font-size="11" fill="#222">${esc(label)}</text>`);
      y += barH + gap;
    }
    const target = TARGETS[g.name];
    if (target !== undefined) {
      parts.push(`<line x1="${x(target).toFixed(1)}" x2="${x(target).toFixed(1)}" y1="${y - h - gap - 3}" y2="${y - gap + 3}" stroke="#d62728" stroke-width="2"><title>target ${target}</title></line>`);
    }
    if (floor !== undefined && Number.isFinite(floor)) {
      const fx = x(floor / cold.summary.median).toFixed(1);
      parts.push(`<line x1="${fx}" x2="${fx}" y1="${y - h - gap - 3}" y2="${y - gap + 3}" stroke="#000" stroke-width="1" stroke-dasharray="3,2"><title>static exit floor ${ms(floor)} ms</title></line>`);
    }
    y += groupGap;
  }
  const H = y + 40;
  const axis: string[] = [];
  for (const t of [0, 0.25, 0.5, 0.75, 1, 1.25]) {
    const tx = x(t).toFixed(1);
    axis.push(`<line x1="${tx}" x2="${tx}" y1="${top - 6}" y2="${y - groupGap + 4}" stroke="${t === 1 ? '#999' : '#e3e3e3'}" stroke-width="1"/>`);
    axis.push(`<text x="${tx}" y="${y - groupGap + 18}" text-anchor="middle" font-size="11" fill="#555">${Math.round(t * 100)}%</text>`);
  }
  const legend: string[] = [];
  let lx = left;
  for (const [k, label] of [['cold', 'cold exec'], ['restored', 'cached-exec (restored)'], ['static', 'static build (bash-static / busybox)']] as const) {
    legend.push(`<rect x="${lx}" y="40" width="12" height="12" fill="${COLORS[k]}"/><text x="${lx + 16}" y="50" font-size="12">${label}</text>`);
    lx += 24 + label.length * 6.6;
  }
  legend.push(`<line x1="${lx}" x2="${lx}" y1="38" y2="54" stroke="#d62728" stroke-width="2"/><text x="${lx + 6}" y="50" font-size="12">target</text>`);
  lx += 60;
  legend.push(`<line x1="${lx}" x2="${lx}" y1="38" y2="54" stroke="#000" stroke-dasharray="3,2"/><text x="${lx + 6}" y="50" font-size="12">static exit floor</text>`);
  const m = res.machine;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${left}" y="24" font-size="16" font-weight="bold">Start-up time relative to a cold exec (median; lower is better)</text>`,
    ...legend,
    ...axis,
    ...parts,
    `<text x="${left}" y="${H - 10}" font-size="10" fill="#666">${esc(`${m.kernel}, glibc ${m.glibc}, ${m.cpu}; ${m.date}; bars past ${maxRel * 100}% are clipped`)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}

/** Writes latest.md, latest.svg and latest.json into `dir`; returns the paths. */
export function writeReports(res: Results, dir: string): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const md = path.join(dir, 'latest.md');
  const sv = path.join(dir, 'latest.svg');
  const js = path.join(dir, 'latest.json');
  fs.writeFileSync(sv, svg(res));
  fs.writeFileSync(md, markdown(res, 'latest.svg'));
  const slim = {
    ...res,
    groups: res.groups.map((g) => ({ ...g, rows: g.rows.map(({ samples: _s, ...r }) => r) })),
    workloads: res.workloads.map((w) => ({ ...w, rows: w.rows.map(({ samples: _s, ...r }) => r) })),
  };
  fs.writeFileSync(js, JSON.stringify(slim, null, 1) + '\n');
  return [md, sv, js];
}
