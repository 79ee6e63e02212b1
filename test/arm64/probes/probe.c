/*
 * What the aarch64 port of cached-exec needs to know about the machine it runs
 * on, asked of the kernel and the CPU directly. Built static for aarch64 on the
 * host (scripts/arm64/run.mjs), run in the guest by test/arm64/smoke.sh.
 *
 *   probe [SECTION...]    sections: auxv vdso vdso-move mm-map ptrace pac brk
 *                         sve counter bti pagemap (default: all)
 *
 * Prints one "key value" line per fact; a line "FAIL what" for anything the
 * port relies on that does not hold. Exit status: number of FAIL lines.
 * Every experiment that damages its process (moving the vdso, changing PAC
 * keys) runs in a forked child.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/rseq.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/ptrace.h>

#ifndef NT_ARM_TLS
#define NT_ARM_TLS 0x401
#endif
#ifndef NT_ARM_SYSTEM_CALL
#define NT_ARM_SYSTEM_CALL 0x404
#endif
#ifndef NT_ARM_SVE
#define NT_ARM_SVE 0x405
#endif
#ifndef NT_ARM_PAC_MASK
#define NT_ARM_PAC_MASK 0x406
#endif
#ifndef NT_ARM_PACA_KEYS
#define NT_ARM_PACA_KEYS 0x407
#endif
#ifndef NT_ARM_PACG_KEYS
#define NT_ARM_PACG_KEYS 0x408
#endif
#ifndef NT_ARM_TAGGED_ADDR_CTRL
#define NT_ARM_TAGGED_ADDR_CTRL 0x409
#endif
#ifndef NT_ARM_PAC_ENABLED_KEYS
#define NT_ARM_PAC_ENABLED_KEYS 0x40a
#endif
#ifndef NT_ARM_SSVE
#define NT_ARM_SSVE 0x40b
#endif
#ifndef NT_ARM_ZA
#define NT_ARM_ZA 0x40c
#endif
#ifndef PR_PAC_RESET_KEYS
#define PR_PAC_RESET_KEYS 54
#endif
#ifndef PR_PAC_GET_ENABLED_KEYS
#define PR_PAC_GET_ENABLED_KEYS 61
#endif
#ifndef PR_SVE_GET_VL
#define PR_SVE_GET_VL 51
#endif
#ifndef PROT_BTI
#define PROT_BTI 0x10
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef AT_MINSIGSTKSZ
#define AT_MINSIGSTKSZ 51
#endif
#ifndef AT_RSEQ_FEATURE_SIZE
#define AT_RSEQ_FEATURE_SIZE 27
#endif

static int failures;

#define FACT(k, ...) (printf("%s ", k), printf(__VA_ARGS__), putchar('\n'))
#define FAIL(...) (failures++, printf("FAIL "), printf(__VA_ARGS__), putchar('\n'))

/* ---- auxv: page size and CPU features (never assume them) ---------------- */

static void auxv(void)
{
	unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
	FACT("auxv.pagesz", "%lu", getauxval(AT_PAGESZ));
	FACT("sysconf.pagesize", "%ld", sysconf(_SC_PAGESIZE));
	FACT("auxv.hwcap", "0x%lx", hw);
	FACT("auxv.hwcap2", "0x%lx", hw2);
	FACT("auxv.minsigstksz", "%lu", getauxval(AT_MINSIGSTKSZ));
	FACT("auxv.rseq_feature_size", "%lu", getauxval(AT_RSEQ_FEATURE_SIZE));
	FACT("auxv.platform", "%s", (const char *)getauxval(AT_PLATFORM));
	FACT("auxv.sysinfo_ehdr", "0x%lx", getauxval(AT_SYSINFO_EHDR));
	static const struct { const char *n; int w; int bit; } f[] = {
		{ "atomics", 1, 8 }, { "sve", 1, 22 }, { "paca", 1, 30 }, { "pacg", 1, 31 }, { "sve2", 2, 1 },
		{ "rng", 2, 16 }, { "bti", 2, 17 }, { "mte", 2, 18 }, { "ecv", 2, 19 }, { "sme", 2, 23 },
	};
	char buf[256] = "";
	for (unsigned i = 0; i < sizeof f / sizeof f[0]; i++)
		if (((f[i].w == 1 ? hw : hw2) >> f[i].bit) & 1)
			strcat(buf, f[i].n), strcat(buf, " ");
	FACT("hwcap.features", "%s", buf);
	if (getauxval(AT_PAGESZ) != (unsigned long)sysconf(_SC_PAGESIZE))
		FAIL("AT_PAGESZ differs from sysconf");
}

