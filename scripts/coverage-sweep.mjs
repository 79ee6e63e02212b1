#!/usr/bin/env node
/**
 * Coverage sweep (issue 12): over every dynamically linked ELF program in the
 * PATH directories, the share that warms (with refusal reasons grouped), and of
 * those, the share that restores when run from another directory with an
 * unrelated variable added, each restored run compared with a cold run of the
 * same invocation (stdout, stderr, exit status). Not part of `npm test`.
 *
 *   npm run coverage-sweep -- [--limit N] [--only a,b,...] [--as nobody|root]
 *        [--timeout S] [--spot-checks N] [--quick] [--path DIRS] [--out DIR] [--keep]
 *        [--update-committed]
 *
 *   --limit N          the first N candidates (in PATH order) only
 *   --only LIST        these program names only (comma-separated)
 *   --as USER          nobody (default: the launcher copy gets the file capability
 *                      with --install-capability, as an unprivileged user would set it
 *                      up) or root
 *   --timeout S        seconds per run (default 5)
 *   --spot-checks N    restored runs re-run under `strace -f -e trace=execve` (default 8)
 *   --quick            compare `--version` only (default: `--version` and `--help`)
 *   --path DIRS        the directories to sweep, in PATH order (default: $PATH)
 *   --out DIR          where to write coverage-sweep.{json,md} (default build/coverage-sweep/)
 *   --update-committed write them to benchmarks/results/ instead
 *   --keep             keep the work directory (the cache, the strace logs)
 *
 * Safety: programs run with `--version` and `--help` only, stdin /dev/null, no
 * controlling terminal (own session), an empty scratch cwd and HOME, as nobody
 * (default), in new network, IPC and UTS namespaces (`unshare --net --ipc --uts`: no
 * network, the host name cannot change), killed with their process group after the
 * timeout or past 1 MiB of output. Programs on the denylist (below: what could change
 * the system whatever its arguments) are never run: they are warmed (a snapshot runs
 * only the loader and library constructors, stopped at the entry point, and refuses
 * any write before it) and restored dry (`--internal-restore-dry`: the whole restore,
 * then exit before the jump) under strace, which fails every execve after the
 * launcher's own, so not even a cold fallback can start them.
 *
 * The launcher's own records (stats/runs.log, one record per run with its pid)
 * say whether a run restored; a sample is proven from outside with strace: a
 * restored run execs only the launcher, a cold one execs the program too.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Buffer } from 'node:buffer';
import { setTimeout, clearTimeout } from 'node:timers';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

// ---------------------------------------------------------------- options
const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
};
const limit = Number(opt('--limit', '0')) || Infinity;
const only = opt('--only', '') ? new Set(opt('--only', '').split(',')) : null;
const who = opt('--as', 'nobody');
const timeoutMs = Number(opt('--timeout', '5')) * 1000;
const spotChecks = Number(opt('--spot-checks', '8'));
const keep = argv.includes('--keep');
const updateCommitted = argv.includes('--update-committed');
const searchPath = opt('--path', process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin');
if (who !== 'nobody' && who !== 'root') fail('--as is nobody or root');
if (process.getuid() !== 0) fail('run as root (it runs the programs as nobody, in their own namespaces)');
for (const f of ['bin/cached-exec', 'dist/cli/main.js', 'dist/cache/stats.js']) {
  if (!fs.existsSync(path.join(root, f))) fail('build first (npm run build)');
}
const { decodeRunRecords } = await import(path.join(root, 'dist', 'cache', 'stats.js'));
const OUTPUT_CAP = 1 << 20;
/** The invocations compared, cold against restored (`--quick`: the first only). */
const INVOCATIONS = argv.includes('--quick') ? [['--version']] : [['--version'], ['--help']];

/**
 * Never run, whatever the arguments: what could change the system or others' files
 * (power, disks and file systems, file removal and copying, processes, packages and
 * installers, accounts, services, mounts, the clock, the console, kernel modules,
 * network configuration and network clients, logs, daemons). Matched against the name
 * typed and the file's real name. The namespaces and nobody are a second line, not the
 * first. curl, wget and ssh stay in (the issue names them): `--version`/`-V`, no network.
 */
