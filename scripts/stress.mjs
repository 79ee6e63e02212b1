#!/usr/bin/env node
/**
 * Stress run of the restore paths (issue 11, item 5): many post-link and
 * post-init restores in parallel loops, every output and exit status
 * checked, crashes counted (0 allowed). Not part of `npm test`.
 *
 *   npm run stress -- [--runs N] [--jobs J] [--user NAME] [--keep]
 *
 *   --runs N     restores per kind (post-link, post-init); default 100000
 *   --jobs J     parallel loops, split over the kinds; default 4 (two per core here)
 *   --user NAME  run everything (warming included) as that user, with a cache it
 *                owns: most users are not root (needs root to start)
 *   --keep       keep the cache directory (its stats/ and images) afterwards
 *
 * Every second run sets ADDR_NO_RANDOMIZE (as `setarch -R` does) before it
 * execs the launcher: the launcher's stack and vdso then sit where an image
 * taken without ASLR (every post-init image) wants its mappings, so the
 * collision and fallback paths run tens of thousands of times; the other runs
 * are ordinary ones. Post-link: `dash -c` and `bash -c` (images taken with
 * ASLR on); post-init: `--after-init bash -c` and, where /usr/bin/python3
 * exists, `--after-init python3 -c` (the python adapter: its stdio set-up
 * and fast exit). Each run must print "ok" and
 * exit 3, with nothing on stderr. The launcher's own statistics then say how
 * many runs restored and how many fell back cold, by reason. It runs a private
 * copy of the package, so the working tree may change meanwhile.
 */
import { execFileSync, spawn } from 'node:child_process';
import { setInterval, clearInterval } from 'node:timers';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const runs = arg('--runs', 100_000);
const jobs = Math.max(2, arg('--jobs', 4));
const keep = process.argv.includes('--keep');
const userIdx = process.argv.indexOf('--user');
const user = userIdx >= 0 ? process.argv[userIdx + 1] : undefined;
const ids = user ? { uid: Number(execFileSync('id', ['-u', user], { encoding: 'utf8' })), gid: Number(execFileSync('id', ['-g', user], { encoding: 'utf8' })) } : {};
const python = '/usr/bin/python3';
const hasPython = fs.existsSync(python);

if (!fs.existsSync(path.join(root, 'bin', 'cached-exec')) || !fs.existsSync(path.join(root, 'dist', 'cli', 'main.js'))) {
  console.error('stress: build first (npm run build)');
  process.exit(2);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-stress-'));
// A private copy of the package: a rebuild or a checkout in the working tree during the
// run (an hour) must not change the launcher or make the post-init image stale (its
// adapter in shell/ is a dependency).
const pkg = path.join(work, 'pkg');
fs.mkdirSync(path.join(pkg, 'bin'), { recursive: true });
fs.copyFileSync(path.join(root, 'bin', 'cached-exec'), path.join(pkg, 'bin', 'cached-exec'));
fs.chmodSync(path.join(pkg, 'bin', 'cached-exec'), 0o755);
for (const n of ['dist', 'shell']) fs.cpSync(path.join(root, n), path.join(pkg, n), { recursive: true });
for (const n of ['package.json', 'node_modules']) fs.symlinkSync(path.join(root, n), path.join(pkg, n));
const launcher = path.join(pkg, 'bin', 'cached-exec');
const cache = path.join(work, 'cache');
fs.mkdirSync(cache, { mode: 0o700 });
if (user) {
  // The user reads the package copy and owns its cache; the copy stays root's, as an install would.
  fs.chmodSync(work, 0o755);
  fs.chownSync(cache, ids.uid, ids.gid);
}
const runner = path.join(work, 'stress-runner');
execFileSync(process.env.CC || 'cc', ['-O2', '-Wall', '-o', runner, path.join(root, 'scripts', 'stress-runner.c')], { stdio: 'inherit' });

// One fixed environment: the key covers PATH, and a post-init key the whole environment.
const env = {
  PATH: '/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin',
  HOME: user ? cache : os.homedir(),
  LC_ALL: 'C',
  CACHED_EXEC_DIR: cache,
  CACHED_EXEC_NO_WARM: '1',
};
const cli = (args) => execFileSync(launcher, args, { env, encoding: 'utf8', ...ids });

console.log(`stress: cache ${cache}${user ? ` (as ${user})` : ''}; warming dash, bash, a post-init bash${hasPython ? ' and a post-init python3' : ''}`);
cli(['--warm', 'dash', 'bash']);
cli(['--warm', '--after-init', 'bash']);
if (hasPython) cli(['--warm', '--after-init', python]);
cli(['--zero-stats']);

const postInit = [['--after-init', 'bash', '-c', 'echo "$1"; exit 3', 'x', 'ok']];
// A few imports, output through sys.stdout and an exit status through SystemExit: the adapter's
// stdio set-up and its fast exit run every time.
if (hasPython) postInit.push(['--after-init', python, '-c', 'import sys, json, os; print(sys.argv[1]); sys.exit(3)', 'ok']);
const kinds = {
  'post-link': [['dash', '-c', 'echo "$1"; exit 3', 'x', 'ok'], ['bash', '-c', 'echo "$1"; exit 3', 'x', 'ok']],
  'post-init': postInit,
};

function loop(kind, cmd, n) {
  return new Promise((resolve, reject) => {
    const child = spawn(runner, [String(n), '2', '3', 'ok\n', '--', launcher, launcher, ...cmd], { env, stdio: ['ignore', 'pipe', 'inherit'], ...ids });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`stress-runner exited ${code}`));
      resolve({ kind, cmd: cmd.join(' '), ...JSON.parse(out) });
    });
  });
}