/* ---- vdso/vvar layout ------------------------------------------------------ */

struct vma { unsigned long lo, hi; char name[64]; };

static int special_vmas(struct vma *v, int max)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;
	while (f && fgets(line, sizeof line, f) && n < max) {
		char *b = strchr(line, '[');
		if (!b)
			continue;
		sscanf(line, "%lx-%lx", &v[n].lo, &v[n].hi);
		snprintf(v[n].name, sizeof v[n].name, "%.*s", (int)strcspn(b, "\n"), b);
		n++;
	}
	if (f)
		fclose(f);
	return n;
}

/* The vdso's exported functions, from its own dynamic symbol table. */
static unsigned long vdso_sym(unsigned long base, const char *want, char *list, size_t cap)
{
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)base;
	const Elf64_Shdr *sh = (const Elf64_Shdr *)(base + eh->e_shoff);
	unsigned long found = 0;
	for (int i = 0; i < eh->e_shnum; i++) {
		if (sh[i].sh_type != SHT_DYNSYM)
			continue;
		const Elf64_Sym *sym = (const Elf64_Sym *)(base + sh[i].sh_offset);
		const char *str = (const char *)(base + sh[sh[i].sh_link].sh_offset);
		for (unsigned j = 0; j < sh[i].sh_size / sizeof *sym; j++) {
			if (ELF64_ST_TYPE(sym[j].st_info) != STT_FUNC || !sym[j].st_value)
				continue;
			const char *nm = str + sym[j].st_name;
			if (list && strlen(list) + strlen(nm) + 2 < cap)
				strcat(list, nm), strcat(list, " ");
			if (want && !strcmp(nm, want))
				found = base + sym[j].st_value;
		}
	}
	return found;
}

static void vdso(void)
{
	struct vma v[16];
	int n = special_vmas(v, 16);
	char buf[512] = "";
	for (int i = 0; i < n; i++) {
		char one[128];
		snprintf(one, sizeof one, "%s:+0x%lx:%lu ", v[i].name, v[i].lo - getauxval(AT_SYSINFO_EHDR),
			 (v[i].hi - v[i].lo) / getauxval(AT_PAGESZ));
		strcat(buf, one);
	}
	FACT("maps.special", "%s(name:offset-from-vdso:pages)", buf);
	char syms[512] = "";
	vdso_sym(getauxval(AT_SYSINFO_EHDR), NULL, syms, sizeof syms);
	FACT("vdso.functions", "%s", syms);
}

static volatile int got_signal;
static void on_usr1(int s) { got_signal = s; }

/*
 * The launcher moves the vdso block (vvar and vdso together, offsets kept) to
 * the image's address with MREMAP_FIXED after reserving the target with
 * MAP_FIXED_NOREPLACE. On arm64 the kernel also returns from signal handlers
 * through the vdso's sigreturn trampoline (glibc sets no SA_RESTORER), so a
 * moved vdso must still be where the kernel thinks it is.
 */