const DENY = [
  /^(reboot|shutdown|halt|poweroff|telinit|init|runlevel|systemctl|systemd.*|service|invoke-rc\.d|update-rc\.d|start-stop-daemon|needrestart)$/,
  /^(mkfs.*|mke2fs|mkswap|swapon|swapoff|swaplabel|fdisk|sfdisk|cfdisk|gdisk|sgdisk|parted|partprobe|partx|addpart|delpart|resizepart|wipefs|blkdiscard|blkzone|badblocks|e2fsck|e4crypt|fsck.*|tune2fs|resize2fs|debugfs|e2label|e2image|e2undo|dumpe2fs|mkdosfs|hdparm|losetup|dmsetup|cryptsetup|mdadm|lvm.*|fstrim|zramctl|blockdev|mount|umount|fsfreeze|chcpu|ctrlaltdel|wdctl|rtcwake|hwclock|ldattach|mkhomedir_helper)$/,
  /^(dd|rm|rmdir|shred|unlink|truncate|fallocate|mv|cp|ln|install|chmod|chown|chgrp|chattr|setfacl|touch|mknod|mkfifo|mkdir|rsync|sync|tee|sponge|patch|split|csplit|ar|tar|cpio|gzip|gunzip|bzip2|xz|zstd|unzip|zip)$/,
  /^(kill|killall|killall5|pkill|skill|snice|renice|pkexec|su|sudo|runuser|nsenter|unshare|setpriv|chroot|switch_root|pivot_root|capsh|setcap|prlimit|ipcrm|ipcmk)$/,
  /^(apt.*|dpkg.*|debconf.*|update-.*|ucf|ucfr|pip.*|npm|npx|corepack|cargo.*|rustup|pyenv.*|gem|bundle.*|ldconfig.*|depmod|modprobe|insmod|rmmod|kmod|lsmod|sysctl|install-info|add-shell|remove-shell|pam-auth-update|locale-gen|dpkg-reconfigure)$/,
  /^(passwd|chpasswd|chsh|chfn|chage|gpasswd|newgrp|sg|user(add|del|mod)|group(add|del|mod|mems)|adduser|deluser|addgroup|delgroup|vipw|vigr|pwck|grpck|pwconv|pwunconv|grpconv|grpunconv|newusers|cpgr|cppw|expiry|faillog|lastlog|login|nologin|agetty|getty|sulogin|chgpasswd|shadowconfig)$/,
  /^(date|timedatectl|setterm|chvt|openvt|deallocvt|setfont|loadkeys|kbd_mode|wall|write|mesg|logger|logsave|ip|ifconfig|route|arp|iptables.*|ip6tables.*|nft|ebtables.*|arptables.*|xtables.*|tc|bridge|ethtool|dhclient|ss|nstat|rtmon|rtacct|ctstat|lnstat|rtstat|rdma|devlink|dcb|vdpa|tipc|genl|ifstat|routel)$/,
  /^(ping.*|nc|ncat|netcat|nc\..*|telnet|ftp|ssh-.*|scp|sftp|nmap|socat|tcpdump|arping|tracepath|traceroute.*|dig|nslookup|host|whois|mail|sendmail|git-.*-daemon|ssh-agent|gpg-agent|dirmngr.*|dbus-daemon|dbus-launch|pulseaudio|Xvfb|sshd)$/,
];

function denied(name, real) {
  return DENY.some((re) => re.test(name) || re.test(path.basename(real)));
}

// ---------------------------------------------------------------- candidates
function elfKind(file) {
  const fd = fs.openSync(file, 'r');
  try {
    const h = Buffer.alloc(64);
    if (fs.readSync(fd, h, 0, 64, 0) < 64 || h.toString('latin1', 0, 4) !== '\x7fELF') return 'non-elf';
    if (h[4] !== 2 || h[5] !== 1 || h.readUInt16LE(18) !== 62) return 'foreign';
    const phoff = Number(h.readBigUInt64LE(32));
    const phentsize = h.readUInt16LE(54);
    const phnum = h.readUInt16LE(56);
    const ph = Buffer.alloc(phentsize * phnum);
    fs.readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) {
      const e = ph.subarray(i * phentsize);
      if (e.readUInt32LE(0) === 3 /* PT_INTERP */) {
        const off = Number(e.readBigUInt64LE(8));
        const len = Number(e.readBigUInt64LE(32));
        const b = Buffer.alloc(Math.min(len, 256));
        fs.readSync(fd, b, 0, b.length, off);
        return b.toString('latin1').replace(/\0.*$/s, '').includes('musl') ? 'dynamic-musl' : 'dynamic';
      }
    }
    return 'static';
  } finally {
    fs.closeSync(fd);
  }
}