const segfaultsBefore = kernelSegfaults();
const t0 = Date.now();
// Each kind gets at least one loop per command, so every command runs.
const loops = [];
for (const [kind, cmds] of Object.entries(kinds)) {
  const perKind = Math.max(Math.floor(jobs / 2), cmds.length);
  for (let j = 0; j < perKind; j++) {
    const cmd = cmds[j % cmds.length];
    const n = Math.ceil(runs / perKind);
    loops.push(loop(kind, cmd, n));
  }
}
console.log(`stress: ${loops.length} loops, ${runs} runs per kind, every second run with ADDR_NO_RANDOMIZE`);
const ticker = setInterval(() => console.log(`stress: ${Math.round((Date.now() - t0) / 1000)} s`), 60_000);
const results = await Promise.all(loops);
clearInterval(ticker);
const secs = (Date.now() - t0) / 1000;

const stats = JSON.parse(cli(['--show-stats', '--json']));
const segfaults = kernelSegfaults() - segfaultsBefore;
const total = { runs: 0, ok: 0, crashes: 0, wrong_status: 0, wrong_output: 0 };
console.log('\nkind       runs     ok        crashes  wrong-status  wrong-output  no-ASLR  command');
for (const r of results) {
  for (const k of Object.keys(total)) total[k] += r[k];
  console.log(`${r.kind.padEnd(10)} ${String(r.runs).padEnd(8)} ${String(r.ok).padEnd(9)} ${String(r.crashes).padEnd(8)} ` +
    `${String(r.wrong_status).padEnd(13)} ${String(r.wrong_output).padEnd(13)} ${String(r.norand_runs).padEnd(8)} ${r.cmd}`);
  for (const e of r.examples) console.log(`  failure: ${JSON.stringify(e)}`);
}
const outcomes = Object.entries(stats.outcomes).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(', ');
console.log(`\n${total.runs} runs in ${secs.toFixed(0)} s (${(total.runs / secs).toFixed(0)}/s): ${total.ok} correct, ` +
  `${total.crashes} crashes, ${total.wrong_status} wrong exit status, ${total.wrong_output} wrong output`);
console.log(`launcher outcomes: ${outcomes}`);
if (segfaults >= 0) {
  console.log(`kernel log: ${segfaults} new segfault lines (the whole machine's: a test elsewhere that crashes on purpose counts too)`);
}
if (!keep) fs.rmSync(work, { recursive: true, force: true });
else console.log(`kept ${work}`);
process.exit(total.ok === total.runs ? 0 : 1);

/** "segfault at" lines in the kernel log (-1 when it cannot be read). */
function kernelSegfaults() {
  try {
    return execFileSync('dmesg', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n').filter((l) => l.includes('segfault at')).length;
  } catch {
    return -1;
  }
}
