// node test/arm64/bench-check.mjs LATEST_JSON CACHE_DIR LAUNCHER: judges a bench run
// (npm run bench -- --cache CACHE_DIR) by the launcher's own records, not by the report's
// word. For each program group of latest.json, the HIT records in CACHE_DIR/stats/runs.log
// under that program's key (LAUNCHER --internal-key PROG) must number at least the
// group's timed rounds: the restored row was restored in (nearly) every run, not timed
// as a cold fallback. A post-init group (NAME-init) either was restored, with HITs under
// keys no program group has, or is reported NOT restored with its reason (a machine
// that refuses post-init images, e.g. aarch64 before the port): a line, not a failure.
// Also: the timing harness must be the C runner (cross-built for the guest), and no
// row may have runs with an unexpected exit status. Prints one line per group and the
// ratios; exit 0 when every check holds, 1 otherwise.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import process from 'node:process';
import { decodeRunRecords } from '../../dist/cache/stats.js';
// The PATH the bench runs its rows with: part of the launcher's key. (Compiled by npm run bench.)
import { SYSTEM_PATH } from '../../build/bench-js/benchmarks/harness/programs.js';

const [latest, cache, launcher] = process.argv.slice(2);
const res = JSON.parse(fs.readFileSync(latest, 'utf8'));
const records = decodeRunRecords(fs.readFileSync(`${cache}/stats/runs.log`)).records;
const env = { ...process.env, PATH: SYSTEM_PATH, CACHED_EXEC_DIR: cache };
const say = (line) => process.stdout.write(`${line}\n`);
let ok = true;
const fail = (msg) => {
  ok = false;
  say(`FAIL ${msg}`);
};
const outcomes = (pred) => {
  const n = {};
  for (const r of records) if (pred(r)) n[r.outcome] = (n[r.outcome] ?? 0) + 1;
  return n;
};
const show = (n) => Object.entries(n).map(([k, v]) => `${k} ${v}`).join(', ') || 'no records';

if (!/^C runner/.test(res.harness)) fail(`harness is not the C runner: ${res.harness}`);
say(`harness: ${res.harness}; cc: ${res.machine.cc}`);
const keys = new Set();
for (const g of res.groups) {
  const restored = g.rows.find((r) => r.kind === 'restored');
  const cold = g.rows.find((r) => r.kind === 'cold' || r.kind === 'floor');
  for (const r of g.rows) if (r.badRuns) fail(`${g.name}: ${r.label}: ${r.badRuns} runs with an unexpected exit status`);
  if (!restored) {
    say(`${g.name}: no restored row (${g.rows.map((r) => `${r.label} ${r.summary.median.toFixed(1)} ms`).join(', ')})`);
    continue;
  }
  const ratio = `${(restored.summary.median / cold.summary.median).toFixed(2)} (${restored.summary.median.toFixed(1)} / ${cold.summary.median.toFixed(1)} ms, ${restored.summary.n} runs)`;
  if (g.name.endsWith('-init')) {
    if (!g.image?.restores) {
      say(`${g.name}: NOT restored (${g.image?.detail || 'no image'}): timed as a cold run through the launcher, ratio ${ratio}; not a failure here`);
      continue;
    }
    const n = outcomes((r) => !keys.has(r.key));
    say(`${g.name}: restored/cold ${ratio}; records under other keys: ${show(n)}`);
    if ((n.HIT ?? 0) < g.rounds) fail(`${g.name}: ${n.HIT ?? 0} HIT records, fewer than its ${g.rounds} rounds`);
    continue;
  }
  const k = spawnSync(launcher, ['--internal-key', g.name], { env, encoding: 'utf8' });
  const key = /^([0-9a-f]{16}) /m.exec(k.stdout ?? '')?.[1];
  if (!key) {
    fail(`${g.name}: no key from ${launcher} --internal-key (${(k.stderr ?? '').trim()})`);
    continue;
  }
  keys.add(key);
  const n = outcomes((r) => r.key === key);
  say(`${g.name}: restored/cold ${ratio}; records for key ${key}: ${show(n)}`);
  // When the runs that did not restore happened (s after the key's first record, all in a
  // burst: the concurrent instances of the PSS check; spread: the timed rounds too).
  const mine = records.filter((r) => r.key === key);
  const odd = mine.filter((r) => r.outcome !== 'HIT');
  if (odd.length) say(`  ${g.name}: not HIT at s ${odd.map((r) => `${((r.timeMs - mine[0].timeMs) / 1000).toFixed(1)} ${r.outcome}`).join(', ')} (last record at s ${((mine.at(-1).timeMs - mine[0].timeMs) / 1000).toFixed(1)})`);
  if (!g.image?.restores) fail(`${g.name}: the report says NOT restored (${g.image?.detail})`);
  if ((n.HIT ?? 0) < g.rounds) fail(`${g.name}: ${n.HIT ?? 0} HIT records, fewer than its ${g.rounds} rounds`);
}
for (const t of res.targets ?? []) say(`target ${t.ok === null ? 'n/a ' : t.ok ? 'PASS' : 'MISS'} ${t.what} ${t.limit}: ${t.measured}`);
process.exit(ok ? 0 : 1);