/** Every directory above `file` lets others search it (nobody reaches the file by this path). */
function othersReach(file) {
  for (let d = path.dirname(file); ; d = path.dirname(d)) {
    try {
      if (!(fs.statSync(d).mode & 0o001)) return false;
    } catch {
      return false;
    }
    if (d === '/') return true;
  }
}

function candidates() {
  const seenReal = new Set();
  const seenName = new Set();
  const out = [];
  const skipped = {};
  const skip = (why, name) => (skipped[why] ??= []).push(name);
  const dirsSeen = new Set();
  for (const dir of searchPath.split(':')) {
    if (!dir.startsWith('/')) continue;
    let realDir;
    try { realDir = fs.realpathSync(dir); } catch { continue; }
    if (dirsSeen.has(realDir)) continue;
    dirsSeen.add(realDir);
    let names;
    try { names = fs.readdirSync(dir).sort(); } catch { continue; }
    for (const name of names) {
      const file = path.join(dir, name);
      let st, real;
      try { st = fs.statSync(file); real = fs.realpathSync(file); } catch { continue; }
      if (!st.isFile() || !(st.mode & 0o111)) continue;
      if (seenName.has(name)) continue; // shadowed: `name` runs an earlier one
      seenName.add(name);
      if (only && !only.has(name)) continue;
      if (seenReal.has(real)) { skip('duplicate (same file as an earlier name)', name); continue; }
      seenReal.add(real);
      if (st.mode & 0o6000) { skip('setuid/setgid', name); continue; }
      let kind;
      try { kind = elfKind(file); } catch { skip('unreadable', name); continue; }
      if (kind === 'non-elf') { skip('not ELF (scripts)', name); continue; }
      if (kind === 'foreign') { skip('foreign ELF', name); continue; }
      if (kind === 'static') { skip('static ELF', name); continue; }
      if (who === 'nobody' && !(st.mode & 0o001 && othersReach(file) && othersReach(real))) { skip('not reachable or executable by nobody', name); continue; }
      out.push({ name, file, real, musl: kind === 'dynamic-musl', denied: denied(name, real) });
    }
  }
  return { list: out.slice(0, limit), skipped, dirs: [...dirsSeen] };
}

// ---------------------------------------------------------------- setup
const t0 = Date.now();
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-sweep-'));
fs.chmodSync(work, 0o755);
const pkg = path.join(work, 'pkg');
fs.mkdirSync(path.join(pkg, 'bin'), { recursive: true, mode: 0o755 });
const launcher = path.join(pkg, 'bin', 'cached-exec');
fs.copyFileSync(path.join(root, 'bin', 'cached-exec'), launcher);
fs.chmodSync(launcher, 0o755);
fs.symlinkSync('cached-exec', path.join(pkg, 'bin', 'cached-exec-selfpath'));
for (const n of ['dist', 'shell']) fs.cpSync(path.join(root, n), path.join(pkg, n), { recursive: true });
fs.copyFileSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
fs.symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'));
const uid = who === 'nobody' ? 65534 : 0;
const userDir = (n) => {
  const d = path.join(work, n);
  fs.mkdirSync(d, { mode: 0o700 });
  fs.chownSync(d, uid, uid);
  return d;
};
const cache = userDir('cache');
const home = userDir('home');
const warmCwd = userDir('warm-cwd');
const elsewhere = userDir('elsewhere');
const baseEnv = {
  PATH: searchPath, HOME: home, USER: who, LOGNAME: who, LANG: 'C.UTF-8', TERM: 'dumb',
  CACHED_EXEC_DIR: cache, CACHED_EXEC_NO_WARM: '1',
};
const warmEnv = { ...baseEnv, PWD: warmCwd };
const unrelated = `UNRELATED_${process.pid}_${Math.floor(Math.random() * 1e6)}`;
const runEnv = { ...baseEnv, PWD: elsewhere, [unrelated]: 'x' };

// Absolute paths: the strace check below counts execve calls, and a PATH search would add failed ones.
const asUser = who === 'nobody' ? ['/usr/bin/setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--'] : [];
const wrap = (cmd) => ['/usr/bin/unshare', '--net', '--ipc', '--uts', '--', ...asUser, ...cmd];

if (who === 'nobody') {
  // What an unprivileged user's setup would be: root gave the launcher the capability that
  // lets it set /proc/self/exe (else images of programs that read it run cold: FAIL_EXE).
  execFileSync(launcher, ['--install-capability'], { env: { ...baseEnv, CACHED_EXEC_DIR: path.join(work, 'root-cache') }, stdio: 'ignore' });
}

const { list: programs, skipped, dirs } = candidates();
log(`${programs.length} candidates in ${dirs.join(':')} (as ${who}); work dir ${work}`);

