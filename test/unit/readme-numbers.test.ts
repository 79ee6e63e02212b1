/**
 * The README's performance table is generated from the committed benchmark
 * results: this fails when one was changed without the other (regenerate with
 * `npm run bench -- --update-committed`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { currentTable, performanceTable, replaceTable, type ResultsLike } from '../../benchmarks/harness/readme-table.js';

const ROOT = path.resolve(__dirname, '..', '..');
const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const results = JSON.parse(fs.readFileSync(path.join(ROOT, 'benchmarks', 'results', 'latest.json'), 'utf8')) as ResultsLike;

describe('README performance numbers', () => {
  it('equal the table generated from benchmarks/results/latest.json', () => {
    expect(currentTable(readme)).toBe(performanceTable(results));
  });

  it('name the run they come from', () => {
    expect(currentTable(readme)).toContain(`at commit ${results.machine.commit}`);
  });

  it('replacing the table keeps the rest of the README', () => {
    const other = replaceTable(readme, 'X');
    expect(currentTable(other)).toBe('X');
    expect(replaceTable(other, performanceTable(results))).toBe(readme);
  });

  it('the intro quotes no figure of its own', () => {
    const intro = readme.slice(0, readme.indexOf('## Set up'));
    expect(intro).not.toMatch(/\d+(\.\d+)? ?ms/);
  });
});
