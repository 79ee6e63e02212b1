/**
 * The resume protocol spoken by a program itself (no adapter): a small C
 * program initialises (reads a config file, fills a table, computes a value
 * from its pid), then, when CACHED_EXEC_RESUME_FD is set, reads its context
 * from that fd, closes it and does its work with the caller's argv. Snapshot
 * and restore are the real ones; the restored run must print what the cold
 * one prints, with this process's own pid.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRunRecords } from '../../src/cache/stats.js';
import { LAUNCHER, baseEnv, cc, removeDir, run, tmpCacheDir, tmpDir } from '../helpers/cx.js';

const cache = tmpCacheDir();
const work = tmpDir('cx-protocol-');
const config = path.join(work, 'tool.conf');
const prog = path.join(work, 'tool');
const env = baseEnv(cache);

const SOURCE = String.raw`
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long table[4096];
static char greeting[64];
static int own_pid;

/* The context: NUL-terminated strings until EOF (docs/resume-protocol.md). */
static char ctx[1 << 16];

int main(int argc, char **argv)
{
	FILE *f = fopen("${'CONFIG'}", "r");
	if (!f || !fgets(greeting, sizeof greeting, f)) return 9;
	fclose(f);
	greeting[strcspn(greeting, "\n")] = 0;
	for (int i = 0; i < 4096; i++) table[i] = (long)i * i % 1000003;
	own_pid = getpid(); /* found by the differential snapshot, patched at restore */
	char **args = argv;
	int nargs = argc;
	const char *fdv = getenv("CACHED_EXEC_RESUME_FD");
	if (fdv) {
		int fd = atoi(fdv);
		long n = 0, r;
		while ((r = read(fd, ctx + n, sizeof ctx - 1 - (size_t)n)) > 0) n += r;
		close(fd);
		if (r < 0 || strcmp(ctx, "cached-exec-resume 1")) return 125;
		char *p = ctx + strlen(ctx) + 1;
		nargs = atoi(p);
		p += strlen(p) + 1;
		args = calloc((size_t)nargs + 1, sizeof *args);
		for (int i = 0; i < nargs; i++) { args[i] = p; p += strlen(p) + 1; }
	}
	printf("%s:", greeting);
	for (int i = 1; i < nargs; i++) printf(" [%s]", args[i]);
	printf(" table=%ld pid-ok=%d\n", table[4095], own_pid == getpid());
	return nargs;
}
`;

function hits(): number {
  const log = path.join(cache, 'stats', 'runs.log');
  return fs.existsSync(log) ? decodeRunRecords(fs.readFileSync(log)).records.filter((r) => r.outcome === 'HIT').length : 0;
}

beforeAll(() => {
  fs.writeFileSync(config, 'hello from the config\n');
  const src = path.join(work, 'tool.c');
  fs.writeFileSync(src, SOURCE.replace('CONFIG', config));
  cc(['-O1', '-o', prog, src]);
  const w = spawnSync(LAUNCHER, ['--warm', '--after-init', prog], { env, encoding: 'utf8', timeout: 120_000 });
  expect(w.status, `${w.stdout}${w.stderr}`).toBe(0);
}, 120_000);

afterAll(() => {
  removeDir(cache);
  removeDir(work);
});

describe('a program that speaks the resume protocol itself', () => {
  it('restores with the caller\'s argv and pid, same output and exit status as cold', async () => {
    const args = ['--after-init', prog, 'one', 'two words', ''];
    const cold = await run(LAUNCHER, args, { env: { ...env, CACHED_EXEC_DISABLE: '1' } });
    const before = hits();
    const restored = await run(LAUNCHER, args, { env });
    expect(hits()).toBe(before + 1);
    expect(restored.stdout.toString()).toBe('hello from the config: [one] [two words] [] table=768977 pid-ok=1\n');
    expect(restored.stdout.toString()).toBe(cold.stdout.toString());
    expect(restored.status).toBe(4);
    expect(cold.status).toBe(4);
  });

  it('a changed config file (read by the init) makes the next run cold and right', async () => {
    fs.writeFileSync(config, 'a new greeting\n');
    const before = hits();
    const r = await run(LAUNCHER, ['--after-init', prog, 'x'], { env });
    expect(hits()).toBe(before);
    expect(r.stdout.toString()).toBe('a new greeting: [x] table=768977 pid-ok=1\n');
  });
});