static void vdso_move(void)
{
	pid_t pid = fork();
	if (pid == 0) {
		struct vma v[16], blk[4];
		int n = special_vmas(v, 16), k = 0;
		unsigned long lo = ~0ul, hi = 0;
		for (int i = 0; i < n && k < 4; i++)
			if (!strncmp(v[i].name, "[vvar", 5) || !strcmp(v[i].name, "[vdso]")) {
				blk[k++] = v[i];
				lo = v[i].lo < lo ? v[i].lo : lo;
				hi = v[i].hi > hi ? v[i].hi : hi;
			}
		unsigned long ehdr = getauxval(AT_SYSINFO_EHDR);
		unsigned long target = 0x500000000ul; /* far from everything */
		void *r = mmap((void *)target, hi - lo, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (r != (void *)target)
			_exit(10);
		for (int i = 0; i < k; i++)
			if (syscall(SYS_mremap, blk[i].lo, blk[i].hi - blk[i].lo, blk[i].hi - blk[i].lo,
				    MREMAP_MAYMOVE | MREMAP_FIXED, target + (blk[i].lo - lo)) != (long)(target + (blk[i].lo - lo)))
				_exit(11);
		unsigned long nb = target + (ehdr - lo);
		int (*cg)(clockid_t, struct timespec *) =
			(int (*)(clockid_t, struct timespec *))vdso_sym(nb, "__kernel_clock_gettime", NULL, 0);
		struct timespec a, b;
		if (!cg || cg(CLOCK_MONOTONIC, &a) != 0)
			_exit(12);
		syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &b);
		if (b.tv_sec - a.tv_sec > 1 || b.tv_sec < a.tv_sec)
			_exit(13);
		/* A handler's return goes through the (moved) vdso trampoline. */
		struct sigaction sa = { 0 };
		sa.sa_handler = on_usr1;
		sigaction(SIGUSR1, &sa, NULL);
		raise(SIGUSR1);
		_exit(got_signal == SIGUSR1 ? 0 : 14);
	}
	int st;
	waitpid(pid, &st, 0);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		FACT("vdso.move", "ok (mremap of vvar+vdso, vdso clock_gettime and a signal return after it)");
	else if (WIFEXITED(st))
		FAIL("vdso.move: step %d failed", WEXITSTATUS(st));
	else
		FAIL("vdso.move: child killed by signal %d", WTERMSIG(st));
}

/* ---- prctl(PR_SET_MM, PR_SET_MM_MAP): what the restore's trampoline uses -- */

static void mm_map(void)
{
	pid_t pid = fork();
	if (pid == 0) {
		/* Fields 26.. of /proc/self/stat: start_code end_code start_stack ... */
		char buf[4096];
		int fd = open("/proc/self/stat", O_RDONLY);
		ssize_t len = read(fd, buf, sizeof buf - 1);
		close(fd);
		buf[len > 0 ? len : 0] = 0;
		char *p = strrchr(buf, ')') + 2;
		unsigned long f[60] = { 0 };
		for (int i = 3; i <= 52 && p; i++) {
			f[i] = strtoul(p, &p, 10);
			p = strchr(p, ' ');
		}
		struct prctl_mm_map m = {
			.start_code = f[26], .end_code = f[27], .start_stack = f[28],
			.start_data = f[45], .end_data = f[46], .start_brk = f[47], .brk = (unsigned long)sbrk(0),
			.arg_start = f[48], .arg_end = f[49], .env_start = f[50], .env_end = f[51],
			.auxv = NULL, .auxv_size = 0, .exe_fd = (unsigned)-1,
		};
		unsigned size = 0;
		long r0 = prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE, &size, 0, 0);
		long r = prctl(PR_SET_MM, PR_SET_MM_MAP, &m, sizeof m, 0);
		int e = errno;
		/* exe_fd: needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN). */
		int exe = open("/proc/self/exe", O_RDONLY);
		m.exe_fd = (unsigned)exe;
		long r2 = prctl(PR_SET_MM, PR_SET_MM_MAP, &m, sizeof m, 0);
		int e2 = errno;
		printf("mm_map.size %ld/%u\nmm_map.set %s\nmm_map.set_exe_fd %s\n", r0, size,
		       r == 0 ? "ok" : strerror(e), r2 == 0 ? "ok" : strerror(e2));
		_exit(r == 0 ? 0 : 1);
	}
	int st;
	fflush(stdout);
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		FAIL("mm_map: PR_SET_MM_MAP refused (uid %d)", getuid());
}

/* ---- ptrace: register sets ----------------------------------------------- */

static long getregset(pid_t pid, int type, void *buf, size_t len)
{
	struct iovec io = { buf, len };
	if (ptrace(PTRACE_GETREGSET, pid, (void *)(long)type, &io) < 0)
		return -errno;
	return (long)io.iov_len;
}