// ---------------------------------------------------------------- warm
function warmBatch(names) {
  const [f, ...a] = wrap([launcher, '--warm', '--json', ...names]);
  const r = spawnSync(f, a, { env: warmEnv, cwd: warmCwd, encoding: 'utf8', timeout: 60_000 + 15_000 * names.length, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
  try {
    return { results: JSON.parse(r.stdout).results };
  } catch {
    return { error: r.error ? String(r.error.code ?? r.error) : `exit ${r.status} signal ${r.signal}: ${r.stderr.trim().split('\n').slice(-1)[0] ?? ''}` };
  }
}

const tWarm = Date.now();
const warm = new Map(); // name -> {ok, reason, detail, ms}
const BATCH = 20;
for (let i = 0; i < programs.length; i += BATCH) {
  const names = programs.slice(i, i + BATCH).map((p) => p.name);
  let r = warmBatch(names);
  if (r.results) {
    for (const x of r.results) warm.set(x.program, x.ok ? { ok: true, ms: x.ms, notes: x.notes } : { ok: false, reason: x.reason, detail: x.detail, ms: x.ms });
  } else {
    for (const n of names) { // one by one: which one broke the batch?
      r = warmBatch([n]);
      const x = r.results?.[0];
      if (x) warm.set(n, x.ok ? { ok: true, ms: x.ms, notes: x.notes } : { ok: false, reason: x.reason, detail: x.detail, ms: x.ms });
      else warm.set(n, { ok: false, reason: 'warm-failed', detail: r.error });
    }
  }
  log(`warm: ${Math.min(i + BATCH, programs.length)}/${programs.length}, ${[...warm.values()].filter((w) => w.ok).length} warmed`);
}
const warmSecs = (Date.now() - tWarm) / 1000;

// ---------------------------------------------------------------- run
/** Runs `cmd` wrapped, from `elsewhere`, in its own session; resolves with its output and pid. */
function run(cmd, env) {
  const [f, ...a] = wrap(cmd);
  return new Promise((resolve) => {
    const child = spawn(f, a, { env, cwd: elsewhere, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const out = [];
    const err = [];
    let size = 0;
    let killed = null;
    const kill = (why) => {
      if (killed) return;
      killed = why;
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
    };
    const timer = setTimeout(() => kill('timeout'), timeoutMs);
    const take = (arr) => (c) => {
      size += c.length;
      if (size > OUTPUT_CAP) kill('output-cap');
      else arr.push(c);
    };
    child.stdout.on('data', take(out));
    child.stderr.on('data', take(err));
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* no group left */ }
      resolve({ pid: child.pid, status, signal, killed, stdout: Buffer.concat(out), stderr: Buffer.concat(err) });
    });
  });
}

let runsLogOffset = 0;
const outcomeByPid = new Map();
function readRunsLog() {
  const file = path.join(cache, 'stats', 'runs.log');
  if (!fs.existsSync(file)) return;
  const buf = fs.readFileSync(file);
  const { records } = decodeRunRecords(buf.subarray(runsLogOffset - (runsLogOffset % 32)));
  runsLogOffset = buf.length - (buf.length % 32);
  for (const r of records) outcomeByPid.set(r.pid, r.outcome);
}
// Start past whatever the warm phase left (nothing: --warm runs are no launcher runs).
readRunsLog();

const same = (a, b) => a.status === b.status && a.signal === b.signal && a.stdout.equals(b.stdout) && a.stderr.equals(b.stderr);
const show = (r) => ({
  status: r.status, signal: r.signal, killed: r.killed,
  stdout: r.stdout.toString('utf8').slice(0, 400), stderr: r.stderr.toString('utf8').slice(0, 400),
});

/** One invocation, cold then through the launcher, compared. */
async function compareRun(p, args) {
  const cmd = [p.name, ...args];
  const cold = await run(cmd, runEnv);
  const hot = await run([launcher, ...cmd], runEnv);
  readRunsLog();
  const res = { args: args.join(' '), outcome: outcomeByPid.get(hot.pid) ?? 'NO-RECORD', verdict: 'same' };
  if (cold.killed || hot.killed) {
    res.verdict = cold.killed && hot.killed ? 'unjudged (both killed)' : 'killed-one';
    Object.assign(res, { cold: show(cold), restored: show(hot) });
  } else if (!same(cold, hot)) {
    // Is the program itself nondeterministic (a time, a pid, a random name, the order in
    // which its children print: groff)? Up to 5 more cold runs: one that differs from the
    // first, or one that equals the restored run, says so.
    res.verdict = 'MISMATCH';
    Object.assign(res, { cold: show(cold), restored: show(hot) });
    for (let k = 0; k < 5 && res.verdict === 'MISMATCH'; k++) {
      const again = await run(cmd, runEnv);
      if (!again.killed && (!same(cold, again) || same(again, hot))) {
        res.verdict = 'nondeterministic';
        res.coldAgain = show(again);
      }
    }
  }
  return res;
}

/**
 * A denylisted program is never run: `--internal-restore-dry` does the whole restore
 * and exits before the jump, and strace makes every execve after the launcher's own
 * fail (the cold exec a failed restore would do), so the program cannot start even
 * then. Restored = the dry run's report line and no execve attempted after it.
 */
function dryRestore(p, cacheDir = cache) {
  const traceFile = path.join(work, `strace-dry-${p.name}`);
  const cmd = wrap([launcher, '--internal-restore-dry', p.name, '--version']);
  // The wrappers and the launcher exec in turn, then a cold exec would follow. strace does not
  // count its own start-up execve (the first), so the launcher's is number `wrappers` and
  // the cold exec's `wrappers + 1`; the self-test below proves the count.
  const wrappers = cmd.slice(0, cmd.indexOf(launcher)).filter((c) => c.startsWith('/usr/bin/')).length;
  const r = spawnSync('strace', ['-f', '-qq', '-e', 'trace=execve', '-e', `inject=execve:error=EPERM:when=${wrappers + 1}+`, '-o', traceFile, ...cmd],
    { env: { ...runEnv, CACHED_EXEC_DIR: cacheDir }, cwd: elsewhere, encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
  const execs = fs.readFileSync(traceFile, 'utf8').split('\n').filter((l) => l.includes('execve('));
  // The launcher reports on stderr.
  const restored = r.status === 0 && /^restore_ns=\d+ /.test(r.stderr) && execs.length === wrappers + 1;
  const res = { args: '(dry restore, not run)', outcome: restored ? 'HIT' : 'DRY-NOT-RESTORED', verdict: 'not run', execveAfterLauncher: execs.length - wrappers - 1 };
  if (!restored) Object.assign(res, { status: r.status, signal: r.signal, stdout: r.stdout?.slice(0, 400), stderr: r.stderr?.slice(0, 400), execs });
  return res;
}

/** A dry run with no image must not run the program: its cold exec fails, injected. */
function dryRestoreSelfTest() {
  const empty = userDir('empty-cache');
  const r = dryRestore({ name: 'echo' }, empty);
  const injected = r.execs?.length === 4 || (r.execs?.length === 3 && who === 'root');
  if (r.outcome === 'HIT' || r.stdout !== '' || !injected || !r.execs.at(-1).includes('(INJECTED)')) {
    if (!keep) fs.rmSync(work, { recursive: true, force: true });
    fail(`strace's execve injection did not stop a cold exec: ${JSON.stringify(r)}`);
  }
}

function explain(p) {
  const [f, ...a] = wrap([launcher, '--explain', p.name]);
  const e = spawnSync(f, a, { env: runEnv, cwd: elsewhere, encoding: 'utf8', timeout: 60_000 });
  return (e.stdout ?? '').split('\n').filter((l) => /^(next run|why|environment|refused)\s/.test(l)).map((l) => l.replace(/\s+/, ' '));
}

if (programs.some((p) => p.denied)) dryRestoreSelfTest();
async function runProgram(p) {
  const res = { name: p.name, file: p.file, denied: p.denied, runs: [] };
  if (p.denied) res.runs.push(dryRestore(p));
  else for (const args of INVOCATIONS) res.runs.push(await compareRun(p, args));
  res.outcome = res.runs.find((r) => r.outcome !== 'HIT')?.outcome ?? 'HIT';
  if (res.outcome !== 'HIT') res.explain = explain(p);
  return res;
}

const tRun = Date.now();
const results = [];
const warmed = programs.filter((p) => warm.get(p.name)?.ok);
for (const [i, p] of warmed.entries()) {
  let res = await runProgram(p);
  // The machine changed under the sweep: a file the image depends on (or the program: its
  // ctime is in the key) got a new identity since the warm (perf's build-id cache hard-links
  // libc and binaries, which changes their ctime). That run was cold and right; the sweep
  // asks about coverage, so it warms the program again, once, runs it again, and says so.
  if (res.outcome !== 'HIT' && res.explain.some((l) => /\b(FAIL_STALE_FILE|MISS)\b/.test(l))) {
    const stale = res.explain.find((l) => l.startsWith('why')) ?? res.outcome;
    const w = warmBatch([p.name]).results?.[0];
    if (w?.ok) {
      res = await runProgram(p);
      res.rewarmed = stale;
    }
  }
  results.push(res);
  if ((i + 1) % 50 === 0 || i + 1 === warmed.length) {
    const runs = results.flatMap((r) => r.runs);
    log(`run: ${i + 1}/${warmed.length}, ${results.filter((r) => r.outcome === 'HIT').length} restored, ${runs.filter((r) => r.verdict === 'MISMATCH').length} mismatches`);
  }
}
const runSecs = (Date.now() - tRun) / 1000;

// ---------------------------------------------------------------- proof from outside
/** strace -f -e trace=execve: a restored run execs the launcher and nothing after it. */
function straceCheck(p) {
  const traceFile = path.join(work, `strace-${p.name}`);
  const [f, ...a] = wrap([launcher, p.name, ...INVOCATIONS[0]]);
  spawnSync('strace', ['-f', '-qq', '-e', 'trace=execve', '-o', traceFile, f, ...a], { env: runEnv, cwd: elsewhere, stdio: 'ignore', timeout: 60_000 });
  const lines = fs.readFileSync(traceFile, 'utf8').split('\n').filter((l) => l.includes('execve(') && !l.includes('= -1'));
  const execs = lines.map((l) => /execve\("([^"]*)"/.exec(l)?.[1]).filter(Boolean);
  // The launcher's own record of this very run (its pid is the one that exec'd it).
  const pid = Number(/^(\d+)\s/.exec(lines.find((l) => l.includes(`execve("${launcher}"`)) ?? '')?.[1]);
  // A cold fallback execs the program's own file after the launcher; a restored program may
  // exec others itself (gcc-ranlib runs ranlib), never itself in this sample.
  const afterLauncher = execs.slice(execs.indexOf(launcher) + 1);
  const self = new Set([p.file, fs.realpathSync(p.file)]);
  readRunsLog();
  return { name: p.name, execs, restored: execs.includes(launcher) && !afterLauncher.some((e) => self.has(e)), launcherSaid: outcomeByPid.get(pid) ?? 'NO-RECORD' };
}
const ran = results.filter((r) => !r.denied);
const hits = ran.filter((r) => r.outcome === 'HIT');
const notHits = ran.filter((r) => r.outcome !== 'HIT');
const spot = [];
const sample = [...hits.filter((_, i) => i % Math.max(1, Math.floor(hits.length / spotChecks)) === 0).slice(0, spotChecks), ...notHits.slice(0, 2)];
for (const r of sample) {
  const c = straceCheck(r);
  spot.push({ ...c, agrees: c.restored === (c.launcherSaid === 'HIT') });
}

// ---------------------------------------------------------------- report
const group = (items, keyOf) => {
  const g = {};
  for (const it of items) (g[keyOf(it)] ??= []).push(it);
  return Object.fromEntries(Object.entries(g).sort((a, b) => b[1].length - a[1].length));
};
const refused = programs.filter((p) => warm.has(p.name) && !warm.get(p.name).ok).map((p) => ({ name: p.name, ...warm.get(p.name) }));
const refusals = Object.fromEntries(Object.entries(group(refused, (r) => r.reason)).map(([reason, rs]) => [reason, {
  count: rs.length,
  details: Object.fromEntries(Object.entries(group(rs, (r) => normalise(r.detail ?? ''))).map(([d, xs]) => [d, xs.map((x) => x.name)])),
}]));
const notRestored = results.filter((r) => r.outcome !== 'HIT');
const misses = Object.fromEntries(Object.entries(group(notRestored, (r) => r.outcome)).map(([o, rs]) => [o, {
  count: rs.length, programs: rs.map((r) => ({ name: r.name, explain: r.explain })),
}]));
const compared = ran.flatMap((r) => r.runs.map((x) => ({ name: r.name, ...x })));
const dry = results.filter((r) => r.denied);
const totalSecs = (Date.now() - t0) / 1000;
const pct = (a, b) => (b ? Math.round((1000 * a) / b) / 10 : 0);
const restoredAll = results.filter((r) => r.outcome === 'HIT').length;
const report = {
  machine: machineInfo(),
  options: {
    as: who, path: searchPath, invocations: INVOCATIONS.map((a) => a.join(' ')), timeoutMs,
    limit: Number.isFinite(limit) ? limit : null, only: only ? [...only] : null, unrelatedVariable: unrelated,
  },
  durationSeconds: { total: Math.round(totalSecs), warm: Math.round(warmSecs), run: Math.round(runSecs) },
  candidates: {
    dirs, programs: programs.length, denylisted: programs.filter((p) => p.denied).map((p) => p.name),
    skipped: Object.fromEntries(Object.entries(skipped).map(([k, v]) => [k, { count: v.length, names: v }])),
  },
  warm: {
    attempted: programs.length, warmed: warmed.length, share: pct(warmed.length, programs.length), refusals,
    // Images restored only where the launcher can set /proc/self/exe (root, or the file capability): cold (FAIL_EXE) for others.
    readsExe: warmed.filter((p) => warm.get(p.name).notes?.some((n) => n.includes('/proc/self/exe'))).map((p) => p.name),
  },
  restore: {
    warmed: warmed.length, restored: restoredAll, share: pct(restoredAll, warmed.length),
    run: { warmed: ran.length, restored: hits.length, share: pct(hits.length, ran.length) },
    dry: { warmed: dry.length, restored: dry.filter((r) => r.outcome === 'HIT').length, share: pct(dry.filter((r) => r.outcome === 'HIT').length, dry.length) },
    notRestored: misses,
  },
  compare: {
    runs: compared.length,
    same: compared.filter((r) => r.verdict === 'same').length,
    mismatches: compared.filter((r) => r.verdict === 'MISMATCH'),
    nondeterministic: compared.filter((r) => r.verdict === 'nondeterministic').map((r) => `${r.name} ${r.args}`),
    killed: compared.filter((r) => r.verdict.startsWith('unjudged') || r.verdict === 'killed-one')
      .map((r) => ({ name: `${r.name} ${r.args}`, verdict: r.verdict, cold: r.cold?.killed, restored: r.restored?.killed })),
  },
  spotChecks: spot,
  rewarmed: results.filter((r) => r.rewarmed).map((r) => ({ name: r.name, why: r.rewarmed, outcomeAfter: r.outcome })),
  programs: results.map((r) => ({ name: r.name, outcome: r.outcome, runs: r.outcome === 'HIT' ? r.runs.map((x) => `${x.args}: ${x.outcome}, ${x.verdict}`) : r.runs })),
};

const outDir = updateCommitted ? path.join(root, 'benchmarks', 'results') : path.resolve(opt('--out', path.join(root, 'build', 'coverage-sweep')));
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, 'coverage-sweep.json'), JSON.stringify(report, null, 2) + '\n');
fs.writeFileSync(path.join(outDir, 'coverage-sweep.md'), markdown(report));
log(`wrote ${path.join(outDir, 'coverage-sweep.{json,md}')}`);
process.stdout.write(markdown(report));
if (!keep) fs.rmSync(work, { recursive: true, force: true });
else log(`kept ${work}`);
process.exit(report.compare.mismatches.length || spot.some((x) => !x.agrees) ? 1 : 0);

// ---------------------------------------------------------------- helpers
function normalise(detail) {
  return detail.replace(/\/[^\s:,()]+/g, (p) => (p.includes('/lib') ? '<lib>' : p)).replace(/0x[0-9a-f]+/g, '0x…').replace(/\b\d{2,}\b/g, 'N');
}

function markdown(r) {
  const lines = [];
  const m = r.machine;
  const list = (names, n = 12) => `${names.slice(0, n).join(', ')}${names.length > n ? `, … (${names.length})` : ''}`;
  lines.push('# Coverage sweep', '');
  lines.push(`\`npm run coverage-sweep\` at commit ${m.commit} on ${m.date} (${m.cpu}, ${m.cores} cores; ${m.kernel}, glibc ${m.glibc}), as ${r.options.as}` +
    `${r.options.as === 'nobody' ? ' (launcher with `--install-capability`)' : ''}; ${r.durationSeconds.total} s (warm ${r.durationSeconds.warm} s, runs ${r.durationSeconds.run} s). ` +
    `Every dynamically linked ELF program on PATH (${r.candidates.dirs.join(':')}), deduplicated by real path; run from another directory with \`${r.options.unrelatedVariable.replace(/_\d+_\d+$/, '_…')}=x\` added.`, '');
  lines.push(`- **Warms**: ${r.warm.warmed} of ${r.warm.attempted} (${r.warm.share}%). ${r.warm.readsExe.length} of the images (${Math.round((100 * r.warm.readsExe.length) / (r.warm.warmed || 1))}%) ` +
    'read `/proc/self/exe` (their program or a library names it): they restore for root or with `--install-capability`, and run cold (`FAIL_EXE`) for other users without it.');
  lines.push(`- **Restores** from another directory with an unrelated variable: ${r.restore.restored} of ${r.restore.warmed} warmed (${r.restore.share}%): ` +
    `${r.restore.run.restored} of ${r.restore.run.warmed} run with ${r.options.invocations.map((i) => `\`${i}\``).join(' and ')}, ` +
    `${r.restore.dry.restored} of ${r.restore.dry.warmed} denylisted ones restored dry (never run: \`--internal-restore-dry\`, every later execve failed by strace).`);
  lines.push(`- **Restored vs cold** (stdout, stderr, exit status), ${r.compare.runs} runs: **${r.compare.mismatches.length} mismatches**; ${r.compare.same} identical, ` +
    `${r.compare.nondeterministic.length} nondeterministic (cold runs differ among themselves, or one equals the restored run: not judged), ${r.compare.killed.length} killed (timeout or output cap, not judged).`);
  if (r.rewarmed.length) {
    lines.push(`- **Went stale during the sweep** (a dependency or the program got a new identity between its warm and its run: cold and right, ` +
      `then warmed again once): ${r.rewarmed.length}, e.g. ${r.rewarmed.slice(0, 3).map((x) => `${x.name} (${x.why})`).join('; ')}.`);
  }
  lines.push(`- **Proof from outside** (\`strace -f -e trace=execve\`: a restore execs the launcher and not the program): ${r.spotChecks.filter((s) => s.agrees).length} of ${r.spotChecks.length} sampled runs agree with the launcher's records.`, '');
  if (r.compare.mismatches.length) {
    lines.push('## MISMATCHES (bugs)', '');
    for (const x of r.compare.mismatches) lines.push(`- \`${x.name} ${x.args}\` (${x.outcome}): cold ${JSON.stringify(x.cold)}, restored ${JSON.stringify(x.restored)}`);
    lines.push('');
  }
  lines.push('## Refused at warm time', '', '| reason | programs | details: programs |', '|---|---:|---|');
  for (const [reason, g] of Object.entries(r.warm.refusals)) {
    const d = Object.entries(g.details).map(([k, v]) => `${k}: ${list(v)}`).join('<br>');
    lines.push(`| ${reason} | ${g.count} | ${d.replace(/\|/g, '\\|')} |`);
  }
  lines.push('', '## Warmed but not restored', '');
  if (!Object.keys(r.restore.notRestored).length) lines.push('None.');
  else {
    lines.push('| outcome | programs | programs (why) |', '|---|---:|---|');
    for (const [o, g] of Object.entries(r.restore.notRestored)) {
      lines.push(`| ${o} | ${g.count} | ${g.programs.map((p) => `${p.name}${p.explain?.length ? ` (${p.explain.join('; ')})` : ''}`).join('<br>').replace(/\|/g, '\\|')} |`);
    }
  }
  lines.push('', '## Not swept', '');
  for (const [k, v] of Object.entries(r.candidates.skipped)) lines.push(`- ${k}: ${v.count}`);
  lines.push(`- denylisted (warmed and restored dry, never run): ${r.candidates.denylisted.length}`);
  if (r.compare.nondeterministic.length) lines.push('', `Nondeterministic (not judged): ${r.compare.nondeterministic.join(', ')}.`);
  if (r.compare.killed.length) lines.push('', `Killed (not judged; cold/restored): ${r.compare.killed.map((k) => `${k.name} (${k.cold ?? '-'}/${k.restored ?? '-'})`).join(', ')}.`);
  lines.push('');
  return lines.join('\n');
}

function machineInfo() {
  const first = (cmd, args) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: root });
    return r.status === 0 ? (r.stdout.split('\n')[0] ?? '').trim() : '';
  };
  const cpu = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? os.cpus()[0]?.model;
  const dirty = first('git', ['status', '--porcelain', '--untracked-files=no']) ? ' (with local changes)' : '';
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'), kernel: `Linux ${os.release()}`,
    glibc: process.report?.getReport()?.header?.glibcVersionRuntime ?? '', cpu, cores: os.cpus().length,
    commit: first('git', ['rev-parse', '--short', 'HEAD']) + dirty,
  };
}

function log(msg) {
  console.error(`coverage-sweep: ${msg}`);
}

function fail(msg) {
  console.error(`coverage-sweep: ${msg}`);
  process.exit(2);
}
