/**
 * Every launcher outcome (CX_OUTCOME_*, the schema) has words in --explain
 * and a row label in --show-stats: a new cold reason must be named where a
 * user looks for it, not shown as a bare constant.
 */
import { describe, expect, it } from 'vitest';
import { OUTCOME_TEXT } from '../../src/cli/commands/explain.js';
import { LABELS } from '../../src/cli/commands/stats.js';
import { Outcome } from '../../src/image/schema.js';

describe('outcome names', () => {
  const names = Object.keys(Outcome);
  it('the schema has the issue-10 reason', () => {
    expect(names).toContain('FAIL_EXE');
  });
  it('--explain words every outcome', () => {
    expect(names.filter((n) => !OUTCOME_TEXT[n])).toEqual([]);
  });
  it('--show-stats labels every cold reason', () => {
    expect(names.filter((n) => n !== 'HIT' && n !== 'MISS' && !LABELS[n])).toEqual([]);
  });
});