static long setregset(pid_t pid, int type, void *buf, size_t len)
{
	struct iovec io = { buf, len };
	return ptrace(PTRACE_SETREGSET, pid, (void *)(long)type, &io) < 0 ? -errno : 0;
}

/* A traced child, stopped by SIGSTOP; tls written to the pipe before that. */
static pid_t traced_child(void (*body)(int wfd, int rfd), int *to_child, int *from_child)
{
	int p1[2], p2[2];
	if (pipe(p1) || pipe(p2))
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		close(p1[1]), close(p2[0]);
		ptrace(PTRACE_TRACEME, 0, 0, 0);
		body(p2[1], p1[0]);
		_exit(0);
	}
	close(p1[0]), close(p2[1]);
	*to_child = p1[1], *from_child = p2[0];
	return pid;
}

static void regs_body(int wfd, int rfd)
{
	(void)rfd;
	unsigned long tp;
	__asm__ volatile("mrs %0, tpidr_el0" : "=r"(tp));
	write(wfd, &tp, sizeof tp);
	raise(SIGSTOP);
}

static void ptrace_sets(void)
{
	int to, from, st;
	pid_t pid = traced_child(regs_body, &to, &from);
	unsigned long tp = 0;
	read(from, &tp, sizeof tp);
	waitpid(pid, &st, 0);
	unsigned char buf[1 << 16];
	static const struct { const char *n; int t; } sets[] = {
		{ "NT_PRSTATUS", NT_PRSTATUS }, { "NT_PRFPREG", NT_PRFPREG }, { "NT_ARM_TLS", NT_ARM_TLS },
		{ "NT_ARM_SYSTEM_CALL", NT_ARM_SYSTEM_CALL }, { "NT_ARM_SVE", NT_ARM_SVE },
		{ "NT_ARM_PAC_MASK", NT_ARM_PAC_MASK }, { "NT_ARM_PACA_KEYS", NT_ARM_PACA_KEYS },
		{ "NT_ARM_PACG_KEYS", NT_ARM_PACG_KEYS }, { "NT_ARM_TAGGED_ADDR_CTRL", NT_ARM_TAGGED_ADDR_CTRL },
		{ "NT_ARM_PAC_ENABLED_KEYS", NT_ARM_PAC_ENABLED_KEYS }, { "NT_ARM_SSVE", NT_ARM_SSVE },
		{ "NT_ARM_ZA", NT_ARM_ZA },
	};
	for (unsigned i = 0; i < sizeof sets / sizeof sets[0]; i++) {
		long r = getregset(pid, sets[i].t, buf, sizeof buf);
		char key[64];
		snprintf(key, sizeof key, "regset.%s", sets[i].n);
		if (r < 0)
			FACT(key, "error %s", strerror((int)-r));
		else
			FACT(key, "%ld bytes", r);
	}
	unsigned long tls[2] = { 0 };
	long r = getregset(pid, NT_ARM_TLS, tls, sizeof tls);
	if (r < 8 || tls[0] != tp)
		FAIL("NT_ARM_TLS does not give the child's tpidr_el0 (0x%lx vs 0x%lx)", tls[0], tp);
	else
		FACT("regset.tls_matches_tpidr_el0", "yes");
	uint64_t mask[2];
	if (getregset(pid, NT_ARM_PAC_MASK, mask, sizeof mask) == 16)
		FACT("pac.mask", "data 0x%016llx insn 0x%016llx", (unsigned long long)mask[0], (unsigned long long)mask[1]);
	/* SVE: user_sve_header (size, max_size, vl, max_vl, flags). */
	struct { uint32_t size, max_size; uint16_t vl, max_vl, flags, reserved; } sh;
	if (getregset(pid, NT_ARM_SVE, &sh, sizeof sh) >= (long)sizeof sh)
		FACT("sve.header", "vl %u bytes, max_vl %u, full regset %u bytes (max %u), flags 0x%x (%s)", sh.vl, sh.max_vl,
		     sh.size, sh.max_size, sh.flags, (sh.flags & 1) ? "SVE live" : "FPSIMD only");
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	close(to), close(from);
}

