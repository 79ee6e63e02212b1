/**
 * The trust boundary between users (issue 11, items 1 and 4), tested as a
 * real second user (`setpriv` to nobody, with a copy of the launcher and a
 * cache that user owns):
 *  - root's system layer must not hand root's state to another user: not
 *    what an init read from a root-only file, not the uid a library
 *    constructor saved, not the file itself (identity-bound images are
 *    0600); an image anyone could have taken is shared (0644) and restores;
 *  - a user removed from a group gets nothing back from an image taken while
 *    in it; a directory on the way to a dependency that stops being
 *    searchable makes the image stale.
 * Every case compares the run with a cold run of the same user.
 */
import { decodeRunRecords } from '../../src/cache/stats.js';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cc, haveCc, installedPrograms, observable, removeDir, run, tmpDir, type Env, type RunResult } from '../helpers/cx.js';
import { NOBODY, NOGROUP, canSwitchUser, ownedDir, ownedFile, runAs, userEnv, userPackage, type AsUser } from '../helpers/users.js';

const enabled = canSwitchUser() && installedPrograms(['bash', 'dash']).length === 2 && haveCc();
const work = tmpDir('cx-trust-users-');
const GROUP = 43210; // a group id no account uses: only setpriv --groups gives it

let pkg: { root: string; launcher: string };
let sysDir: string;
let home: string;

/** The one environment of root's warm and every user's run: a post-init key includes the environment. */
function env(cache: string, extra: Env = {}): Env {
  return userEnv(cache, home, { CACHED_EXEC_SYSTEM_DIR: sysDir, ...extra });
}

/**
 * Root's launcher: the same package copy the user runs (a post-init key names
 * the adapter by the package's path, so root's images and the user's runs
 * must come from one package).
 */
const asRoot = (args: string[], e: Env): Promise<RunResult> => run(pkg.launcher, args, { env: e, timeoutMs: 120_000 });
/** The user's copy of the launcher, run as that user. */
const asUser = (who: AsUser, args: string[], e: Env): Promise<RunResult> => runAs(who, pkg.launcher, args, { env: e, timeoutMs: 120_000 });
const cold = (who: AsUser, args: string[], e: Env): Promise<RunResult> => asUser(who, args, { ...e, CACHED_EXEC_DISABLE: '1' });
const text = (r: RunResult): string => `${r.stdout.toString()}${r.stderr.toString()}`;

function imageFor(args: string[], e: Env): string {
  // The system layer's key: uid 0, no groups (the C launcher computes it the same way: --explain --json says).
  // Asked as root, with root's own (empty) cache: admin commands refuse another user's cache directory.
  const rootCache = ownedDir(path.join(work, 'root-cache'), 0, 0);
  const r = JSON.parse(execFileSync(pkg.launcher, ['--explain', '--json', ...args], { env: { ...e, CACHED_EXEC_DIR: rootCache }, encoding: 'utf8' })) as {
    attempts: { layer: string; image: string }[];
  };
  return r.attempts.find((a) => a.layer === 'system')?.image ?? '';
}

beforeAll(() => {
  if (!enabled) return;
  fs.chmodSync(work, 0o755);
  pkg = userPackage(work);
  home = ownedDir(path.join(work, 'home'), NOBODY, NOGROUP, 0o755);
  sysDir = ownedDir(path.join(work, 'system'), 0, 0, 0o755);
});
afterAll(() => removeDir(work));

