/**
 * What an image must never hold or allow: the snapshotting process's
 * environment (the stack is never captured), images readable or writable by
 * others, and a stack canary shared between restored runs.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  baseEnv, describeWarm, installedPrograms, mapsShowImage, programSpec, removeDir, runRestored, tmpCacheDir, warm,
  type WarmResult,
} from '../helpers/cx.js';

const hasBash = installedPrograms(['bash']).length > 0;
const hasPython = installedPrograms(['python3']).length > 0;
const cacheDir = tmpCacheDir();
const secret = `cx-secret-${crypto.randomBytes(12).toString('hex')}`;
const env = baseEnv(cacheDir);
let w: WarmResult | undefined;
let py: WarmResult | undefined;

beforeAll(async () => {
  if (hasBash) w = await warm('bash', { ...env, CX_TEST_SECRET: secret, CX_TEST_SECRET_2: `${secret}-two` });
  if (hasPython) py = await warm('python3', env);
}, 120_000);

afterAll(() => removeDir(cacheDir));

if (hasBash) {
  describe('image contents and permissions', () => {
    it('an image taken with a secret in the environment does not contain it', () => {
      expect(w?.exists, describeWarm(w)).toBe(true);
      const bytes = fs.readFileSync(w?.image as string);
      expect(bytes.includes(Buffer.from(secret))).toBe(false);
      expect(bytes.includes(Buffer.from('CX_TEST_SECRET'))).toBe(false);
    });

    it('the image is private to its owner (no group/other bits) and so is its directory', () => {
      expect(w?.exists, describeWarm(w)).toBe(true);
      const st = fs.statSync(w?.image as string);
      expect(st.mode & 0o077).toBe(0);
      expect(st.uid).toBe(process.geteuid?.());
      expect(fs.statSync(cacheDir).mode & 0o077).toBe(0);
    });

    it('the restored program sees the caller\'s environment, not the snapshot\'s', async () => {
      const r = await runRestored('bash', ['-c', 'echo "[${CX_TEST_SECRET-unset}]"; true'], { env });
      expect(r.stdout.toString()).toBe('[unset]\n');
    });
  });
}

if (hasPython) {
  describe('stack protector canary', () => {
    it('differs between two restored runs (fresh from each process\'s AT_RANDOM)', async () => {
      expect(py?.exists, describeWarm(py)).toBe(true);
      // The glibc guard lives at %fs:0x28 (x86_64 TCB ABI, fixed by the compiler, not by glibc).
      const code = [
        'import ctypes, sys',
        'buf = (ctypes.c_ubyte * 8)()',
        // arch_prctl(ARCH_GET_FS) gives the thread pointer; the canary is 0x28 past it.
        'fs = ctypes.c_ulong()',
        'libc = ctypes.CDLL(None, use_errno=True)',
        'assert libc.syscall(158, 0x1003, ctypes.byref(fs)) == 0',
        'ctypes.memmove(buf, fs.value + 0x28, 8)',
        'print(bytes(buf).hex())',
      ].join('\n');
      const a = await runRestored('python3', ['-c', code], { env });
      const b = await runRestored('python3', ['-c', code], { env });
      expect(a.status, a.stderr.toString()).toBe(0);
      expect(b.status, b.stderr.toString()).toBe(0);
      expect(a.stdout.toString()).toMatch(/^[0-9a-f]{16}\n$/);
      expect(a.stdout.toString()).not.toBe(b.stdout.toString());
      // ...and these really were restored runs.
      const maps = await runRestored('python3', programSpec('python3').mapsArgs, { env });
      expect(mapsShowImage(maps.stdout.toString(), py?.image as string), describeWarm(py)).toBe(true);
    });
  });
}
