/**
 * Same-second changes on a filesystem with 1-second timestamps (issue 11,
 * item 3), on a loop-mounted ext4 with 128-byte inodes. A library or an rc
 * file rewritten in place (`dd conv=notrunc`: same inode, same size) in the
 * second it was last written keeps its identity; an image taken in between
 * would restore the old content forever. The snapshotter refuses
 * dependencies too new to trust (`too-new`: retried once after a wait, never
 * remembered), so a restore never shows the old content and --explain never
 * says HIT for it.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAUNCHER, baseEnv, cc, haveCc, installedPrograms, observable, removeDir, run, runCold, tmpCacheDir, tmpDir, type RunResult } from '../helpers/cx.js';
import { canMountCoarseFs, mountCoarseFs, rewriteInPlace, startOfSecond, type CoarseFs } from '../helpers/coarsefs.js';

const enabled = canMountCoarseFs() && haveCc() && installedPrograms(['bash']).length > 0;
const work = tmpDir('cx-coarse-');
const cacheDir = tmpCacheDir();
const env = baseEnv(cacheDir);
let cfs: CoarseFs | undefined;

beforeAll(() => {
  if (enabled) cfs = mountCoarseFs(work);
});
afterAll(() => {
  cfs?.unmount();
  removeDir(work);
  removeDir(cacheDir);
});

interface Events { e: string; key?: string; reason?: string }
function events(): Events[] {
  try {
    return fs.readFileSync(path.join(cacheDir, 'stats', 'events.log'), 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Events);
  } catch {
    return [];
  }
}
const key = (args: string[]): string => spawnSync(LAUNCHER, ['--internal-key', ...args], { env, encoding: 'utf8' }).stdout.split(' ')[0] ?? '';
const explain = (args: string[]): Promise<RunResult> => run(LAUNCHER, ['--explain', ...args], { env });

describe.runIf(enabled)('a dependency rewritten in place within one second', () => {
  it('the filesystem really has 1-second timestamps', () => {
    const f = path.join(cfs?.mnt as string, 'probe');
    fs.writeFileSync(f, 'x');
    expect(fs.statSync(f, { bigint: true }).mtimeNs % 1_000_000_000n).toBe(0n);
  });

  it('a library: the first snapshot is refused as too new, and the old content is never restored', async () => {
    const mnt = cfs?.mnt as string;
    // Two builds of the library that differ only in a string its constructor copies into .bss (image data).
    const src = (v: number): string => {
      const p = path.join(work, `lib${v}.c`);
      fs.writeFileSync(p, `#include <string.h>\nchar text[] = "version-${v}";\nchar copy[16];\n` +
        '__attribute__((constructor)) static void init(void) { strcpy(copy, text); }\n');
      return p;
    };
    for (const v of [1, 2]) cc(['-shared', '-fPIC', '-o', path.join(work, `libver${v}.so`), src(v)]);
    const v1 = fs.readFileSync(path.join(work, 'libver1.so'));
    const v2 = fs.readFileSync(path.join(work, 'libver2.so'));
    expect(v2.length).toBe(v1.length);
    fs.writeFileSync(path.join(work, 'main.c'), '#include <stdio.h>\nextern char copy[16];\nint main(void) { puts(copy); return 0; }\n');
    const prog = path.join(work, 'verprog');
    fs.copyFileSync(path.join(work, 'libver1.so'), path.join(mnt, 'libver.so'));
    cc(['-o', prog, path.join(work, 'main.c'), `-L${mnt}`, '-lver', `-Wl,-rpath,${mnt}`]);

    const lib = path.join(mnt, 'libver.so');
    const written = await startOfSecond();
    fs.rmSync(lib);
    fs.writeFileSync(lib, v1, { mode: 0o755 }); // mtime and ctime: this second
    const w = await run(LAUNCHER, ['--warm', '--json', prog], { env, timeoutMs: 60_000 });
    expect(w.status, w.stderr.toString()).toBe(0);
    rewriteInPlace(lib, v2); // same inode, same size: only the timestamps can tell
    const rewrittenIn = Math.floor(Date.now() / 1000);

    const cold = await runCold(prog, [], { env });
    expect(cold.stdout.toString()).toBe('version-2\n');
    const r = await run(LAUNCHER, [prog], { env });
    expect(observable(r)).toEqual(observable(cold));
    const x = await explain([prog]);
    if (x.status === 0) {
      // Only possible if the rewrite changed the identity after all: then the restore is of the new content (checked above).
      expect(rewrittenIn).not.toBe(written);
    } else {
      expect(x.stdout.toString()).toMatch(/FAIL_STALE_FILE: .*libver\.so changed since the snapshot/);
    }
    // Why: the snapshot started within 2 s of the library's last write and refused it (then retried later).
    const k = key([prog]);
    expect(events().some((e) => e.e === 'refused' && e.key === k && e.reason === 'too-new'), JSON.stringify(events())).toBe(true);
  });

  it('an rc file: the post-init image never restores the old content', async () => {
    const rc = path.join(cfs?.mnt as string, 'rc.sh');
    await startOfSecond();
    fs.writeFileSync(rc, 'V=one\n');
    const w = await run(LAUNCHER, ['--warm', `--after-init=${rc}`, 'bash'], { env, timeoutMs: 120_000 });
    expect(w.status, `${w.stdout.toString()}${w.stderr.toString()}`).toBe(0);
    expect(w.stdout.toString()).toMatch(/retried: .*rc\.sh changed .* before the snapshot started/);
    rewriteInPlace(rc, Buffer.from('V=two\n'));
    const args = [`--after-init=${rc}`, 'bash', '-c', 'echo "$V"'];
    const r = await run(LAUNCHER, args, { env });
    expect(r.stdout.toString()).toBe('two\n');
    const x = await explain([`--after-init=${rc}`, 'bash']);
    expect(x.stdout.toString()).not.toMatch(/next run +restores/);
  });

  it('a too-new refusal is not remembered: the next attempt takes the snapshot', async () => {
    const rc = path.join(cfs?.mnt as string, 'busy.sh');
    fs.writeFileSync(rc, 'B=1\n');
    // Rewritten in place (same bytes) every 300 ms while the warm runs: both attempts find it too new.
    const touch = (): void => {
      const fd = fs.openSync(rc, 'r+');
      fs.writeSync(fd, 'B=1\n', 0);
      fs.closeSync(fd);
    };
    const timer = setInterval(touch, 300);
    let w: RunResult;
    try {
      w = await run(LAUNCHER, ['--warm', `--after-init=${rc}`, 'bash'], { env, timeoutMs: 120_000 });
    } finally {
      clearInterval(timer);
    }
    expect(w.status).toBe(1);
    expect(w.stderr.toString()).toMatch(/snapshot refused \(too-new\): .*busy\.sh changed/); // before or while it was taken
    const k = key([`--after-init=${rc}`, 'bash']);
    expect(fs.existsSync(path.join(cacheDir, 'refused', k))).toBe(false);
    await new Promise((res) => setTimeout(res, 2500));
    const again = await run(LAUNCHER, ['--warm', `--after-init=${rc}`, 'bash'], { env, timeoutMs: 120_000 });
    expect(again.status, again.stderr.toString()).toBe(0);
  });
});