describe.runIf(enabled)('the system layer serves other users only what anyone could have taken', () => {
  let secretInit: string;
  let userCache: string;

  beforeAll(() => {
    const secrets = ownedDir(path.join(work, 'root-only'), 0, 0, 0o755);
    ownedFile(path.join(secrets, 'secret'), 'cx-root-secret-1234\n', 0, 0, 0o600);
    secretInit = ownedFile(path.join(work, 'secret-init.sh'), `read -r SECRET < ${secrets}/secret\n`, 0, 0, 0o644);
    fs.utimesSync(secretInit, new Date(Date.now() - 10_000), new Date(Date.now() - 10_000));
    userCache = ownedDir(path.join(work, 'nobody-cache'), NOBODY, NOGROUP);
  });

  it('a post-init image whose init read a root-only file (and bash its uid) is root\'s only: 0600, and nobody runs cold', async () => {
    const e = env(userCache);
    const w = await asRoot(['--warm', '--system', `--after-init=${secretInit}`, 'bash'], e);
    expect(w.status, text(w)).toBe(0);
    expect(text(w)).toMatch(/identity-bound/);
    const image = imageFor([`--after-init=${secretInit}`, 'bash'], e);
    expect(fs.statSync(image).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(image).includes('cx-root-secret-1234')).toBe(true); // it is there: only root may read it

    const probe = ['-c', 'echo "[$SECRET] EUID=$EUID UID=$UID"; id -u'];
    const restored = await asUser({}, [`--after-init=${secretInit}`, 'bash', ...probe], e);
    // Root's image is not nobody's to use: the run is nobody's own miss, which the warmer can queue and take.
    const runs = decodeRunRecords(fs.readFileSync(path.join(userCache, 'stats', 'runs.log'))).records;
    expect(runs.at(-1)?.outcome).toBe('MISS');
    const reference = await cold({}, [`--after-init=${secretInit}`, 'bash', ...probe], e);
    expect(observable(restored)).toEqual(observable(reference));
    expect(restored.stdout.toString()).toBe(`[] EUID=${NOBODY} UID=${NOBODY}\n${NOBODY}\n`);
    expect(restored.stderr.toString()).toMatch(/Permission denied/);
    // It was the system image the run looked at (and could not open).
    const looked = await asUser({}, ['--explain', `--after-init=${secretInit}`, 'bash'], e);
    expect(looked.stdout.toString()).toContain(`looked at   system ${image}: FAIL_IMAGE_IO`);
    expect(looked.stdout.toString()).toMatch(/EACCES \(root's own image: it depends on who took it, so it is 0600 and serves root only\)/);
    // The user cannot even open it (what grep -a found before).
    const grep = await runAs({}, '/bin/grep', ['-c', '-a', 'cx-root-secret', image], { env: e });
    expect(grep.status, text(grep)).toBe(2);
    expect(grep.stderr.toString()).toMatch(/Permission denied/);
    // Made readable by mistake, it is still refused: the launcher checks the flag, not only the mode.
    fs.chmodSync(image, 0o644);
    try {
      const again = await asUser({}, [`--after-init=${secretInit}`, 'bash', ...probe], e);
      expect(observable(again)).toEqual(observable(reference));
      const explain = await asUser({}, ['--explain', `--after-init=${secretInit}`, 'bash'], e);
      expect(explain.status).toBe(1);
      expect(explain.stdout.toString()).toMatch(/FAIL_IDENTITY: the image depends on uid 0's identity/);
    } finally {
      fs.chmodSync(image, 0o600);
    }
    // Root itself still restores it.
    const mine = await asRoot([`--after-init=${secretInit}`, 'bash', '-c', 'echo "[$SECRET]"; grep -c -F "$1" /proc/$$/maps', 'x', image], e);
    expect(mine.stdout.toString()).toMatch(/^\[cx-root-secret-1234\]\n[1-9]\d*\n$/);
  });

  it('a post-link image whose library constructor saved geteuid() is root\'s only; nobody gets its own uid', async () => {
    const dir = ownedDir(path.join(work, 'euid-prog'), 0, 0, 0o755);
    fs.writeFileSync(path.join(dir, 'lib.c'), '#include <unistd.h>\nunsigned saved_euid = 12345;\n' +
      '__attribute__((constructor)) static void init(void) { saved_euid = geteuid(); }\n');
    cc(['-shared', '-fPIC', '-o', path.join(dir, 'libsaveeuid.so'), path.join(dir, 'lib.c')]);
    fs.writeFileSync(path.join(dir, 'main.c'), '#include <stdio.h>\nextern unsigned saved_euid;\n' +
      'int main(void) { FILE *m = fopen("/proc/self/maps", "r"); char l[512]; int img = 0;\n' +
      '  while (m && fgets(l, sizeof l, m)) img += !!__builtin_strstr(l, ".img");\n' +
      '  printf("euid %u\\n", saved_euid); fprintf(stderr, "image mappings %d\\n", img); return 0; }\n');
    const prog = path.join(dir, 'euidprog');
    cc(['-o', prog, path.join(dir, 'main.c'), `-L${dir}`, '-lsaveeuid', `-Wl,-rpath,${dir}`]);
    fs.chmodSync(prog, 0o755);
    fs.chmodSync(path.join(dir, 'libsaveeuid.so'), 0o755);
    await new Promise((r) => setTimeout(r, 50)); // older than the snapshot's too-new margin
    const e = env(userCache);
    const w = await asRoot(['--warm', '--system', prog], e);
    expect(w.status, text(w)).toBe(0);
    expect(text(w)).toMatch(/identity-bound.*geteuid/);
    const image = imageFor([prog], e);
    expect(fs.statSync(image).mode & 0o777).toBe(0o600);

    const r = await asUser({}, [prog], e);
    expect(r.stdout.toString()).toBe(`euid ${NOBODY}\n`);
    expect(r.stderr.toString()).toBe('image mappings 0\n');
    const rootRun = await asRoot([prog], e);
    expect(rootRun.stdout.toString()).toBe('euid 0\n');
    expect(rootRun.stderr.toString()).not.toBe('image mappings 0\n'); // root's own restore
  });

  it('a constructor that read a file others cannot read makes the image root\'s only (no identity syscall needed)', async () => {
    const dir = ownedDir(path.join(work, 'readprog'), 0, 0, 0o755);
    ownedFile(path.join(dir, 'conf'), 'cx-private-conf\n', 0, 0, 0o600);
    fs.writeFileSync(path.join(dir, 'lib.c'), `#include <fcntl.h>\n#include <unistd.h>\nchar conf[64] = "none";\n` +
      `__attribute__((constructor)) static void init(void) { int fd = open("${dir}/conf", O_RDONLY);\n` +
      '  if (fd >= 0) { ssize_t n = read(fd, conf, sizeof conf - 1); conf[n > 0 ? n : 0] = 0; close(fd); } }\n');
    cc(['-shared', '-fPIC', '-o', path.join(dir, 'libreadconf.so'), path.join(dir, 'lib.c')]);
    fs.writeFileSync(path.join(dir, 'main.c'), '#include <stdio.h>\nextern char conf[64];\nint main(void) { printf("conf %s", conf); return 0; }\n');
    const prog = path.join(dir, 'readprog');
    cc(['-o', prog, path.join(dir, 'main.c'), `-L${dir}`, '-lreadconf', `-Wl,-rpath,${dir}`]);
    for (const f of [prog, path.join(dir, 'libreadconf.so')]) fs.chmodSync(f, 0o755);
    await new Promise((r) => setTimeout(r, 50));
    const e = env(userCache);
    const w = await asRoot(['--warm', '--system', prog], e);
    expect(w.status, text(w)).toBe(0);
    expect(text(w)).toMatch(/identity-bound.*conf.*not readable by others/);
    expect(fs.statSync(imageFor([prog], e)).mode & 0o777).toBe(0o600);
    const r = await asUser({}, [prog], e);
    expect(observable(r)).toEqual(observable(await cold({}, [prog], e)));
    expect(r.stdout.toString()).toBe('conf none');
  });

  it('an image anyone could have taken is shared: 0644, and another user restores it', async () => {
    const e = env(userCache);
    const w = await asRoot(['--warm', '--system', 'dash'], e);
    expect(w.status, text(w)).toBe(0);
    expect(text(w)).not.toMatch(/identity-bound/);
    const image = imageFor(['dash'], e);
    expect(fs.statSync(image).mode & 0o777).toBe(0o644);
    const r = await asUser({}, ['dash', '-c', 'grep -c -F "$1" /proc/$$/maps; id -u; true', 'x', image], e);
    expect(r.stdout.toString()).toMatch(new RegExp(`^[1-9]\\d*\\n${NOBODY}\\n$`));
  });

  it('--warm --system checks the system directory and images/ below it', async () => {
    const bad = ownedDir(path.join(work, 'system-nobody'), NOBODY, NOGROUP, 0o755);
    const r1 = await asRoot(['--warm', '--system', 'dash'], { ...env(userCache), CACHED_EXEC_SYSTEM_DIR: bad });
    expect(r1.status).not.toBe(0);
    expect(text(r1)).toMatch(/owned by uid 65534/);
    const planted = ownedDir(path.join(work, 'system-planted'), 0, 0, 0o755);
    ownedDir(path.join(planted, 'images'), NOBODY, NOGROUP, 0o777);
    const r2 = await asRoot(['--warm', '--system', 'dash'], { ...env(userCache), CACHED_EXEC_SYSTEM_DIR: planted });
    expect(r2.status).not.toBe(0);
    expect(text(r2)).toMatch(/images.*owned by uid 65534/);
    expect(fs.readdirSync(path.join(planted, 'images'))).toEqual([]);
  });
});

describe.runIf(enabled)('access is checked, not only identity', () => {
  it('a user removed from a group gets nothing an image read through that group', async () => {
    const dir = ownedDir(path.join(work, 'group-data'), 0, 0, 0o755);
    ownedFile(path.join(dir, 'shared'), 'cx-group-secret\n', 0, GROUP, 0o640);
    const init = ownedFile(path.join(work, 'group-init.sh'), `read -r G < ${dir}/shared\n`, 0, 0, 0o644);
    fs.utimesSync(init, new Date(Date.now() - 10_000), new Date(Date.now() - 10_000));
    const cache = ownedDir(path.join(work, 'group-cache'), NOBODY, NOGROUP);
    const e = env(cache, { CACHED_EXEC_SYSTEM_DIR: '' });
    const member: AsUser = { groups: [GROUP] };
    const w = await asUser(member, ['--warm', `--after-init=${init}`, 'bash'], e);
    expect(w.status, text(w)).toBe(0);
    const probe = [`--after-init=${init}`, 'bash', '-c', 'echo "[$G]"; grep -c -F "$1" /proc/$$/maps || true', 'x', cache];
    const inGroup = await asUser(member, probe, e);
    expect(inGroup.stdout.toString()).toMatch(/^\[cx-group-secret\]\n[1-9]\d*\n$/); // restored while a member

    const removed = await asUser({}, probe, e);
    const reference = await cold({}, probe, e);
    expect(observable(removed)).toEqual(observable(reference));
    expect(removed.stdout.toString()).toBe('[]\n0\n');
    expect(removed.stderr.toString()).toMatch(/Permission denied/);
  });

  it('a directory on the way to a dependency that stops being searchable makes the image stale', async () => {
    const dir = ownedDir(path.join(work, 'passage'), 0, 0, 0o755);
    ownedFile(path.join(dir, 'data'), 'cx-behind-a-door\n', 0, 0, 0o644);
    const init = ownedFile(path.join(work, 'passage-init.sh'), `read -r D < ${dir}/data\n`, 0, 0, 0o644);
    fs.utimesSync(init, new Date(Date.now() - 10_000), new Date(Date.now() - 10_000));
    const cache = ownedDir(path.join(work, 'passage-cache'), NOBODY, NOGROUP);
    const e = env(cache, { CACHED_EXEC_SYSTEM_DIR: '' });
    const w = await asUser({}, ['--warm', `--after-init=${init}`, 'bash'], e);
    expect(w.status, text(w)).toBe(0);
    const probe = [`--after-init=${init}`, 'bash', '-c', 'echo "[$D]"; grep -c -F "$1" /proc/$$/maps || true', 'x', cache];
    expect((await asUser({}, probe, e)).stdout.toString()).toMatch(/^\[cx-behind-a-door\]\n[1-9]\d*\n$/);

    fs.chmodSync(dir, 0o700); // the file itself is untouched: only its directory's mode changed
    try {
      const r = await asUser({}, probe, e);
      expect(observable(r)).toEqual(observable(await cold({}, probe, e)));
      expect(r.stdout.toString()).toBe('[]\n0\n');
      const explain = await asUser({}, ['--explain', `--after-init=${init}`, 'bash'], e);
      expect(explain.status).toBe(1);
      expect(explain.stdout.toString()).toMatch(new RegExp(`FAIL_STALE_FILE: ${dir}`));
    } finally {
      fs.chmodSync(dir, 0o755);
    }
  });

  it('the directories on the way are ACCESS entries: a chmod of one is noticed even where the file still opens (root)', async () => {
    const dir = ownedDir(path.join(work, 'passage-root'), 0, 0, 0o755);
    ownedFile(path.join(dir, 'data'), 'cx-root-passage\n', 0, 0, 0o644);
    const init = ownedFile(path.join(work, 'passage-root-init.sh'), `read -r D < ${dir}/data\n`, 0, 0, 0o644);
    fs.utimesSync(init, new Date(Date.now() - 10_000), new Date(Date.now() - 10_000));
    const cache = ownedDir(path.join(work, 'passage-root-cache'), 0, 0);
    const e = env(cache, { CACHED_EXEC_SYSTEM_DIR: '' });
    expect((await asRoot(['--warm', `--after-init=${init}`, 'bash'], e)).status).toBe(0);
    expect((await asRoot(['--explain', `--after-init=${init}`, 'bash'], e)).status).toBe(0);
    fs.chmodSync(dir, 0o711);
    try {
      const explain = await asRoot(['--explain', `--after-init=${init}`, 'bash'], e);
      expect(explain.status).toBe(1);
      expect(explain.stdout.toString()).toMatch(new RegExp(`FAIL_STALE_FILE: ${dir} changed who may pass it \\(mode 755 uid 0 gid 0 -> 711`));
      const r = await asRoot([`--after-init=${init}`, 'bash', '-c', 'echo "[$D]"; grep -c -F "$1" /proc/$$/maps || true', 'x', cache], e);
      expect(r.stdout.toString()).toBe('[cx-root-passage]\n0\n'); // cold, with the same answer
    } finally {
      fs.chmodSync(dir, 0o755);
    }
  });
});
