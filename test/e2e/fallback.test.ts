/**
 * Fail cold, never fail: every doubt about an image must end in a correct cold
 * run. Each case damages a good image (or the world it depends on) in one way
 * and checks that the run is exactly a cold run and did not map the image; it
 * also checks that the undamaged image does restore, so a pass means the
 * damage was detected, not that nothing ever restores.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  LAUNCHER, baseEnv, cc, describeWarm, haveCc, installedPrograms, mapsShowImage, observable, removeDir, runCold,
  run, runRestored, tmpCacheDir, tmpDir, warm, type Env, type WarmResult,
} from '../helpers/cx.js';
import { firstLoadAddress, flipByte, headerFieldOffset, metaSize, moveFirstRegion, regions, rehash } from '../helpers/image.js';
import { ARCH_AARCH64 } from '../../src/image/schema.js';
import { hostCpuId } from '../../src/image/machine.js';
import { parseImage } from '../../src/image/format.js';
import { keyHash } from '../../src/cache/key.js';
import { checkImage } from '../../src/cache/check.js';

const hasBash = installedPrograms(['bash']).length > 0;
const canCompile = haveCc();
const cacheDir = tmpCacheDir();
const work = tmpDir('cx-fallback-');
const env = baseEnv(cacheDir);
const isRoot = process.geteuid?.() === 0;

const MAPS = ['-c', 'cat /proc/$$/maps; true'];
const PROBE = ['-c', 'printf "[%s]\\n" "$0" "$@"; echo "$$" >/dev/null; exit 3', 'zero', 'a b', 'c\nd'];

let bashWarm: WarmResult | undefined;
let pristine: Buffer | undefined;

/** `./bin/cached-exec bash ARGS` with exactly the environment `e` (runRestored would drop CACHED_EXEC_DISABLE). */
function launch(args: string[], e: Env): ReturnType<typeof run> {
  return run(LAUNCHER, ['bash', ...args], { env: e });
}

async function mapsImage(e: Env, image: string): Promise<boolean> {
  const r = await launch(MAPS, e);
  expect(r.status, r.stderr.toString()).toBe(0);
  expect(r.stdout.toString(), 'not a real maps listing').toContain('[stack]');
  return mapsShowImage(r.stdout.toString(), image);
}

/** The damaged case ran exactly like a cold run and did not map the image. */
async function expectCorrectColdRun(e: Env, image: string): Promise<void> {
  const cold = await runCold('bash', PROBE, { env: e });
  const restored = await launch(PROBE, e);
  expect(observable(restored)).toEqual(observable(cold));
  expect(cold.status).toBe(3);
  expect(await mapsImage(e, image), 'the damaged image was used').toBe(false);
}

function restorePristine(): void {
  const image = bashWarm?.image;
  if (!image || !pristine) return;
  fs.rmSync(image, { force: true });
  fs.writeFileSync(image, pristine, { mode: 0o600 });
  fs.chmodSync(image, 0o600);
}

async function expectPristineRestores(): Promise<void> {
  restorePristine();
  const image = bashWarm?.image ?? '(no image)';
  expect(await mapsImage(env, image), `precondition: the undamaged image restores; ${describeWarm(bashWarm)}`).toBe(true);
}

afterAll(() => {
  removeDir(cacheDir);
  removeDir(work);
});

