/**
 * Which environment variables a traced process looks up, seen at the lookup
 * functions themselves: a breakpoint (int3, brk #0) on each entry point (getenv, secure_getenv;
 * a program's own, like bash's find_variable) found in the dynamic symbol
 * table of every executable file the process maps, as it maps them.
 *
 * On a hit the tracer reads the name (the first argument), takes the int3
 * out so the function runs unchanged, and plants one on the return address
 * (on the stack on x86_64, in x30 on aarch64); when that fires it reads the
 * result (for getenv: the value, or NULL) and puts the entry's breakpoint
 * back. Hooks around the call let the caller lift the
 * environment trap (envtrap.ts) for exactly the duration of a lookup, so a
 * lookup sees the real environment while any other read of it still faults.
 *
 * Scanning `environ` reads every entry and says nothing about which ones
 * matter; a lookup names its variable. That is what an image can be keyed on.
 */
import * as fs from 'node:fs';
import type { ImageEnvDep } from '../image/format.js';
import { dependency, describeDependency } from '../cache/envdeps.js';
import { LOADER_VARS } from './env.js';
import { definedFunctions } from './elfsym.js';
import { readCString, readMem } from './mem.js';
import { SnapshotRefusal } from './refusal.js';
import type { RegFile } from './regs.js';
import { ARCH } from './tracer-arch.js';

/** Longest value read back: longer ones are hashed from the environment itself, which holds the same bytes. */
const MAX_VALUE = 1 << 20;

/**
 * A lookup entry point: `value` functions return the variable's value (a C
 * string or NULL), `name` functions look a variable up in some other form
 * (bash's shell variables), `assign` functions set or unset one (counted
 * from the init's start only: bash imports the environment through them),
 * `prefix` functions list the variables whose names start with their
 * argument, `all` functions walk every variable.
 */
export interface LookupFunction {
  name: string;
  kind: 'value' | 'name' | 'assign' | 'prefix' | 'all';
}

/** The C library's: every program's constructors look variables up through these. */
export const LIBC_LOOKUPS: readonly LookupFunction[] = [
  { name: 'getenv', kind: 'value' },
  { name: 'secure_getenv', kind: 'value' },
];

/**
 * bash's own, which it exports for loadable builtins: every variable an rc
 * file reads, assigns or unsets goes through one of the `name` functions
 * (bash imports the environment into its variable table at start-up, so the
 * init never calls getenv), and every listing of variables (declare -p,
 * ${!prefix@}, compgen -v, the environment of a command it runs) goes through
 * one of the `all` functions, or all_variables_matching_prefix for
 * ${!prefix@}. (Building the environment of a command bash runs walks the
 * exported variables through map_over too; such an init runs other programs,
 * which binds the image to the whole environment anyway.)
 */
export const BASH_LOOKUPS: readonly LookupFunction[] = [
  // Every one of these takes the variable's name as its first argument (bash 5.2's variables.h, arrayfunc.h).
  ...['find_variable', 'find_variable_noref', 'find_global_variable', 'find_global_variable_noref', 'find_variable_tempenv',
    'find_variable_notempenv', 'find_variable_for_assignment', 'find_variable_last_nameref', 'find_variable_nameref_for_create',
    'find_shell_variable', 'find_tempenv_variable', 'find_variable_no_invisible', 'find_variable_nameref_for_assignment',
    'find_global_variable_last_nameref', 'find_or_make_array_variable'].map((name) => ({ name, kind: 'name' as const })),
  // Assignments and unsets: a plain NAME=value goes to bind_variable without a lookup.
  ...['bind_variable', 'bind_global_variable', 'bind_int_variable', 'bind_var_to_int', 'bind_array_variable',
    'builtin_bind_variable', 'builtin_bind_var_to_int', 'assign_array_from_string', 'unbind_variable', 'unbind_variable_noref',
    'unbind_global_variable', 'unbind_global_variable_noref', 'unbind_nameref', 'makunbound', 'set_var_read_only',
    'set_var_attribute'].map((name) => ({ name, kind: 'assign' as const })),
  { name: 'all_variables_matching_prefix', kind: 'prefix' },
  ...['all_shell_variables', 'all_exported_variables', 'all_visible_variables'].map((name) => ({ name, kind: 'all' as const })),
];

