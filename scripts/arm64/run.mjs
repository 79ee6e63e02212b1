#!/usr/bin/env node
/**
 * npm run test:arm64: an emulated arm64 machine (qemu-system-aarch64 -M virt
 * -cpu max, TCG) built only from Debian's and npm's packages, booted to run a
 * test script with the project inside it.
 *
 *   node scripts/arm64/run.mjs [options] [--cmd 'SHELL COMMAND']...
 *     --script FILE    guest script, sourced by sh after scripts/arm64/guest/lib.sh
 *                      (default test/arm64/smoke.sh; with --cmd only: none)
 *     --cmd CMD        one more check: CMD run by the guest script's shell (in a
 *                      subshell, with the lib.sh helpers), passing on exit 0
 *     --kernel K       cloud (default, 4K pages) or 16k
 *     --launcher       cross-build the aarch64 launcher (build-native --target
 *                      aarch64) into the guest's /cx/bin/cached-exec; a build
 *                      failure is a failed run
 *     --timeout SEC    the whole boot-to-poweroff (default 900)
 *     --mem MB --smp N --cpu C   qemu's (default 2048, 2, max)
 *     --verbose        echo the guest console
 *
 * The guest (kernel Image, a small initramfs, the system's ext4 disk) is cached in
 * ${XDG_CACHE_HOME:-~/.cache}/cached-exec-arm64 (or $CX_ARM64_CACHE) under keys
 * of its inputs; each run gets a second disk with the project tree (deleted
 * after the run); runs/<time>/ keeps each run's console.log, summary.json and
 * exported files.
 * Prints a summary and "N passed, N failed"; exits 1 on any failed check, a
 * guest that did not finish, or a timeout.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as apt from './lib/apt.mjs';
import { buildBenchHelpers, buildProbes } from './lib/cross.mjs';
import { assembleBase, assembleTree, KERNELS } from './lib/guest.mjs';
import { boot } from './lib/qemu.mjs';

const scriptDir = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(scriptDir, '..', '..');

function parseArgs(argv) {
  const o = { script: null, cmds: [], kernel: 'cloud', launcher: false, timeout: 900, mem: 2048, smp: 2, cpu: 'max', verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i], v = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--script') o.script = path.resolve(v());
    else if (a === '--cmd') o.cmds.push(v());
    else if (a === '--kernel') o.kernel = v();
    else if (a === '--launcher') o.launcher = true;
    else if (a === '--timeout') o.timeout = Number(v());
    else if (a === '--mem') o.mem = Number(v());
    else if (a === '--smp') o.smp = Number(v());
    else if (a === '--cpu') o.cpu = v();
    else if (a === '--verbose' || a === '-v') o.verbose = true;
    else throw new Error(`unknown option ${a} (see the comment at the top of scripts/arm64/run.mjs)`);
  }
  if (!KERNELS[o.kernel]) throw new Error(`--kernel: one of ${Object.keys(KERNELS).join(', ')}`);
  if (!o.script && !o.cmds.length) o.script = path.join(root, 'test', 'arm64', 'smoke.sh');
  return o;
}

function shq(s) {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** /cx-run/run.sh: the helpers, facts the checks compare with, the script, the --cmd checks. */
function runScript(o, manifest) {
  const lines = [
    '#!/bin/sh',
    '. /usr/lib/cx-arm64/lib.sh',
    `CX_EXPECT_NODE=${shq(`v${manifest.node}`)}`,
    `CX_EXPECT_PAGESIZE=${Number.parseInt(manifest.pageSize, 10) * 1024}`,
    `CX_KERNEL=${shq(manifest.kernel)}`,
    'CX_FAILED=0',
  ];
  if (o.script) lines.push(`. ${shq(`/cx/${path.relative(root, o.script)}`)}`);
  // In a subshell of the script's shell, so the lib.sh helpers (cx_export...) work in it.
  o.cmds.forEach((c, i) => lines.push(`cx_cmd_${i + 1}() ( eval ${shq(c)} )`,
    `cx_check cmd-${i + 1} cx_cmd_${i + 1} || CX_FAILED=$((CX_FAILED + 1))`));
  lines.push('exit $CX_FAILED', '');
  return lines.join('\n');
}

function pruneRuns(dir, keep) {
  if (!fs.existsSync(dir)) return;
  const runs = fs.readdirSync(dir).sort();
  for (const r of runs.slice(0, Math.max(0, runs.length - keep))) fs.rmSync(path.join(dir, r), { recursive: true, force: true });
}

/**
 * The cache must not grow without bound (a guest is ~240 MiB): keeps the newest
 * `keep` entries of a directory per prefix (guest/cloud-*, guest/16k-*, modules/*)
 * and removes what killed runs left (staging dirs, temp files) after an hour.
 */