/* ---- PAC: keys readable and writable by a tracer, and what a wrong key does - */

static uint64_t pacia(uint64_t p, uint64_t mod)
{
	__asm__ volatile(".arch_extension pauth\n pacia %0, %1" : "+r"(p) : "r"(mod));
	return p;
}

static uint64_t autia(uint64_t p, uint64_t mod)
{
	__asm__ volatile(".arch_extension pauth\n autia %0, %1" : "+r"(p) : "r"(mod));
	return p;
}

/*
 * 16 signatures of one pointer with 16 modifiers: with few PAC bits (3 on a
 * 52-bit VA kernel) one signature under another key collides 1 time in 8; all
 * 16 practically never.
 */
#define NPAC 16

static void pac_body(int wfd, int rfd)
{
	/* Sign each time the tracer asks; it changes our keys in between. */
	raise(SIGSTOP);
	for (char c; read(rfd, &c, 1) == 1;) {
		uint64_t s[NPAC];
		for (int i = 0; i < NPAC; i++)
			s[i] = pacia((uint64_t)&pac_body, 0x1234 + 16 * i);
		write(wfd, s, sizeof s);
		raise(SIGSTOP);
	}
}

static void pac_round(pid_t pid, int to, int from, uint64_t *s)
{
	int st;
	ptrace(PTRACE_CONT, pid, 0, 0);
	write(to, "x", 1);
	read(from, s, NPAC * sizeof *s);
	waitpid(pid, &st, 0);
}