export interface EnvLookup {
  /** The variable's name; '*' for a function that walks every variable. */
  name: string;
  /** What a `value` lookup returned (null: not set); undefined for other kinds. */
  value?: string | null;
  /** The function and file it was made through, for notes. */
  via: string;
  /**
   * Announced by the program (resume protocol): only whether it is set, or
   * every variable whose name starts with `name`; 'init' marks where the init
   * starts (no variable: assignments before it are the start-up's).
   */
  form?: 'presence' | 'prefix' | 'init';
  /** Made by an `assign` function: the variable was set or unset. */
  assign?: true;
}

/**
 * The resume protocol's announcements (docs/resume-protocol.md): before its
 * checkpoint an init may name a variable it read through means no tracer
 * sees (a language's own copy of the environment) by probing
 * /proc/self/fd/N/env/NAME (N the resume fd; the probe fails with ENOTDIR
 * and changes nothing). NAME* names a prefix, * the whole environment;
 * /proc/self/fd/N/env-set/NAME says only whether it is set matters;
 * /proc/self/fd/N/init marks the start of the init (an interpreter's own
 * start-up assigns every variable it imports, which is no dependency).
 */
export function announcement(path: string, resumeFd: number): EnvLookup | null {
  const base = `/proc/self/fd/${resumeFd}/`;
  if (!path.startsWith(base)) return null;
  const rest = path.slice(base.length);
  if (rest === 'init') return { name: '', via: 'announced by the program', form: 'init' };
  const slash = rest.indexOf('/');
  if (slash < 0) return null;
  const kind = rest.slice(0, slash);
  const name = rest.slice(slash + 1);
  if (!name || name.includes('/') || name.includes('=')) return null;
  const via = 'announced by the program';
  if (kind === 'env-set') return name.includes('*') ? null : { name, via, form: 'presence' };
  if (kind !== 'env') return null;
  if (name === '*') return { name, via };
  if (name.endsWith('*')) return name.length > 1 && !name.slice(0, -1).includes('*') ? { name: name.slice(0, -1), via, form: 'prefix' } : null;
  return name.includes('*') ? null : { name, via };
}

interface Entry {
  fn: LookupFunction;
  file: string;
  /** The code the breakpoint replaces. */
  bytes: Buffer;
  planted: boolean;
}

interface Call {
  entry: bigint;
  ret: bigint;
  /** sp once the call returned (x86_64: 8 above sp at the entry, the popped return address). */
  spAfter: bigint;
  name: string;
}

interface ExecMapping { start: bigint; end: bigint; offset: bigint; path: string; key: string }

function executableMappings(pid: number): ExecMapping[] {
  const out: ExecMapping[] = [];
  for (const line of fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s+(\/.*)$/.exec(line);
    if (!m || (m[3] as string)[2] !== 'x' || m[6] === '0') continue;
    out.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), offset: BigInt(`0x${m[4]}`), path: m[7] as string, key: `${m[5]}:${m[6]}:${m[7]}` });
  }
  return out;
}

export interface LookupHooks {
  /** A lookup starts (the outermost, when they nest). */
  enter?: () => void;
  /** The outermost lookup returned. */
  leave?: () => void;
}

export class LookupTracer {
  readonly lookups: EnvLookup[] = [];
  private readonly entries = new Map<bigint, Entry>();
  private readonly returns = new Map<bigint, { bytes: Buffer; users: number }>();
  private readonly calls: Call[] = [];
  private readonly scanned = new Set<string>();
  private readonly byName: Map<string, LookupFunction>;

  constructor(
    private readonly pid: number,
    private readonly mem: number,
    functions: readonly LookupFunction[],
    private readonly hooks: LookupHooks = {},
  ) {
    this.byName = new Map(functions.map((f) => [f.name, f]));
  }

  /** A lookup is running: its entry int3 is out and its return int3 in. */
  get calling(): boolean {
    return this.calls.length > 0;
  }