function pruneCache(cache) {
  const byAge = (dir) => (fs.existsSync(dir) ? fs.readdirSync(dir) : [])
    .map((f) => ({ f, p: path.join(dir, f), t: fs.statSync(path.join(dir, f)).mtimeMs })).sort((a, b) => b.t - a.t);
  const hourAgo = Date.now() - 3600_000;
  for (const dir of [cache, path.join(cache, 'debs'), path.join(cache, 'npm'), path.join(cache, 'probes')]) {
    for (const e of byAge(dir)) {
      if (/^\.(stage|dl|pack)-|\.tmp$/.test(e.f) && e.t < hourAgo) fs.rmSync(e.p, { recursive: true, force: true });
    }
  }
  for (const kernel of Object.keys(KERNELS)) {
    for (const e of byAge(path.join(cache, 'guest')).filter((x) => x.f.startsWith(`${kernel}-`)).slice(2)) fs.rmSync(e.p, { recursive: true, force: true });
  }
  fs.rmSync(path.join(cache, 'modules'), { recursive: true, force: true }); // node_modules archives of the initramfs-only guest
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.script && !o.script.startsWith(root + path.sep)) throw new Error('--script must be inside the project tree (it reaches the guest as /cx/...)');
  const cache = process.env.CX_ARM64_CACHE ||
    path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'cached-exec-arm64');
  const log = (m) => console.log(`arm64: ${m}`);
  const ctx = { root, scriptDir, cache, kernel: o.kernel, log };
  fs.mkdirSync(cache, { recursive: true });
  const t0 = Date.now();

  apt.ensureHostPackages(['qemu-system-arm', 'gcc-aarch64-linux-gnu', 'libc6-dev-arm64-cross', 'e2fsprogs', 'xz-utils'], log);
  apt.ensureForeignArch(log);
  const base = assembleBase(ctx);
  const probes = buildProbes(ctx);
  const bench = buildBenchHelpers(ctx);
  let launcher = null;
  if (o.launcher) {
    log('cross-building the aarch64 launcher');
    execFileSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs'), '--target', 'aarch64', '--quiet'], { stdio: 'inherit' });
    launcher = path.join(root, 'build', 'aarch64', 'cached-exec');
  }
  const runs = path.join(cache, 'runs');
  pruneRuns(runs, 9);
  const now = new Date();
  fs.utimesSync(base.dir, now, now); // in use: the newest, whatever its age
  pruneCache(cache);
  const runDir = path.join(runs, new Date().toISOString().replace(/[:.]/g, '-'));
  fs.mkdirSync(runDir, { recursive: true });
  const tree = assembleTree(ctx, path.join(runDir, 'tree.ext4'), { runScript: runScript(o, base), launcher, probes, bench });
  const prepMs = Date.now() - t0;
  log(`booting (${o.kernel} kernel ${base.kernelVersion}, -smp ${o.smp} -m ${o.mem}; arm64 npm packages ${tree.natives.join(', ')}); console: ${runDir}/console.log`);

  const res = await boot({
    qemu: 'qemu-system-aarch64', image: path.join(base.dir, 'Image'), initrd: path.join(base.dir, 'initramfs.cpio'),
    disks: { cxroot: path.join(base.dir, 'root.ext4'), cxtree: tree.image }, mem: o.mem, smp: o.smp, cpu: o.cpu,
  }, runDir, o.timeout * 1000, (l) => {
    if (o.verbose) console.log(`  guest| ${l}`);
    else if (/^@@CX (BEGIN|END)/.test(l)) process.stdout.write('.');
  });
  fs.rmSync(tree.image, { force: true }); // ~250 MiB; console.log and summary.json stay
  if (!o.verbose) process.stdout.write('\n');

  // ---- summary
  const pass = res.checks.filter((c) => c.rc === 0), fail = res.checks.filter((c) => c.rc !== 0);
  console.log(`\n== arm64 guest: ${base.kernel} ${base.kernelVersion} (${base.pageSize} pages), node ${base.node}, qemu -cpu ${o.cpu} -smp ${o.smp}`);
  console.log(`prepare ${(prepMs / 1000).toFixed(1)} s, boot to init ${res.bootMs == null ? '-' : `${(res.bootMs / 1000).toFixed(1)} s`} (guest uptime ${res.guestBootS ?? '-'} s), total ${(res.totalMs / 1000).toFixed(1)} s, qemu ${res.exit}`);
  for (const c of res.checks) {
    const status = c.rc === 0 ? 'ok  ' : c.rc == null ? 'HUNG' : `FAIL(${c.rc})`;
    const first = c.output.find((l) => l.trim()) ?? '';
    console.log(`  ${status.padEnd(8)} ${String(c.ms ?? '-').padStart(7)} ms  ${c.name.padEnd(22)} ${first.slice(0, 90)}`);
    if (c.rc !== 0) for (const l of c.output.slice(-25)) console.log(`             | ${l}`);
  }
  if (res.notes.length) {
    console.log('notes:');
    for (const [k, v] of res.notes) console.log(`  ${k}: ${v}`);
  }
  if (res.files.length) console.log(`files: ${res.files.join(' ')}`);
  const problems = [];
  if (res.timedOut) problems.push(`timed out after ${o.timeout} s${res.checks.at(-1)?.rc == null && res.checks.length ? ` in ${res.checks.at(-1).name}` : ''}`);
  if (!res.done) problems.push('the guest did not reach the end of its script (see console.log)');
  if (res.done && res.doneRc !== 0 && !fail.length) problems.push(`guest script exited ${res.doneRc}`);
  if (!res.checks.length) problems.push('no check ran');
  for (const p of problems) console.log(`PROBLEM: ${p}`);
  fs.writeFileSync(path.join(runDir, 'summary.json'), JSON.stringify({ options: o, base, prepMs, ...res }, null, 1));
  console.log(`${pass.length} passed, ${fail.length + (problems.length ? 1 : 0)} failed`);
  return fail.length || problems.length ? 1 : 0;
}

main().then((code) => process.exit(code), (e) => {
  console.error(`arm64: ${e.message}`);
  process.exit(1);
});
