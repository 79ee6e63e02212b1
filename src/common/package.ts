/**
 * Where the package lives, found from this module's own location so it works
 * both compiled (dist/common/package.js) and from source under vitest
 * (src/common/package.ts): both are two levels below the package root.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Absolute path of the native launcher, bin/cached-exec. */
export const LAUNCHER = path.join(PACKAGE_ROOT, 'bin', 'cached-exec');

/** The admin CLI's entry point, which the launcher runs for `cached-exec --...` (and the watcher for --drain-queue). */
export const CLI_MAIN = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');

let cachedVersion: string | undefined;

/** "version" from package.json. */
export function packageVersion(): string {
  if (cachedVersion === undefined) {
    const pkg = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version?: unknown };
    cachedVersion = typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  }
  return cachedVersion;
}