  /**
   * Plants int3s in executable file mappings not seen before. Call at the
   * exec stop and after every mmap that maps code: the loader maps a
   * library before it runs any of it.
   */
  scan(): void {
    const maps = executableMappings(this.pid);
    for (const m of maps) {
      if (this.scanned.has(m.key)) continue;
      this.scanned.add(m.key);
      for (const fn of definedFunctions(m.path, new Set(this.byName.keys()))) {
        // Every executable mapping of this file was listed: the function lies in one of them.
        const home = maps.find((x) => x.key === m.key && fn.fileOffset >= x.offset &&
          fn.fileOffset < x.offset + (x.end - x.start));
        if (!home) continue;
        const addr = home.start + (fn.fileOffset - home.offset);
        if (this.entries.has(addr)) continue; // an alias (secure_getenv, __libc_secure_getenv)
        const bytes = readMem(this.mem, addr, ARCH.breakpoint.length);
        this.entries.set(addr, { fn: this.byName.get(fn.name) as LookupFunction, file: m.path, bytes, planted: false });
        this.plant(addr);
      }
    }
  }

  /**
   * Handles a SIGTRAP stop if it is one of ours (true): an entry or a return.
   * The tracee is left ready to continue.
   */
  onTrap(): boolean {
    const regs = ARCH.getRegs(this.pid);
    const at = ARCH.breakpointAddress(ARCH.pc(regs));
    const entry = this.entries.get(at);
    if (entry?.planted) {
      this.enter(at, entry, regs);
      return true;
    }
    if (this.returns.has(at)) {
      this.leave(at, regs);
      return true;
    }
    return false;
  }

  /**
   * Takes the entry int3s out while a fork copies the address space (the
   * child would die on one: it is not traced for lookups) and puts them back.
   * Forks never happen inside a lookup.
   */
  suspend(): void {
    for (const [addr, e] of this.entries) if (e.planted) this.write(addr, e.bytes);
  }

  unsuspend(): void {
    for (const [addr, e] of this.entries) if (e.planted) this.write(addr, ARCH.breakpoint);
  }

  /** Adds what the program announced, in order with its lookups. */
  note(l: EnvLookup): void {
    this.lookups.push(l);
  }

  /** Takes every int3 out (at the entry point, or before the tracee is captured). */
  removeAll(): void {
    if (this.calls.length) throw new SnapshotRefusal('internal', `stopped inside a lookup of ${this.calls[0]?.name}`);
    for (const [addr, e] of this.entries) {
      if (e.planted) this.write(addr, e.bytes);
      e.planted = false;
    }
  }

  private enter(at: bigint, entry: Entry, regs: RegFile): void {
    let name: string;
    try {
      name = entry.fn.kind === 'all' ? '*' : readCString(this.mem, ARCH.callArg(regs, 0), 4096);
    } catch {
      throw new SnapshotRefusal('internal', `${entry.fn.name}() called with an unreadable name`);
    }
    const ret = ARCH.returnAddress(this.mem, regs);
    this.write(at, entry.bytes);
    entry.planted = false;
    const r = this.returns.get(ret);
    if (r) r.users++;
    else {
      this.returns.set(ret, { bytes: readMem(this.mem, ret, ARCH.breakpoint.length), users: 1 });
      this.write(ret, ARCH.breakpoint);
    }
    this.calls.push({ entry: at, ret, spAfter: ARCH.spAfterReturn(ARCH.sp(regs)), name });
    if (this.calls.length === 1) this.hooks.enter?.();
    ARCH.setPc(regs, at);
    ARCH.setRegs(this.pid, regs);
  }

