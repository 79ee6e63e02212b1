/**
 * Command-line parsing for the admin commands. One command per invocation
 * (ccache style: `cached-exec --show-stats`), its operands after it, and
 * modifiers anywhere (`--json`, `--dry-run`). `--name=value` and
 * `--name value` are both accepted for commands that take one value; `--`
 * ends options so operands may start with '-'.
 */
import { CxError } from '../common/errors.js';

export type Arity = 'none' | 'one' | 'one-or-more' | 'optional' | 'any';

export interface CommandSpec {
  /** Long form, e.g. "--warm". */
  name: string;
  /** Short aliases, e.g. ["-s"]. */
  aliases?: readonly string[];
  arity: Arity;
  /** Operand placeholder for --help, e.g. "PROG...". */
  operand?: string;
  summary: string;
  /** Modifiers this command accepts besides --json. */
  modifiers?: readonly string[];
  /** Whether --json changes the output. */
  json: boolean;
  /** Hidden from --help (helper modes the launcher uses). */
  hidden?: boolean;
  /**
   * Options with a value this command accepts: "--preload" takes one
   * ("--preload X" or "--preload=X"); "--after-init" may have one ("--after-init=FILE").
   */
  options?: string[];
}

/** Options whose value may only be given inline (--after-init=FILE): alone they are flags. */
const INLINE_ONLY = new Set(['--after-init']);

export interface Parsed {
  command: CommandSpec;
  operands: string[];
  json: boolean;
  modifiers: Set<string>;
  /** Valued options given (value '' for a flag-like use of an INLINE_ONLY one). */
  options: Map<string, string>;
}

const GLOBAL_MODIFIERS = new Set(['--json']);

export function parseArgs(argv: readonly string[], specs: readonly CommandSpec[]): Parsed {
  const byName = new Map<string, CommandSpec>();
  for (const s of specs) {
    byName.set(s.name, s);
    for (const a of s.aliases ?? []) byName.set(a, s);
  }
  const allModifiers = new Set<string>(GLOBAL_MODIFIERS);
  for (const s of specs) for (const m of s.modifiers ?? []) allModifiers.add(m);

  let command: CommandSpec | undefined;
  let commandWord = '';
  const operands: string[] = [];
  const modifiers = new Set<string>();
  const options = new Map<string, string>();
  const allOptions = new Set<string>();
  for (const s of specs) for (const o of s.options ?? []) allOptions.add(o);
  let json = false;
  let endOfOptions = false;

  for (let i = 0; i < argv.length; i++) {
    const word = argv[i] as string;
    if (endOfOptions || !word.startsWith('-') || word === '-') {
      if (!command) {
        throw new CxError('usage', `'${word}' is not an option; to run a program: cached-exec PROG [ARGS...]`);
      }
      operands.push(word);
      continue;
    }
    if (word === '--') {
      endOfOptions = true;
      continue;
    }
    const eq = word.startsWith('--') ? word.indexOf('=') : -1;
    const name = eq > 0 ? word.slice(0, eq) : word;
    const inline = eq > 0 ? word.slice(eq + 1) : undefined;
    if (name === '--json' && inline === undefined) {
      json = true;
      continue;
    }
    const spec = byName.get(name);
    if (spec) {
      if (command) {
        throw new CxError('usage', `${commandWord} and ${name} cannot be combined: one command at a time`);
      }
      command = spec;
      commandWord = name;
      if (inline !== undefined) {
        if (spec.arity === 'none') throw new CxError('usage', `${spec.name} takes no value`, { command: spec.name });
        operands.push(inline);
      } else if (spec.arity === 'one' && i + 1 < argv.length && !(argv[i + 1] as string).startsWith('--')) {
        operands.push(argv[++i] as string);
      }
      continue;
    }
    if (allModifiers.has(name) && inline === undefined) {
      modifiers.add(name);
      continue;
    }
    if (allOptions.has(name)) {
      if (inline !== undefined) options.set(name, inline);
      else if (INLINE_ONLY.has(name)) options.set(name, '');
      else if (i + 1 < argv.length) options.set(name, argv[++i] as string);
      else throw new CxError('usage', `${name} needs a value`, { reason: name });
      continue;
    }
    throw new CxError('usage', `unknown option '${name}' (see cached-exec --help)`, { reason: name });
  }
  if (!command) {
    throw new CxError('usage', 'no program or command given (usage: cached-exec PROG [ARGS...], or see cached-exec --help)');
  }
  for (const m of options.keys()) {
    if (!(command.options ?? []).includes(m)) {
      throw new CxError('usage', `${m} does not apply to ${command.name}`, { command: command.name, reason: m });
    }
  }
  for (const m of modifiers) {
    if (!(command.modifiers ?? []).includes(m)) {
      throw new CxError('usage', `${m} does not apply to ${command.name}`, { command: command.name, reason: m });
    }
  }
  const n = operands.length;
  const what = command.operand ?? 'an argument';
  if (command.arity === 'none' && n > 0) {
    throw new CxError('usage', `${command.name} takes no arguments (got '${operands[0]}')`, { command: command.name });
  }
  if (command.arity === 'one' && n !== 1) {
    throw new CxError('usage', `${command.name} needs exactly one ${what}`, { command: command.name });
  }
  if (command.arity === 'optional' && n > 1) {
    throw new CxError('usage', `${command.name} takes at most one ${what}`, { command: command.name });
  }
  if (command.arity === 'one-or-more' && n === 0) {
    throw new CxError('usage', `${command.name} needs at least one ${what}`, { command: command.name });
  }
  return { command, operands, json, modifiers, options };
}
