/**
 * The TypeScript side is layered: a module may import only from its own
 * directory and the layers below it. The CLI is the top (it is the face);
 * nothing below it may reach up into it, so the cache, the watcher and the
 * snapshotter stay usable without the command line.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(__dirname, '..', '..', 'src');

/** For each top-level directory of src/: the other directories it may import from. */
const ALLOWED: Record<string, readonly string[]> = {
  common: [],
  sys: [],
  image: ['common'], // machine.ts asks the launcher (common/package.ts) for this machine's CPU id
  resume: ['image'],
  cache: ['common', 'image', 'resume', 'sys'],
  invalidate: ['cache', 'common', 'image', 'resume', 'sys'],
  snapshot: ['cache', 'common', 'image', 'resume', 'sys'],
  cli: ['cache', 'common', 'image', 'invalidate', 'resume', 'snapshot', 'sys'],
};

function tsFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? tsFiles(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Relative specifiers of static imports/exports and dynamic import() with a literal or a MODULE constant. */
function relativeImports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g)) out.push(m[1] as string);
  for (const m of text.matchAll(/const MODULE = '(\.{1,2}\/[^']+)'/g)) out.push(m[1] as string);
  return out;
}

describe('layering of src/', () => {
  const files = tsFiles(SRC);

  it('knows every top-level directory', () => {
    const dirs = fs.readdirSync(SRC, { withFileTypes: true }).filter((e) => e.isDirectory() && e.name !== 'restore').map((e) => e.name);
    expect(dirs.filter((d) => !(d in ALLOWED))).toEqual([]);
  });

  it('imports only downwards (never from src/cli outside src/cli)', () => {
    const violations: string[] = [];
    for (const file of files) {
      const from = path.relative(SRC, file).split(path.sep)[0] as string;
      for (const spec of relativeImports(file)) {
        const target = path.relative(SRC, path.resolve(path.dirname(file), spec));
        const to = target.split(path.sep)[0] as string;
        if (to === from || target.startsWith('..')) continue;
        if (!(ALLOWED[from] ?? []).includes(to)) violations.push(`${path.relative(SRC, file)} imports ${spec}`);
      }
    }
    expect(violations).toEqual([]);
  });
});