  private leave(at: bigint, regs: RegFile): void {
    const call = this.calls.at(-1);
    if (!call || call.ret !== at || ARCH.sp(regs) !== call.spAfter) {
      throw new SnapshotRefusal('internal', `a lookup's return address 0x${at.toString(16)} was reached another way`);
    }
    this.calls.pop();
    const entry = this.entries.get(call.entry) as Entry;
    const lookup: EnvLookup = {
      name: call.name, via: `${entry.fn.name} in ${entry.file}`,
      ...(entry.fn.kind === 'prefix' ? { form: 'prefix' as const } : {}), ...(entry.fn.kind === 'assign' ? { assign: true as const } : {}),
    };
    if (entry.fn.kind === 'value') lookup.value = ARCH.result(regs) === 0n ? null : readCString(this.mem, ARCH.result(regs), MAX_VALUE);
    this.lookups.push(lookup);
    const r = this.returns.get(at) as { bytes: Buffer; users: number };
    if (--r.users === 0) {
      this.write(at, r.bytes);
      this.returns.delete(at);
    }
    if (!this.calls.some((c) => c.entry === call.entry)) this.plant(call.entry);
    if (this.calls.length === 0) this.hooks.leave?.();
    ARCH.setPc(regs, at);
    ARCH.setRegs(this.pid, regs);
  }

  private plant(addr: bigint): void {
    const e = this.entries.get(addr) as Entry;
    this.write(addr, ARCH.breakpoint);
    e.planted = true;
  }

  private write(addr: bigint, bytes: Buffer): void {
    if (fs.writeSync(this.mem, bytes, 0, bytes.length, Number(addr)) !== bytes.length) {
      throw new SnapshotRefusal('internal', `cannot write tracee memory at 0x${addr.toString(16)}`);
    }
  }
}

/** More variables than this looked up: the image is bound to the whole environment instead (a list that long keys nearly as much). */
export const MAX_ENV_DEPS = 200;

/**
 * The dependencies a list of lookups gives, in the order first looked up:
 * each name with what `env` (the snapshot's environment as the caller gave
 * it) has for it. The loader's own variables are left out: a run that sets
 * one bypasses the cache. Returns null when there are too many to list.
 * A lookup that saw another value than `env` has is a refusal: the image
 * would be keyed on something the process did not see.
 */
export function lookupDependencies(lookups: readonly EnvLookup[], env: NodeJS.ProcessEnv,
  ignore: (name: string) => boolean = () => false): ImageEnvDep[] | null {
  if (lookups.some((l) => l.name === '*')) return null; // something listed every variable
  const counted = lookups.filter((l) => l.form !== 'init');
  const prefixes = [...new Set(counted.filter((l) => l.form === 'prefix').map((l) => l.name))];
  const seen = new Map<string, EnvLookup>();
  for (const l of counted) {
    const key = `${l.form === 'prefix' ? '*' : ''}${l.name}`;
    const had = seen.get(key);
    // A value lookup of a name says more than "is it set": the value wins.
    if (!had || (had.form === 'presence' && l.form === undefined)) seen.set(key, l);
  }
  const deps: ImageEnvDep[] = [];
  for (const l of seen.values()) {
    const name = l.name;
    if (LOADER_VARS.test(name) || ignore(name)) continue;
    if (l.form !== 'prefix' && prefixes.some((p) => name.startsWith(p))) continue; // the prefix covers it
    if (l.value !== undefined && l.value !== (env[name] ?? null)) {
      throw new SnapshotRefusal('internal', `${l.via} returned another value for ${name} than the environment given has`);
    }
    deps.push(dependency(name, env, l.form === 'prefix' ? 'prefix' : l.form === 'presence' ? 'presence' : 'value'));
  }
  return deps.length > MAX_ENV_DEPS ? null : deps;
}

/**
 * One run's lookups that count: assignments before the init's start (the
 * 'init' announcement) are the interpreter importing the environment, not
 * the init's; everything counts when there is no such mark.
 */
export function initLookups(lookups: readonly EnvLookup[]): EnvLookup[] {
  let inInit = !lookups.some((l) => l.form === 'init');
  return lookups.filter((l) => {
    if (l.form === 'init') inInit = true;
    return l.form !== 'init' && (inInit || !l.assign);
  });
}

/** "NAME (set), OTHER (not set)" for notes. */
export function describeLookedUp(deps: readonly ImageEnvDep[]): string {
  return deps.map((d) => describeDependency(d)).join(', ');
}
