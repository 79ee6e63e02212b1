/**
 * scripts/build-native.mjs on a machine without a C compiler (the arm64 guest, a
 * device): an existing launcher for this machine is kept (exit 0, one line saying
 * so); none, or one of another architecture, fails as before. Run on a copy of
 * the script in a temp root, so the repository's bin/ is not touched.
 */
import { Buffer } from 'node:buffer';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..', '..');
let tmp: string;

beforeAll(() => {
  spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'build-native.mjs'), '--quiet'], { stdio: 'inherit' });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-nocc-'));
  fs.mkdirSync(path.join(tmp, 'scripts'));
  fs.copyFileSync(path.join(ROOT, 'scripts', 'build-native.mjs'), path.join(tmp, 'scripts', 'build-native.mjs'));
  fs.mkdirSync(path.join(tmp, 'bin'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function build(): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [path.join(tmp, 'scripts', 'build-native.mjs')], {
    env: { ...process.env, CC: path.join(tmp, 'no-such-cc') }, encoding: 'utf8',
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('build-native without a C compiler', () => {
  const launcher = (): string => path.join(tmp, 'bin', 'cached-exec');

  it('fails when there is no launcher', () => {
    fs.rmSync(launcher(), { force: true });
    const r = build();
    expect(r.status).toBe(1);
    expect(r.out).toMatch(/no C compiler found/);
  });

  it('keeps an existing launcher of this machine, says so in one line, and links the selfpath names', () => {
    fs.copyFileSync(path.join(ROOT, 'bin', 'cached-exec'), launcher());
    const before = fs.readFileSync(launcher());
    const r = build();
    expect(r.status).toBe(0);
    expect(r.out.trim().split('\n')).toHaveLength(1);
    expect(r.out).toMatch(/no C compiler .*keeping the existing bin\/cached-exec \((x86_64|aarch64),/);
    expect(fs.readFileSync(launcher()).equals(before)).toBe(true);
    expect(fs.readlinkSync(path.join(tmp, 'bin', 'cached-exec-selfpath'))).toBe('cached-exec');
  });

  it('fails for a launcher of another architecture, or a file that is not ELF', () => {
    const foreign = Buffer.from(fs.readFileSync(path.join(ROOT, 'bin', 'cached-exec')));
    foreign.writeUInt16LE(foreign.readUInt16LE(18) === 62 ? 183 : 62, 18); // e_machine: the other one
    fs.writeFileSync(launcher(), foreign, { mode: 0o755 });
    expect(build().status).toBe(1);
    fs.writeFileSync(launcher(), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    expect(build().status).toBe(1);
  });
});
