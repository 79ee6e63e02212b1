# The arm64 guest works: what every later arm64 suite stands on.
# Sourced by /cx-run/run.sh in the guest (POSIX sh, cwd /cx, as root) after
# scripts/arm64/guest/lib.sh; run with: npm run test:arm64
P=/cx-run/bin

check() { cx_check "$@" || CX_FAILED=$((CX_FAILED + 1)); }

arch_is_aarch64() { uname -srm && [ "$(uname -m)" = aarch64 ]; }
check uname-m arch_is_aarch64

page_size() { getconf PAGESIZE && [ "$(getconf PAGESIZE)" = "$CX_EXPECT_PAGESIZE" ]; }
check page-size page_size

cpu_features() {
	f=$(grep -m1 '^Features' /proc/cpuinfo)
	echo "$f"
	for want in paca pacg bti sve; do
		case " ${f#*:} " in *" $want "*) ;; *) echo "missing: $want"; return 1 ;; esac
	done
}
check cpu-pac-bti-sve cpu_features

userland() {
	bash -c 'echo "bash $BASH_VERSION"' && dash -c 'echo dash ok' && ls --version | head -n1 &&
		busybox | head -n1 && busybox sh -c 'echo busybox sh ok' &&
		sed --version | head -n1 && mawk -W version 2>&1 | head -n1 && grep --version | head -n1 &&
		test -x /lib/ld-musl-aarch64.so.1 && echo "musl loader /lib/ld-musl-aarch64.so.1"
}
check userland userland

musl_program() {
	out=$($P/hello 7)
	rc=$?
	echo "$out (exit $rc)"
	/lib/ld-musl-aarch64.so.1 --list $P/hello
	[ "$rc" = 7 ] && [ "$out" = "hello from musl: argc 2, HOME /root" ]
}
check musl-program musl_program

# What the loaders do before the entry point on aarch64 (the port's snapshot
# sees these syscalls; the thread pointer is set with msr tpidr_el0, no syscall).
loader_syscalls() {
	strace -o /tmp/musl.strace $P/hello 7 >/dev/null
	[ $? = 7 ] || return 1
	strace -o /tmp/glibc.strace /bin/true || return 1
	echo "before exit: musl hello $(grep -c . /tmp/musl.strace) syscalls, glibc true $(grep -c . /tmp/glibc.strace)"
	echo "-- musl"; cat /tmp/musl.strace
	echo "-- glibc"; cat /tmp/glibc.strace
	echo "-- maps of a glibc program (cat)"; cat /proc/self/maps
}
check loader-syscalls loader_syscalls

node_version() {
	v=$(node --version) && echo "$v $(node -p process.arch)" && [ "$v" = "$CX_EXPECT_NODE" ] && [ "$(node -p process.arch)" = arm64 ]
}
check node-version node_version

koffi_loads() {
	node --input-type=module -e "
		import koffi from 'koffi';
		const getpid = koffi.load('libc.so.6').func('int getpid()');
		if (getpid() !== process.pid) throw new Error('getpid through koffi: ' + getpid());
		console.log('koffi ok: getpid() through libc = process.pid =', process.pid);"
}
check koffi koffi_loads

# The project's own koffi declarations (src/sys/libc.ts), loaded on arm64.
project_libc() {
	node --input-type=module -e "const m = await import('/cx/dist/sys/libc.js'); console.log('dist/sys/libc.js loaded:', Object.keys(m).length, 'exports');"
}
check project-libc project_libc

strace_works() {
	strace -f -o /tmp/strace.out sh -c 'true' && grep -c . /tmp/strace.out | sed 's/$/ syscalls traced/' && grep -q '^[0-9]* *execve' /tmp/strace.out
}
check ptrace-strace strace_works

unprivileged() {
	u=$(setpriv --reuid=cx --regid=cx --clear-groups id -u) && echo "setpriv --reuid=cx: uid $u" && [ "$u" = 1000 ] &&
		echo "yama ptrace_scope: $(cat /proc/sys/kernel/yama/ptrace_scope 2>/dev/null || echo none)"
}
check unprivileged-user unprivileged

probe_root() {
	timeout -k 5 120 $P/probe >/tmp/probe-root.txt
	rc=$?
	cat /tmp/probe-root.txt
	return $rc
}
check probe-root probe_root
cx_export /tmp/probe-root.txt probe-root.txt

probe_user() {
	timeout -k 5 120 setpriv --reuid=cx --regid=cx --clear-groups $P/probe auxv mm-map ptrace pac brk syscalls vdso-move >/tmp/probe-user.txt
	rc=$?
	cat /tmp/probe-user.txt
	return $rc
}
check probe-unprivileged probe_user
cx_export /tmp/probe-user.txt probe-user.txt

for k in auxv.pagesz hwcap.features vdso.move maps.special mm_map.set mm_map.set_exe_fd regset.NT_ARM_PACA_KEYS \
	pac.keys_via_ptrace pac.wrong_key brk.stop_pc sve.header counter.trap bti.mmap_prot_bti; do
	cx_note "$k" "$(grep -m1 "^$k " /tmp/probe-root.txt | cut -d' ' -f2-)"
done
cx_note bti.guarded_mappings_of_cat "$(grep -c "VmFlags:.* bt" /proc/self/smaps)"

# The cost of a small command under TCG, without a shell's startup in the way.
timing() {
	for c in "/bin/true" "dash -c true" "bash -c true" "$P/hello"; do
		r=$(timeout -k 5 300 $P/timeit 40 $c) || return 1
		echo "$c: $r"
		cx_note cost "$c: $r"
	done
	r=$($P/timeit 3 node -e 0) && echo "node -e 0: $r" && cx_note cost "node -e 0: $r"
}
check command-cost timing
