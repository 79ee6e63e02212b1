/**
 * Finding constructors that read the environment.
 *
 * getenv() makes no syscall, and a constructor that only looks at a variable
 * (p11-kit's P11_KIT_STRICT, OpenSSL's OPENSSL_ia32cap, nettle's
 * NETTLE_FAT_VERBOSE, measured here) leaves the same memory whether the
 * variable is set or not when the snapshot environment does not have it, so
 * the differential comparison cannot see it either. A restored process would
 * then behave as if the caller had the snapshot's environment.
 *
 * So in the differential runs, once the loader has read its own variables
 * (LD_*, GLIBC_TUNABLES: at the first path syscall it has, as it looks for
 * /etc/ld.so.preload and libraries only after that), every envp[i] is pointed
 * at its own address inside an inaccessible mapping. Any read of a variable
 * after that faults, and the fault address names the variable. The real run
 * is left alone. A fault by the loader itself would mean that assumption is
 * wrong, and refuses as well: never silently.
 *
 * Lookups through getenv are traced instead (lookups.ts): the trap is lifted
 * (disarm) for exactly the duration of each call and put back (rearm) when
 * it returns, so a lookup sees the real environment and names its variable,
 * while code that walks `environ` itself still faults here.
 */
import * as fs from 'node:fs';
import * as L from '../sys/libc.js';
import { SnapshotRefusal } from './refusal.js';
import { readMem } from './mem.js';
import { PAGE } from './capture.js';
import { NR } from './syscalls.js';
import { ARCH } from './tracer-arch.js';

const PROT_NONE = 0;
const MAP_PRIVATE = 0x02;
const MAP_ANONYMOUS = 0x20;
const MAP_FIXED_NOREPLACE = 0x100000;
/** Bytes of trap space per variable: the fault address divided by this is the variable's index. */
const SLOT_BYTES = 64n;
/**
 * Where the trap goes: far below everything an ASLR-off process maps near the
 * top of the address space, and above the program's own low addresses, so
 * nothing the runs compare moves. Tried in order (MAP_FIXED_NOREPLACE fails
 * rather than replace anything).
 */
const TRAP_ADDRESSES = [0x3e0000000000n, 0x2e0000000000n, 0x1e0000000000n];

export class EnvironmentTrap {
  private trap: { start: bigint; end: bigint } | undefined;
  /** envp[i] as the kernel set them, while the trap is lifted. */
  private real: Buffer | undefined;
  private lifted = false;

  constructor(
    /** &envp[0] on the initial stack. */
    private readonly envpAddr: bigint,
    /** The variables in envp order (NAME=value). */
    private readonly envp: readonly string[],
  ) {}

  /** Reads envp's position from the initial stack at the exec stop (rsp -> argc, argv..., NULL, envp...). */
  static atExec(mem: number, rsp: bigint, envp: readonly string[]): EnvironmentTrap {
    const argc = readMem(mem, rsp, 8).readBigUInt64LE(0);
    const envpAddr = rsp + 8n + (argc + 1n) * 8n;
    for (let i = 0; i <= envp.length; i++) {
      const v = readMem(mem, envpAddr + BigInt(i) * 8n, 8).readBigUInt64LE(0);
      if ((v === 0n) !== (i === envp.length)) throw new SnapshotRefusal('internal', 'the initial stack does not hold the environment given');
    }
    return new EnvironmentTrap(envpAddr, envp);
  }

  get armed(): boolean {
    return this.trap !== undefined;
  }

  /** The trap mapping, which no comparison may include. */
  get range(): { start: bigint; end: bigint } | undefined {
    return this.trap;
  }

  /**
   * At a syscall-entry stop: maps the trap with a syscall run in place of
   * this one (which is then re-executed) and points every envp[i] into it.
   */
  arm(pid: number, mem: number, deadline: number): void {
    if (this.trap) return;
    const page = BigInt(PAGE); // the trap's end must be the mapping's: whole pages of this kernel
    const len = ((BigInt(this.envp.length) * SLOT_BYTES + page - 1n) / page || 1n) * page;
    for (const want of TRAP_ADDRESSES) {
      const got = injectSyscall(pid, mem, deadline, NR.mmap, [want, len, BigInt(PROT_NONE),
        BigInt(MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE), -1n, 0n]);
      if (got === want) {
        this.trap = { start: want, end: want + len };
        break;
      }
    }
    if (!this.trap) throw new SnapshotRefusal('internal', 'no room for the environment trap');
    this.real = readMem(mem, this.envpAddr, this.envp.length * 8);
    this.point(mem, this.trapPointers());
  }

  /** Gives envp its real pointers back, while a traced lookup runs. */
  disarm(mem: number): void {
    if (!this.trap || this.lifted) return;
    this.point(mem, this.real as Buffer);
    this.lifted = true;
  }

  /** Points envp into the trap again once the lookup returned. */
  rearm(mem: number): void {
    if (!this.trap || !this.lifted) return;
    this.point(mem, this.trapPointers());
    this.lifted = false;
  }

  private trapPointers(): Buffer {
    const start = (this.trap as { start: bigint }).start;
    const pointers = Buffer.alloc(this.envp.length * 8);
    this.envp.forEach((_, i) => pointers.writeBigUInt64LE(start + BigInt(i) * SLOT_BYTES, i * 8));
    return pointers;
  }

  private point(mem: number, pointers: Buffer): void {
    if (pointers.length && fs.writeSync(mem, pointers, 0, pointers.length, Number(this.envpAddr)) !== pointers.length) {
      throw new SnapshotRefusal('internal', 'cannot redirect the environment');
    }
  }

  /** The variable a fault at addr read, or undefined when the fault is not in the trap. */
  variableAt(addr: bigint): string | undefined {
    if (!this.trap || addr < this.trap.start || addr >= this.trap.end) return undefined;
    const entry = this.envp[Number((addr - this.trap.start) / SLOT_BYTES)];
    return entry === undefined ? '(past the environment)' : entry.slice(0, Math.max(0, entry.indexOf('=')));
  }
}

/**
 * Runs one syscall in the tracee in place of the one it is entering, then
 * rewinds it so that its own syscall is made afterwards, unchanged. Must be
 * called at a syscall-entry stop; returns the injected call's result and
 * leaves the tracee stopped where the next PTRACE_SYSCALL re-enters the
 * original syscall.
 */
function injectSyscall(pid: number, mem: number, deadline: number, nr: number, args: bigint[]): bigint {
  const saved = ARCH.getRegs(pid);
  const insn = ARCH.syscallInsn;
  const pc = ARCH.pc(saved);
  if (!readMem(mem, pc - BigInt(insn.length), insn.length).equals(insn)) {
    throw new SnapshotRefusal('internal', `no syscall instruction before 0x${pc.toString(16)}`);
  }
  ARCH.replaceSyscall(pid, saved, nr, args);
  L.ptrace(L.PTRACE_SYSCALL, pid, 0, 0);
  const st = L.waitpidUntil(pid, deadline);
  if (!st || !st.stopped || st.stopSig !== (L.SIGTRAP | 0x80)) {
    throw new SnapshotRefusal('internal', 'the injected syscall did not stop at its exit');
  }
  const info = L.getSyscallInfo(pid);
  if (info.op !== L.SYSCALL_INFO_EXIT) throw new SnapshotRefusal('internal', 'the injected syscall did not stop at its exit');
  ARCH.reenterSyscall(pid, saved);
  return BigInt.asUintN(64, info.rval);
}
