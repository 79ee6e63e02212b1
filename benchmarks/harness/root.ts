/**
 * The repository root, found by walking up from this module to the
 * package.json named cached-exec: the harness runs compiled
 * (build/bench-js/benchmarks/harness/) and from source under vitest.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: unknown };
      if (pkg.name === 'cached-exec') return dir;
    } catch { /* not here */ }
    if (path.dirname(dir) === dir) throw new Error(`bench: no cached-exec package.json above ${start}`);
  }
}

export const ROOT = findRoot(path.dirname(fileURLToPath(import.meta.url)));

/** Where `npm run bench` writes by default: ignored by git, so a local run leaves the checkout clean. */
export const LOCAL_RESULTS = path.join(ROOT, 'build', 'bench', 'results');

/** The committed results the README's performance table is generated from (written only with --update-committed). */
export const COMMITTED_RESULTS = path.join(ROOT, 'benchmarks', 'results');
