/**
 * A damaged page of an image's region data (issue 11, item 9). The hot path
 * checks only the metadata checksum (reading every page would cost more than
 * the restore), so the admin side must find it: --explain says FAIL_CHECKSUM
 * (not HIT) and exits 1, --cleanup removes the image, and the watcher's
 * re-check (staleReason) calls it corrupt.
 */
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeStruct } from '../../src/image/codec.js';
import { HEADER } from '../../src/image/schema.js';
import { staleReason } from '../../src/cache/maintain.js';
import { Store } from '../../src/cache/store.js';
import { LAUNCHER, baseEnv, describeWarm, installedPrograms, removeDir, run, tmpCacheDir, warm, type WarmResult } from '../helpers/cx.js';

const hasDash = installedPrograms(['dash']).length > 0;
const cacheDir = tmpCacheDir();
const env = baseEnv(cacheDir);
let w: WarmResult | undefined;
let pristine: Buffer;

beforeAll(async () => {
  if (!hasDash) return;
  w = await warm('dash', env);
  pristine = fs.readFileSync(w.image as string);
}, 60_000);
afterAll(() => removeDir(cacheDir));

/** Flips one byte of the first page of region data (not the metadata: its checksum still matches). */
function damageData(image: string): void {
  const buf = Buffer.from(pristine);
  const dataOffset = Number(decodeStruct(HEADER, buf, 0).data_offset);
  expect(buf.length).toBeGreaterThan(dataOffset + 200);
  buf[dataOffset + 123] = (buf[dataOffset + 123] ?? 0) ^ 0x5a;
  fs.writeFileSync(image, buf, { mode: 0o600 });
}

describe.runIf(hasDash)('a damaged data page', () => {
  it('the undamaged image explains as HIT', async () => {
    expect(w?.exists, describeWarm(w)).toBe(true);
    const r = await run(LAUNCHER, ['--explain', 'dash'], { env });
    expect(r.status, r.stdout.toString()).toBe(0);
  });

  it('--explain says FAIL_CHECKSUM (the launcher would still restore it) and exits 1', async () => {
    damageData(w?.image as string);
    const r = await run(LAUNCHER, ['--explain', 'dash'], { env });
    expect(r.status).toBe(1);
    expect(r.stdout.toString()).toMatch(/FAIL_CHECKSUM: region data checksum mismatch \(a damaged page\): the launcher does not check page data/);
    expect(r.stdout.toString()).not.toMatch(/next run +restores/);
    expect(r.stdout.toString()).toMatch(/--cleanup' removes it/);
  });

  it('the watcher\'s re-check calls it corrupt', () => {
    damageData(w?.image as string);
    const store = new Store(cacheDir);
    const im = store.listImages().find((i) => i.path === w?.image);
    expect(im).toBeDefined();
    expect(staleReason(store, im as NonNullable<typeof im>)?.reason).toBe('corrupt');
  });

  it('--cleanup removes it, naming the reason', async () => {
    damageData(w?.image as string);
    const r = await run(LAUNCHER, ['--cleanup', '--json'], { env });
    expect(r.status, r.stderr.toString()).toBe(0);
    const rep = JSON.parse(r.stdout.toString()) as { invalidated: { path: string; reason: string; detail: string; removed: boolean }[] };
    const mine = rep.invalidated.find((i) => i.path === w?.image);
    expect(mine?.reason).toBe('corrupt');
    expect(mine?.detail).toMatch(/damaged page/);
    expect(mine?.removed).toBe(true);
    expect(fs.existsSync(w?.image as string)).toBe(false);
    // A clean image is kept by --cleanup.
    fs.writeFileSync(w?.image as string, pristine, { mode: 0o600 });
    const again = await run(LAUNCHER, ['--cleanup', '--json'], { env });
    expect((JSON.parse(again.stdout.toString()) as { invalidated: unknown[] }).invalidated).toEqual([]);
    expect(fs.existsSync(w?.image as string)).toBe(true);
  });
});