static void pac(void)
{
	if (!(getauxval(AT_HWCAP) & (1ul << 30))) {
		FACT("pac", "not supported by this CPU");
		return;
	}
	FACT("pac.enabled_keys", "0x%x", prctl(PR_PAC_GET_ENABLED_KEYS, 0, 0, 0, 0));
	int to, from, st;
	pid_t pid = traced_child(pac_body, &to, &from);
	waitpid(pid, &st, 0); /* the body's first SIGSTOP */
	uint64_t s1[NPAC], s2[NPAC], s3[NPAC];
	pac_round(pid, to, from, s1);
	unsigned char keys[64], other[64];
	long r = getregset(pid, NT_ARM_PACA_KEYS, keys, sizeof keys);
	if (r != 64) {
		FAIL("NT_ARM_PACA_KEYS not readable: %s", r < 0 ? strerror((int)-r) : "short");
	} else {
		memcpy(other, keys, 64);
		other[0] ^= 0x5a; /* the APIA key */
		long w = setregset(pid, NT_ARM_PACA_KEYS, other, 64);
		pac_round(pid, to, from, s2);
		setregset(pid, NT_ARM_PACA_KEYS, keys, 64);
		pac_round(pid, to, from, s3);
		int differs = memcmp(s1, s2, sizeof s1) != 0, again = memcmp(s1, s3, sizeof s1) == 0;
		FACT("pac.keys_via_ptrace", "read ok, write %s; %d signatures with another APIA key %s, with the keys put back %s",
		     w ? strerror((int)-w) : "ok", NPAC, differs ? "differ" : "ALL THE SAME", again ? "equal again" : "DIFFERENT");
		if (w || !differs || !again)
			FAIL("PAC keys cannot be re-created through ptrace");
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	close(to), close(from);

	/* Authenticating with the wrong modifier: a fault at once (FEAT_FPAC) or a poisoned pointer. */
	pid = fork();
	if (pid == 0) {
		uint64_t p = (uint64_t)&pac_body, s = pacia(p, 1), a = autia(s, 2);
		_exit(a == p ? 1 : 0);
	}
	waitpid(pid, &st, 0);
	if (WIFSIGNALED(st))
		FACT("pac.wrong_key", "fault at authentication (FEAT_FPAC): signal %d", WTERMSIG(st));
	else
		FACT("pac.wrong_key", "%s", WEXITSTATUS(st) == 0 ? "poisoned pointer (no FPAC): the fault comes at the branch"
								  : "AUTHENTICATED (PAC not enforced?)");
}

/* ---- brk: the breakpoint instruction the snapshotter writes -------------- */

extern char probe_brk_insn[];

static void brk_body(int wfd, int rfd)
{
	(void)wfd, (void)rfd;
	raise(SIGSTOP);
	__asm__ volatile(".globl probe_brk_insn\nprobe_brk_insn: brk #0\n");
	_exit(0);
}

static void brk_stop(void)
{
	int to, from, st;
	pid_t pid = traced_child(brk_body, &to, &from);
	waitpid(pid, &st, 0);
	ptrace(PTRACE_CONT, pid, 0, 0);
	waitpid(pid, &st, 0);
	struct user_pt_regs regs;
	long r = getregset(pid, NT_PRSTATUS, &regs, sizeof regs);
	if (!WIFSTOPPED(st) || WSTOPSIG(st) != SIGTRAP || r != sizeof regs) {
		FAIL("brk #0 did not stop the tracee with SIGTRAP");
	} else {
		FACT("brk.stop_pc", "%s (pc 0x%llx, insn at %p): the tracer must step pc by 4 itself",
		     regs.pc == (uint64_t)probe_brk_insn ? "at the brk instruction" : "ELSEWHERE", regs.pc, probe_brk_insn);
		/* Continue past it, as the snapshotter does after restoring the word. */
		regs.pc += 4;
		setregset(pid, NT_PRSTATUS, &regs, sizeof regs);
		ptrace(PTRACE_CONT, pid, 0, 0);
		waitpid(pid, &st, 0);
		FACT("brk.resume", "%s", WIFEXITED(st) && !WEXITSTATUS(st) ? "ok" : "FAILED");
	}
	if (!WIFEXITED(st))
		kill(pid, SIGKILL), waitpid(pid, &st, 0);
	close(to), close(from);
}

/* ---- syscall stops: number, changing it, PTRACE_GET_SYSCALL_INFO --------- */

static void sys_body(int wfd, int rfd)
{
	(void)rfd;
	raise(SIGSTOP);
	long r = syscall(SYS_getppid);
	write(wfd, &r, sizeof r);
	_exit(0);
}

static void syscalls(void)
{
	int to, from, st;
	pid_t pid = traced_child(sys_body, &to, &from);
	waitpid(pid, &st, 0);
	ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESYSGOOD);
	int changed = 0;
	for (int i = 0; i < 20 && !changed; i++) {
		ptrace(PTRACE_SYSCALL, pid, 0, 0);
		waitpid(pid, &st, 0);
		if (!WIFSTOPPED(st) || WSTOPSIG(st) != (SIGTRAP | 0x80))
			break;
		struct ptrace_syscall_info info;
		long n = ptrace(PTRACE_GET_SYSCALL_INFO, pid, sizeof info, &info);
		if (n > 0 && info.op == PTRACE_SYSCALL_INFO_ENTRY && info.entry.nr == SYS_getppid) {
			int nr = SYS_getpid; /* turn getppid into getpid: the way the snapshotter rewrites calls */
			long w = setregset(pid, NT_ARM_SYSTEM_CALL, &nr, sizeof nr);
			FACT("syscall.info", "entry nr %llu (getppid), arch 0x%x", (unsigned long long)info.entry.nr, info.arch);
			FACT("syscall.rewrite_via_NT_ARM_SYSTEM_CALL", "%s", w ? strerror((int)-w) : "ok");
			changed = 1;
		}
	}
	ptrace(PTRACE_CONT, pid, 0, 0);
	long got = 0;
	read(from, &got, sizeof got);
	waitpid(pid, &st, 0);
	FACT("syscall.rewritten_result", "%s", got == pid ? "getpid's (the rewrite took effect)" : "NOT the rewritten call's");
	if (got != pid)
		FAIL("syscall rewrite through NT_ARM_SYSTEM_CALL");
	close(to), close(from);
}

/* ---- the counter user space reads without a syscall ---------------------- */