if (hasBash) {
  describe('damaged or distrusted bash image', () => {
    beforeAll(async () => {
      bashWarm = await warm('bash', env);
      if (bashWarm.exists && bashWarm.image) pristine = fs.readFileSync(bashWarm.image);
    }, 120_000);
    beforeEach(() => restorePristine());

    it('is warmed', () => {
      expect(bashWarm?.exists, describeWarm(bashWarm)).toBe(true);
    });

    it('forced address collision: a region placed over the launcher itself', async () => {
      const image = bashWarm?.image as string;
      expect(pristine, describeWarm(bashWarm)).toBeDefined();
      const taken = firstLoadAddress(LAUNCHER);
      const rs = regions(fs.readFileSync(image));
      expect(rs.length).toBeGreaterThan(1);
      expect((rs[1] as { addr: bigint }).addr).toBeGreaterThan(taken);
      moveFirstRegion(image, taken);
      await expectCorrectColdRun(env, image);
      await expectPristineRestores();
    });

    for (const [label, cut] of [
      ['one data page short', (n: number) => n - 4096],
      ['one byte short', (n: number) => n - 1],
      ['metadata only', () => -1],
      ['100 bytes', () => 100],
      ['empty', () => 0],
    ] as const) {
      it(`truncated image: ${label}`, async () => {
        const image = bashWarm?.image as string;
        expect(pristine, describeWarm(bashWarm)).toBeDefined();
        const size = fs.statSync(image).size;
        const n = cut(size);
        fs.truncateSync(image, n < 0 ? metaSize(image) : n);
        await expectCorrectColdRun(env, image);
        await expectPristineRestores();
      });
    }

    it('corrupted checksum byte', async () => {
      const image = bashWarm?.image as string;
      expect(pristine, describeWarm(bashWarm)).toBeDefined();
      flipByte(image, headerFieldOffset('checksum') + 3);
      await expectCorrectColdRun(env, image);
      await expectPristineRestores();
    });

    it('corrupted metadata byte (checksum left as it was)', async () => {
      const image = bashWarm?.image as string;
      expect(pristine, describeWarm(bashWarm)).toBeDefined();
      const rs = regions(fs.readFileSync(image));
      flipByte(image, (rs[0]?.at ?? 200) + 2); // inside the first region's address
      await expectCorrectColdRun(env, image);
      await expectPristineRestores();
    });

    /*
     * An image of another machine, otherwise intact (the checksum recomputed,
     * so only the header field is wrong): the launcher runs cold, records
     * FAIL_ARCH / FAIL_PAGE_SIZE, and --explain names the machine.
     */
    for (const [label, field, value, outcome, why] of [
      ['another architecture (aarch64)', 'arch', ARCH_AARCH64, 'FAIL_ARCH', /image taken on aarch64, this machine is x86_64/],
      ['another page size (16K)', 'page_size', 16384, 'FAIL_PAGE_SIZE', /image taken with 16384-byte pages, this kernel's are 4096 bytes/],
      // A CPU with other features (a home shared by machines, a VM moved to another host): glibc's IFUNCs chose code for it.
      ['another CPU', 'cpu_id', (hostCpuId() ^ 0x100) >>> 0, 'FAIL_CPU', /image taken on a CPU with other features/],
    ] as const) {
      it(`an image for ${label} runs cold, and --explain says why`, async () => {
        const image = bashWarm?.image as string;
        expect(pristine, describeWarm(bashWarm)).toBeDefined();
        const b = fs.readFileSync(image);
        b.writeUInt32LE(value, headerFieldOffset(field));
        rehash(b);
        fs.writeFileSync(image, b);
        await expectCorrectColdRun(env, image);
        const x = await run(LAUNCHER, ['--explain', 'bash', '--json'], { env });
        expect(x.status, x.stderr.toString()).toBe(1);
        const p = JSON.parse(x.stdout.toString());
        expect(p.outcome).toBe(outcome);
        expect(p.detail).toMatch(why);
        const text = (await run(LAUNCHER, ['--explain', 'bash'], { env })).stdout.toString();
        expect(text).toMatch(new RegExp(`why +${outcome}: `));
        await expectPristineRestores();
      });
    }

    /*
     * Machines of two CPUs sharing one cache (an NFS home, a VM moved to
     * another host): the CPU id is part of the key, so the other machine's
     * image sits under its own name beside this machine's. Neither run is
     * cold for the other's sake, and --cleanup keeps it (its machine uses it).
     */
    it('another CPU\'s image under its own key: this machine keeps restoring its own, and --cleanup keeps both', async () => {
      const image = bashWarm?.image as string;
      expect(pristine, describeWarm(bashWarm)).toBeDefined();
      const other = (hostCpuId() ^ 0x100) >>> 0;
      const b = Buffer.from(pristine as Buffer);
      b.writeUInt32LE(other, headerFieldOffset('cpu_id'));
      rehash(b);
      const key = parseImage(b).model.key;
      expect(key.cpuId).toBe(other);
      const otherImage = path.join(path.dirname(image), `${keyHash(key)}.img`);
      expect(otherImage).not.toBe(image);
      fs.writeFileSync(otherImage, b, { mode: 0o600 });
      try {
        expect(await mapsImage(env, image), 'this machine\'s image restores beside the other').toBe(true);
        const x = await run(LAUNCHER, ['--explain', 'bash', '--json'], { env });
        expect(JSON.parse(x.stdout.toString()).outcome).toBe('HIT');
        const c = await run(LAUNCHER, ['--cleanup', '--json'], { env });
        expect(c.status, c.stderr.toString()).toBe(0);
        expect((JSON.parse(c.stdout.toString()) as { invalidated: { path: string }[] }).invalidated.map((i) => i.path)).not.toContain(otherImage);
        expect(fs.existsSync(otherImage)).toBe(true);
        // What the other machine's launcher would check: the file holds its name's key, for that CPU.
        expect(checkImage(otherImage, { key, owner: process.geteuid?.() ?? 0, cpuId: other, env }).outcome).toBe('HIT');
      } finally {
        fs.rmSync(otherImage, { force: true });
      }
    });

    it('garbage of the same size', async () => {
      const image = bashWarm?.image as string;
      expect(pristine, describeWarm(bashWarm)).toBeDefined();
      const size = fs.statSync(image).size;
      fs.writeFileSync(image, Buffer.alloc(size, 0xa5));
      await expectCorrectColdRun(env, image);
      await expectPristineRestores();
    });

    for (const mode of [0o620, 0o602, 0o666]) {
      it(`image writable by group or others (mode ${mode.toString(8)})`, async () => {
        const image = bashWarm?.image as string;
        expect(pristine, describeWarm(bashWarm)).toBeDefined();
        fs.chmodSync(image, mode);
        await expectCorrectColdRun(env, image);
        await expectPristineRestores();
      });
    }

    if (isRoot) {
      it('image owned by another user', async () => {
        const image = bashWarm?.image as string;
        expect(pristine, describeWarm(bashWarm)).toBeDefined();
        fs.chownSync(image, 65534, 65534);
        await expectCorrectColdRun(env, image);
        await expectPristineRestores();
      });
    }

    for (const [name, value] of [
      ['LD_LIBRARY_PATH', '/nonexistent'],
      ['LD_BIND_NOW', '1'],
      ['GLIBC_TUNABLES', 'glibc.malloc.check=0'],
      ['MALLOC_ARENA_MAX', '1'],
    ] as const) {
      it(`${name} in the caller's environment runs cold`, async () => {
        const image = bashWarm?.image as string;
        await expectCorrectColdRun({ ...env, [name]: value }, image);
        await expectPristineRestores();
      });
    }

    it('CACHED_EXEC_DISABLE=1 runs cold; CACHED_EXEC_DISABLE=0 and empty do not disable', async () => {
      const image = bashWarm?.image as string;
      await expectCorrectColdRun({ ...env, CACHED_EXEC_DISABLE: '1' }, image);
      await expectCorrectColdRun({ ...env, CACHED_EXEC_DISABLE: 'yes' }, image);
      await expectPristineRestores();
      expect(await mapsImage({ ...env, CACHED_EXEC_DISABLE: '0' }, image)).toBe(true);
      expect(await mapsImage({ ...env, CACHED_EXEC_DISABLE: '' }, image)).toBe(true);
    });

    it('a different PATH is a different key: no restore, correct output', async () => {
      const image = bashWarm?.image as string;
      const other = { ...env, PATH: `${work}:${env.PATH}` };
      await expectCorrectColdRun(other, image);
    });
  });
}

// --- a private program linked against a private library --------------------

interface Fixture {
  dir: string;
  prog: string;
  probed: string; // rpath entry searched first, where the library is absent
  libdir: string; // rpath entry holding the library
  buildLib: (value: string, into?: string) => void;
}

const PROG_C = `#include <stdio.h>
#include <string.h>
const char *libvalue(void);
int main(int argc, char **argv) {
  printf("%s\\n", libvalue());
  if (argc > 1 && strcmp(argv[1], "maps") == 0) {
    FILE *f = fopen("/proc/self/maps", "r");
    int c;
    while (f && (c = fgetc(f)) != EOF) putchar(c);
  }
  return 0;
}
`;

function makeFixture(name: string): Fixture {
  const dir = path.join(work, name);
  const probed = path.join(dir, 'first');
  const libdir = path.join(dir, 'second');
  fs.mkdirSync(probed, { recursive: true });
  fs.mkdirSync(libdir, { recursive: true });
  const buildLib = (value: string, into = libdir): void => {
    const src = path.join(dir, `lib-${value}.c`);
    fs.writeFileSync(src, `const char *libvalue(void) { return "${value}"; }\n`);
    const out = path.join(into, 'libcxfix.so');
    const tmp = `${out}.tmp`;
    cc(['-shared', '-fPIC', '-O0', '-o', tmp, src]);
    // Rewrite the existing file in place (same inode, like `cp` over it) when there is one.
    if (fs.existsSync(out)) {
      fs.writeFileSync(out, fs.readFileSync(tmp));
      fs.rmSync(tmp);
    } else {
      fs.renameSync(tmp, out);
    }
  };
  buildLib('value-1');
  fs.writeFileSync(path.join(dir, 'prog.c'), PROG_C);
  const prog = path.join(dir, 'prog');
  cc(['-O0', '-o', prog, path.join(dir, 'prog.c'), `-L${libdir}`, '-lcxfix', `-Wl,-rpath,${probed}:${libdir}`]);
  return { dir, prog, probed, libdir, buildLib };
}

/** Runs the private program through the launcher: what it printed, and whether it mapped an image. */
async function privateRun(fx: Fixture, e: Env): Promise<{ value: string; restored: boolean }> {
  const w = await runRestored(fx.prog, ['maps'], { env: e });
  expect(w.status, w.stderr.toString()).toBe(0);
  const text = w.stdout.toString();
  return { value: text.split('\n')[0] ?? '', restored: text.includes(path.join(cacheDir, 'images')) };
}

if (canCompile) {
  describe('a private program and its private library', () => {
    it('warms and restores (precondition for the next cases)', async () => {
      const fx = makeFixture('basic');
      const w = await warm(fx.prog, env);
      expect(w.exists, describeWarm(w)).toBe(true);
      const r = await privateRun(fx, env);
      expect(r.value).toBe('value-1');
      expect(r.restored, 'the private program was not restored').toBe(true);
    });

    it('library rebuilt in place (same size, new content): next run prints the new value, cold', async () => {
      const fx = makeFixture('rebuilt');
      const w = await warm(fx.prog, env);
      expect((await privateRun(fx, env)).value).toBe('value-1');
      // Same length string: same size, so only mtime/ctime (and content) change.
      await new Promise((r) => setTimeout(r, 20));
      fx.buildLib('value-2');
      const after = await privateRun(fx, env);
      expect(after.value).toBe('value-2');
      expect(after.restored).toBe(false);
      const cold = await runCold(fx.prog, [], { env });
      expect(cold.stdout.toString()).toBe('value-2\n');
      expect(w.exists, describeWarm(w)).toBe(true);
    });

    it('library replaced by rename (new inode): next run prints the new value', async () => {
      const fx = makeFixture('renamed');
      const w = await warm(fx.prog, env);
      expect((await privateRun(fx, env)).value).toBe('value-1');
      const lib = path.join(fx.libdir, 'libcxfix.so');
      fs.renameSync(lib, `${lib}.old`);
      fx.buildLib('value-3');
      const after = await privateRun(fx, env);
      expect(after.value).toBe('value-3');
      expect(after.restored).toBe(false);
      expect(w.exists, describeWarm(w)).toBe(true);
    });

    it('a library appearing on a path the loader probed (negative dependency) is used', async () => {
      const fx = makeFixture('probed');
      const w = await warm(fx.prog, env);
      expect((await privateRun(fx, env)).value).toBe('value-1');
      fx.buildLib('value-A', fx.probed);
      const after = await privateRun(fx, env);
      expect(after.value).toBe('value-A');
      expect(after.restored).toBe(false);
      expect(w.exists, describeWarm(w)).toBe(true);
    });

    it('the program itself rebuilt: new key, new behaviour', async () => {
      const fx = makeFixture('progchange');
      const w = await warm(fx.prog, env);
      expect((await privateRun(fx, env)).value).toBe('value-1');
      const src = path.join(fx.dir, 'prog.c');
      fs.writeFileSync(src, PROG_C.replace('printf("%s\\n", libvalue());', 'printf("new %s\\n", libvalue());'));
      cc(['-O0', '-o', fx.prog, src, `-L${fx.libdir}`, '-lcxfix', `-Wl,-rpath,${fx.probed}:${fx.libdir}`]);
      const after = await privateRun(fx, env);
      expect(after.value).toBe('new value-1');
      expect(w.exists, describeWarm(w)).toBe(true);
    });

    it('LD_PRELOAD in the caller environment: the preloaded library wins', async () => {
      const fx = makeFixture('preload');
      const w = await warm(fx.prog, env);
      expect((await privateRun(fx, env)).restored, describeWarm(w)).toBe(true);
      const pre = path.join(fx.dir, 'preload.c');
      fs.writeFileSync(pre, 'const char *libvalue(void) { return "from-preload"; }\n');
      const so = path.join(fx.dir, 'preload.so');
      cc(['-shared', '-fPIC', '-o', so, pre]);
      const e = { ...env, LD_PRELOAD: so };
      const after = await privateRun(fx, e);
      expect(after.value).toBe('from-preload');
      expect(after.restored).toBe(false);
      const cold = await runCold(fx.prog, [], { env: e });
      const restored = await runRestored(fx.prog, [], { env: e });
      expect(observable(restored)).toEqual(observable(cold));
    });
  });
}
