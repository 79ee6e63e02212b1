/**
 * --install-capability / --remove-capability on a copy of the package (so no
 * other suite's launcher gets a capability): the security.capability
 * attribute as getcap(8) and our reader see it, what it changes for a user
 * who is not root (perl reads /proc/self/exe: cold without it, restored with
 * it and $^X right), what the restored program is left with (no capability,
 * AT_SECURE 0, its /proc files its own), and that the launcher keeps working
 * for root and for that user throughout.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeFileCaps, launcherCapValue, readFileCaps } from '../../src/cli/capability.js';
import { decodeRunRecords } from '../../src/cache/stats.js';
import { SYSTEM_PATH, removeDir, tmpCacheDir, type Env } from '../helpers/cx.js';
import { copyPackage, giveToNobody, nobodyDir, runAs, type PackageCopy, type Who } from '../helpers/unprivileged.js';

let pkg: PackageCopy;
let rootCache: string;
let userCache: string;
let userHome: string;
const envFor = (who: Who): Env => ({
  PATH: SYSTEM_PATH, LC_ALL: 'C', CACHED_EXEC_NO_WARM: '1',
  HOME: who === 'root' ? os.homedir() : userHome,
  CACHED_EXEC_DIR: who === 'root' ? rootCache : userCache,
});
const cx = (who: Who, args: string[]): ReturnType<typeof runAs> => runAs(who, pkg.launcher, args, { env: envFor(who) });
const getcap = (file: string): string => spawnSync('getcap', [file], { encoding: 'utf8' }).stdout.trim();

/**
 * perl, through the launcher, reports: image mapped (restored?), /proc/self/exe, $^X re-run,
 * permitted and effective capabilities, AT_SECURE, and who owns its /proc files (not dumpable: root).
 */
const PERL_REPORT = String.raw`
open M, "/proc/self/maps"; my $img = grep m{/images/[0-9a-f]{16}\.img$}, <M>;
open S, "/proc/self/status"; my %s = map { /^(\w+):\s*(\S+)/ ? ($1, $2) : () } <S>;
open A, "/proc/self/auxv"; local $/; my %a = unpack("(Q2)*", <A>);
print join("\n", "restored " . ($img ? 1 : 0), "exe " . readlink("/proc/self/exe"), "rerun " . ` + '`$^X -e "print 43"`' + String.raw`,
  "CapPrm $s{CapPrm}", "CapEff $s{CapEff}", "AT_SECURE $a{23}", "proc-owner " . (stat "/proc/self/status")[4]), "\n";
`;
function perlReport(who: Who): Record<string, string> {
  const r = cx(who, ['perl', '-e', PERL_REPORT]);
  expect(r.status, r.stderr).toBe(0);
  expect(r.stderr).toBe('');
  return Object.fromEntries(r.stdout.trim().split('\n').map((l) => [l.split(' ')[0], l.slice(l.indexOf(' ') + 1)]));
}

function outcomes(cache: string): string[] {
  const log = path.join(cache, 'stats', 'runs.log');
  return fs.existsSync(log) ? decodeRunRecords(fs.readFileSync(log)).records.map((r) => r.outcome) : [];
}

beforeAll(() => {
  pkg = copyPackage();
  rootCache = tmpCacheDir();
  userCache = nobodyDir('cx-cache-nobody-');
  userHome = nobodyDir('cx-home-nobody-');
  for (const who of ['root', 'nobody'] as const) {
    const w = cx(who, ['--warm', 'perl', 'sed']);
    expect(w.status, `${who} --warm: ${w.stderr}${w.stdout}`).toBe(0);
  }
});
afterAll(() => {
  for (const d of [pkg?.root, rootCache, userCache, userHome]) removeDir(d);
});