static void counter(void)
{
	uint64_t f, a, b;
	__asm__ volatile("mrs %0, cntfrq_el0" : "=r"(f));
	__asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(a));
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	__asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(b));
	FACT("counter.cntfrq_el0", "%llu Hz", (unsigned long long)f);
	FACT("counter.cntvct_el0", "readable at EL0, advanced %llu ticks around a vdso clock_gettime", (unsigned long long)(b - a));
	/* Linux 6.12 implements PR_SET_TSC on arm64 (EL0 counter reads trap): try it in a child. */
	pid_t pid = fork();
	if (pid == 0) {
		if (prctl(PR_SET_TSC, PR_TSC_SIGSEGV, 0, 0, 0))
			_exit(errno == EINVAL ? 10 : 11);
		struct timespec t2;
		clock_gettime(CLOCK_MONOTONIC, &t2); /* the vdso must fall back to the syscall, not fault */
		uint64_t c;
		__asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(c));
		_exit(12); /* the read was not trapped */
	}
	int st;
	waitpid(pid, &st, 0);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 10)
		FACT("counter.trap", "prctl(PR_SET_TSC) EINVAL: this kernel cannot trap cntvct_el0 reads");
	else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV)
		FACT("counter.trap", "PR_TSC_SIGSEGV works: vdso clock_gettime still fine, a cntvct_el0 read is SIGSEGV");
	else
		FACT("counter.trap", "PR_SET_TSC accepted but %s (status 0x%x)", WIFEXITED(st) && WEXITSTATUS(st) == 12 ? "the read was NOT trapped" : "unexpected", st);
}

/* ---- BTI: guarded pages, PROT_BTI for the launcher's mmaps --------------- */

static void bti(void)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512], cur[512] = "";
	int guarded = 0, exec = 0;
	while (f && fgets(line, sizeof line, f)) {
		if (strchr(line, '-') && strstr(line, " r-xp "))
			exec = 1, snprintf(cur, sizeof cur, "%s", line);
		else if (strchr(line, '-') && line[0] != 'V')
			exec = 0;
		if (exec && !strncmp(line, "VmFlags:", 8) && strstr(line, " bt"))
			guarded++;
	}
	if (f)
		fclose(f);
	FACT("bti.guarded_exec_mappings_of_this_probe", "%d", guarded);
	void *p = mmap(NULL, 4096 * 4, PROT_READ | PROT_EXEC | PROT_BTI, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	FACT("bti.mmap_prot_bti", "%s", p == MAP_FAILED ? strerror(errno) : "ok");
	if (p != MAP_FAILED)
		munmap(p, 4096 * 4);
}

/* ---- pagemap: how the snapshotter classifies pages ----------------------- */

static void pagemap(void)
{
	static char page[1 << 16];
	page[0] = 1;
	int fd = open("/proc/self/pagemap", O_RDONLY);
	uint64_t e = 0;
	long ps = sysconf(_SC_PAGESIZE);
	if (fd < 0 || pread(fd, &e, 8, ((uintptr_t)page / ps) * 8) != 8) {
		FAIL("pagemap not readable: %s", strerror(errno));
		return;
	}
	close(fd);
	FACT("pagemap.written_page", "present %d, exclusive %d, soft-dirty %d, pfn %s", (int)(e >> 63), (int)((e >> 56) & 1),
	     (int)((e >> 55) & 1), (e & ((1ull << 55) - 1)) ? "shown" : "hidden");
	FACT("rseq", "registered by glibc: __rseq_size %u, __rseq_offset %td from the thread pointer", __rseq_size, __rseq_offset);
}

int main(int argc, char **argv)
{
	static const struct { const char *n; void (*f)(void); } all[] = {
		{ "auxv", auxv }, { "vdso", vdso }, { "vdso-move", vdso_move }, { "mm-map", mm_map },
		{ "ptrace", ptrace_sets }, { "pac", pac }, { "brk", brk_stop }, { "syscalls", syscalls },
		{ "counter", counter }, { "bti", bti }, { "pagemap", pagemap },
	};
	setvbuf(stdout, NULL, _IOLBF, 0);
	alarm(60); /* a hung experiment ends the probe (SIGALRM, a failure), not the guest run */
	for (unsigned i = 0; i < sizeof all / sizeof all[0]; i++) {
		int on = argc < 2;
		for (int j = 1; j < argc; j++)
			on |= !strcmp(argv[j], all[i].n);
		if (on)
			all[i].f();
	}
	return failures;
}