describe('without the capability (the default)', () => {
  it('root: perl restores and /proc/self/exe names perl (root holds CAP_CHECKPOINT_RESTORE)', () => {
    expect(perlReport('root')).toMatchObject({ restored: '1', exe: fs.realpathSync('/usr/bin/perl'), rerun: '43' });
  });

  it('nobody: perl runs cold (FAIL_EXE) and right; sed, which does not read /proc/self/exe, restores', () => {
    const before = outcomes(userCache).length;
    expect(perlReport('nobody')).toMatchObject({ restored: '0', exe: fs.realpathSync('/usr/bin/perl'), rerun: '43' });
    const sed = cx('nobody', ['sed', '-n', '/images\\/.*\\.img$/p', '/proc/self/maps']);
    expect(sed.stdout).toContain(userCache);
    expect(outcomes(userCache).slice(before)).toEqual(['FAIL_EXE', 'HIT']);
    const explain = cx('nobody', ['--explain', 'perl']);
    expect(explain.status).toBe(1);
    expect(explain.stdout).toMatch(/why +FAIL_EXE: the program reads \/proc\/self\/exe.*has no cap_checkpoint_restore/);
    expect(explain.stdout).toContain('cached-exec --install-capability');
    expect(cx('nobody', ['--show-stats']).stdout).toMatch(/reads \/proc\/self\/exe \(no capability\) +1/);
  });

  it('nobody cannot install it', () => {
    const r = cx('nobody', ['--install-capability']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('run it as root');
    expect(getcap(pkg.launcher)).toBe('');
  });

  it('a launcher file that is not root\'s is refused', () => {
    const other = copyPackage();
    try {
      giveToNobody(other.root);
      const r = runAs('root', other.launcher, ['--install-capability'], { env: envFor('root') });
      expect(r.status).toBe(1);
      expect(r.stderr).toContain('must be owned by root');
      expect(getcap(other.launcher)).toBe('');
    } finally {
      removeDir(other.root);
    }
  });
});

describe('with the capability', () => {
  it('--install-capability writes cap_checkpoint_restore, permitted only, and reads it back', () => {
    const r = cx('root', ['--install-capability', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ launcher: pkg.launcher, capability: 'cap_checkpoint_restore=p', changed: true });
    expect(getcap(pkg.launcher)).toBe(`${pkg.launcher} cap_checkpoint_restore=p`);
    const caps = readFileCaps(pkg.launcher);
    expect(caps).toMatchObject({ permitted: 1n << 40n, inheritable: 0n, effective: false });
    expect(decodeFileCaps(launcherCapValue())).toMatchObject({ revision: 2, permitted: 1n << 40n, effective: false });
    const again = JSON.parse(cx('root', ['--install-capability', '--json']).stdout) as { changed: boolean };
    expect(again.changed).toBe(false);
  });

  it('nobody: perl restores, /proc/self/exe names perl, $^X re-runs perl; the program has no capability, AT_SECURE 0, its own /proc', () => {
    const before = outcomes(userCache).length;
    expect(perlReport('nobody')).toEqual({
      restored: '1', exe: fs.realpathSync('/usr/bin/perl'), rerun: '43',
      CapPrm: '0000000000000000', CapEff: '0000000000000000', AT_SECURE: '0', 'proc-owner': '65534',
    });
    // The $^X child is perl run cold by perl itself; the launcher ran once, restoring.
    expect(outcomes(userCache).slice(before)).toEqual(['HIT']);
    const explain = cx('nobody', ['--explain', 'perl']);
    expect(explain.status, explain.stdout).toBe(0);
  });

  it('the launcher keeps working: root restores, nobody restores and falls back cold as before', () => {
    expect(perlReport('root')).toMatchObject({ restored: '1', rerun: '43', AT_SECURE: '0' });
    const sed = cx('nobody', ['sed', '-n', '/images\\/.*\\.img$/p', '/proc/self/maps']);
    expect(sed.stdout).toContain(userCache);
    const missing = cx('nobody', ['cx-no-such-program']);
    expect([missing.status, missing.stderr]).toEqual([127, 'cached-exec: cx-no-such-program: command not found\n']);
    const cold = runAs('nobody', pkg.launcher, ['perl', '-e', PERL_REPORT], { env: { ...envFor('nobody'), CACHED_EXEC_DISABLE: '1' } });
    expect(cold.stdout).toMatch(/^restored 0\nexe \S+perl\S*\nrerun 43\n/);
    expect(cold.stdout).toContain('AT_SECURE 0');
  });

  it('nobody takes snapshots and installs shims (the helper that starts a traced program drops the capability)', () => {
    // PTRACE_TRACEME from a process holding a capability its tracer lacks is refused: the helper must drop it first.
    const w = cx('nobody', ['--warm', 'cat']);
    expect(w.status, w.stderr).toBe(0);
    expect(cx('nobody', ['cat', '/proc/self/maps']).stdout).toContain(userCache);
    const shims = path.join(userHome, 'shims');
    const i = cx('nobody', ['--shims-install', shims, 'gcc', '--json']);
    expect(i.stderr).toBe('');
    expect(JSON.parse(i.stdout)).toMatchObject({ shims: [{ name: 'gcc', selfLocating: true }] });
  });

  it('--remove-capability undoes it: perl runs cold again for nobody', () => {
    const r = cx('root', ['--remove-capability']);
    expect(r.status, r.stderr).toBe(0);
    expect(getcap(pkg.launcher)).toBe('');
    expect(readFileCaps(pkg.launcher)).toBeNull();
    expect(perlReport('nobody')).toMatchObject({ restored: '0', rerun: '43' });
    expect(cx('root', ['--remove-capability']).stdout).toContain('had no capability');
  });
});
