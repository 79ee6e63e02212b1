# The aarch64 snapshotter, post-link: real dynamically linked glibc programs
# warmed and restored in the guest. Run with
#   npm run test:arm64 -- --launcher --script test/arm64/restore.sh
# Sourced by /cx-run/run.sh (POSIX sh, cwd /cx, as root) after
# scripts/arm64/guest/lib.sh; /cx/bin/cached-exec is the aarch64 launcher.
#
# For /bin/true, dash, bash, cat, ls (glibc), a musl program and a glibc program
# whose library constructor looks up a variable and reads the clock (envctor):
#  1. --warm writes an image (no refusal);
#  2. over several argument lists, the run through the launcher has the same
#     stdout, stderr and exit status as a cold run (CACHED_EXEC_DISABLE=1),
#     and the launcher recorded HIT for it;
#  3. proof from outside: the restored process's /proc/PID/maps lists the
#     image file (read while it waits on a FIFO; ls lists its own
#     /proc/self/map_files), and strace -f -e trace=execve shows one execve,
#     the launcher's.
# Then: the kernel state the launcher re-creates (strace), the stack guard of
# two restored processes (each its own AT_RANDOM's, read from /proc/PID/mem),
# the counter path (clock.ts's third run on 6.1, trapped reads on 6.12, with
# sed), a run with another environment (an unrelated variable), and an
# unprivileged user (uid 1000, own cache) warming and restoring dash.
. /cx/test/arm64/common.sh

warm() {
	"$CX" --warm "$1" 2>&1
	rc=$?
	img=$(image_of "$1")
	echo "warm rc=$rc image $img"
	[ "$rc" = 0 ] && [ -s "$img" ] && "$CX" --explain "$1" | grep -q 'restores from the image'
}

# One execve (the launcher's): the program itself was never exec'd.
one_execve() {
	strace -f -e trace=execve -o "$W/strace.txt" "$CX" "$@" >/dev/null 2>&1 </dev/null
	cat "$W/strace.txt"
	[ "$(grep -c 'execve(' "$W/strace.txt")" = 1 ] && [ "$(last_outcome)" = HIT ]
}

# The restored process waits on a FIFO (PROG ARGS... with @FIFO for the FIFO's path, or stdin): its maps list the image.
maps_from_outside() {
	prog=$1
	shift
	img=$(image_of "$prog")
	rm -f "$W/fifo" && mkfifo "$W/fifo" || return 1
	"$CX" "$prog" "$@" <"$W/fifo" >"$W/bg.out" 2>&1 &
	pid=$!
	exec 9>"$W/fifo"
	i=0
	until grep -qF "$img" "/proc/$pid/maps" 2>/dev/null || [ $i -ge 100 ]; do sleep 0.2; i=$((i + 1)); done
	grep -F "$img" "/proc/$pid/maps" | head -3
	found=$?
	head -c 200 "/proc/$pid/cmdline" | tr '\0' ' '; echo
	echo bye >&9
	exec 9>&-
	wait $pid
	rc=$?
	echo "exit $rc, output: $(head -c 200 "$W/bg.out")"
	[ $found = 0 ] && [ "$(last_outcome)" = HIT ]
}

# --- /bin/true ---------------------------------------------------------------
check warm-true warm /bin/true
true_runs() {
	same_restored /bin/true && same_restored /bin/true a b c && same_restored /bin/true --version
}
check restored-true true_runs
check execve-true retry_collision one_execve /bin/true

# --- dash ----------------------------------------------------------------------
check warm-dash warm dash
dash_runs() {
	same_restored dash -c 'echo "$0 $# $*"; exit 3' a b c &&
	same_restored dash -c 'for i in 1 2 3; do echo $i; done; echo err >&2' &&
	same_restored dash -c 'x=$(echo sub); echo "$x"; ls -d / /nonexistent; echo $?' &&
	same_restored dash -c 'kill -TERM $$' &&
	same_restored dash -c 'echo "${HOME-unset} $(pwd)"; set -- $(seq 1 20); echo $#' &&
	same_restored dash /nonexistent-script &&
	same_restored dash -c 'printf "%s\n" "$@"' x 'with space' ''
}
check restored-dash dash_runs
check maps-dash retry_collision maps_from_outside dash -c 'read x; echo got $x'
check execve-dash retry_collision one_execve dash -c 'echo hi; exit 4'

# --- bash ----------------------------------------------------------------------
check warm-bash warm bash
bash_runs() {
	same_restored bash -c 'echo "$0 $# $*" $BASH_VERSION; exit 3' a b c &&
	same_restored bash -c 'a=(1 2 3); echo ${#a[@]} ${a[*]}; declare -A m=([k]=v); echo ${m[k]}' &&
	same_restored bash -c 'f() { return 7; }; f; echo $?; echo err >&2; exit 2' &&
	same_restored bash -c 'echo $(( 6 * 7 )); printf "%05d\n" 42; type cd' &&
	same_restored bash -c 'kill -TERM $$' &&
	same_restored bash --version &&
	same_restored bash -c 'shopt -s extglob; x=aaab; echo ${x//+(a)/X}; compgen -b | head -3'
}
check restored-bash bash_runs
check maps-bash retry_collision maps_from_outside bash -c 'read x; echo got $x; true'
check execve-bash retry_collision one_execve bash -c 'echo hi; exit 5'

# --- coreutils -----------------------------------------------------------------
check warm-cat warm cat
cat_runs() {
	same_restored cat /etc/passwd &&
	same_restored cat -n /etc/passwd /etc/hostname &&
	same_restored cat /nonexistent &&
	same_restored cat --version &&
	same_restored cat -A /cx/package.json
}
check restored-cat cat_runs
check maps-cat retry_collision maps_from_outside cat
check execve-cat retry_collision one_execve cat /etc/passwd

check warm-ls warm ls
ls_runs() {
	same_restored ls / &&
	same_restored ls -la /cx/src &&
	same_restored ls -d /nonexistent / &&
	same_restored ls --color=always -F /usr/bin/ &&
	same_restored ls -lR /cx/src/restore
}
check restored-ls ls_runs
maps_ls() {
	"$CX" ls -l /proc/self/map_files/ >"$W/ls-maps.txt" 2>&1
	grep -F "$(image_of ls)" "$W/ls-maps.txt" | head -3 && [ "$(last_outcome)" = HIT ]
}
check maps-ls retry_collision maps_ls
check execve-ls retry_collision one_execve ls /

# --- musl ------------------------------------------------------------------------
# A dynamically linked musl program (its loader is musl's libc.so): the same
# code paths as on x86_64 (the trap after set_tid_address, BELOW_ARGC,
# RANDOM_COPY slots, rtld_fini 0), the thread pointer from NT_ARM_TLS.
MH=/cx-run/bin/hello
check warm-musl warm $MH
musl_runs() {
	same_restored $MH && same_restored $MH 7 && HOME=/elsewhere same_restored $MH 3 x y
}
check restored-musl musl_runs
check execve-musl retry_collision one_execve $MH 5

# --- a library constructor that looks a variable up and reads the clock ----------
# probes/envctor.so.c runs before envctor's entry point: the getenv breakpoints
# (return through x30), the vdso clock answered by the tracer, the image's
# dependency on CX_PROBE_VAR and its CLOCK slot (each restore writes its own time).
E=/cx-run/bin/envctor
envctor_warm() {
	CX_PROBE_VAR=one "$CX" --warm --json $E >"$W/warm.json" 2>&1
	rc=$?
	grep -E '"ok"|looked up|clock|"reason"|"detail"' "$W/warm.json"
	[ "$rc" = 0 ] && grep -q 'looked up CX_PROBE_VAR' "$W/warm.json" && grep -q 'clock reading' "$W/warm.json"
}
check warm-envctor envctor_warm
envctor_runs() {
	sleep 4 # a restore that kept the snapshot's time would print "stale"
	CX_PROBE_VAR=one same_restored $E || return 1
	cat "$W/cx.out"
	grep -q '^CX_PROBE_VAR=one clock fresh argc=1$' "$W/cx.out" || return 1
	CX_PROBE_VAR=one same_restored $E 9 a || return 1
	# Another value, or none: not this image's (FAIL_ENV): cold, and what a cold run prints.
	for v in two ''; do
		if [ -n "$v" ]; then
			CX_PROBE_VAR=$v CACHED_EXEC_DISABLE=1 "$CX" $E >"$W/cold.out" 2>&1
			CX_PROBE_VAR=$v "$CX" $E >"$W/cx.out" 2>&1
		else
			CACHED_EXEC_DISABLE=1 "$CX" $E >"$W/cold.out" 2>&1
			"$CX" $E >"$W/cx.out" 2>&1
		fi
		o=$(last_outcome)
		echo "CX_PROBE_VAR=${v:-(unset)}: $(cat "$W/cx.out") ($o)"
		cmp -s "$W/cold.out" "$W/cx.out" && [ "$o" = FAIL_ENV ] || return 1
	done
}
check restored-envctor envctor_runs

# --- what the launcher re-creates ------------------------------------------------
# The loader's per-thread kernel state, redone by the launcher (no loader runs):
# set_tid_address, set_robust_list and rseq at the image's addresses, succeeding.
kernel_state() {
	strace -f -e trace=execve,set_tid_address,set_robust_list,rseq -o "$W/ks.txt" "$CX" bash -c 'echo $BASH_VERSION' >/dev/null </dev/null
	cat "$W/ks.txt"
	"$CX" --inspect bash | grep -E 'tid address|robust list|rseq|tpidr|entry'
	[ "$(grep -c 'execve(' "$W/ks.txt")" = 1 ] && grep -q 'set_tid_address(' "$W/ks.txt" &&
		grep -q 'set_robust_list(.*) = 0' "$W/ks.txt" && grep -q 'rseq(.*) = 0' "$W/ks.txt"
}
check kernel-state retry_collision kernel_state

# The stack protector guard (aarch64: __stack_chk_guard, in ld.so's data) is each
# restored process's own, from its own AT_RANDOM: read from outside in two restores.
guard_own() {
	img=$(image_of dash)
	"$CX" --inspect dash | grep CANARY || return 1
	g=""
	for n in 1 2; do
		rm -f "$W/fifo" && mkfifo "$W/fifo" || return 1
		"$CX" dash -c 'read x' <"$W/fifo" &
		pid=$!
		exec 9>"$W/fifo"
		i=0
		until grep -qF "$img" "/proc/$pid/maps" 2>/dev/null || [ $i -ge 100 ]; do sleep 0.2; i=$((i + 1)); done
		out=$(node test/arm64/guard.mjs "$img" $pid)
		rc=$?
		echo "$out"
		echo >&9
		exec 9>&-
		wait $pid
		[ $rc = 0 ] || return 1
		g="$g $(echo "$out" | head -1 | cut -d' ' -f3)"
	done
	set -- $g
	echo "guards: $1 $2"
	[ "$1" != "$2" ]
}
check stack-guard-own retry_collision guard_own

# The counter (cntvct_el0) is readable without a syscall. Where PR_SET_TSC
# cannot trap it (6.1) words that change with it would be told apart by a
# third differential run (clock.ts, noted by --warm); where it can (6.12)
# the deterministic runs trap and answer it. Debian 12's glibc (2.36) reads
# it nowhere (no mrs of cntvct_el0 in ld.so or libc.so.6, counted below), so
# both paths must simply leave sed restorable; the note says which happened.
counter_path() {
	n=$(node -e '
		const fs = require("fs");
		let n = 0;
		for (const f of ["/lib/ld-linux-aarch64.so.1", "/lib/aarch64-linux-gnu/libc.so.6"]) {
			const b = fs.readFileSync(f);
			for (let i = 0; i + 4 <= b.length; i += 4) if ((b.readUInt32LE(i) & ~0x1f) >>> 0 === 0xd53be040) n++;
		}
		console.log(n);')
	echo "mrs xN, cntvct_el0 words in ld.so and libc.so.6: $n"
	"$CX" --internal-tsc-probe
	echo "counter trap probe: exit $? (0: no trap, 139: trapped)"
	"$CX" --warm --json sed >"$W/warm.json" 2>&1
	rc=$?
	grep -E '"ok"|syscalls before|timings|"reason"|"detail"' "$W/warm.json"
	[ "$rc" = 0 ] || return 1
	same_restored sed -n '2,3p' /etc/passwd || return 1
	words=$(grep -o "[0-9]* 4-byte words of the loader's own start-up timings" "$W/warm.json" | cut -d' ' -f1)
	cx_note counter "$(uname -r): cntvct_el0 reads in glibc $n, loader timing words told apart by a third run: ${words:-0}"
	[ "$n" != 0 ] || [ -z "$words" ]
}
check counter-path counter_path

# --- another environment, another user ----------------------------------------
other_env() {
	CX_UNRELATED=$$ same_restored dash -c 'echo "${CX_UNRELATED:+set}"'
}
check restored-other-env other_env

# A restore may run cold by rule (FAIL_COLLISION: an image region within 128 MiB of this
# run's stack, which depends on the run's ASLR; docs/arm64.md "Not done"): up to 5 runs,
# every one equal to the cold run, at least one restored.
unprivileged() {
	d=/tmp/cx-user
	rm -rf "$d" && mkdir -p "$d" && chown cx:cx "$d" && chmod 700 "$d" || return 1
	as="setpriv --reuid=cx --regid=cx --clear-groups env CACHED_EXEC_DIR=$d HOME=/tmp"
	$as "$CX" --warm dash || return 1
	cold=$($as CACHED_EXEC_DISABLE=1 "$CX" dash -c 'echo uid $(id -u) $0; exit 2' zz)
	c=$?
	[ "$cold" = "uid 1000 zz" ] && [ "$c" = 2 ] || return 1
	hits=0
	for n in 1 2 3 4 5; do
		hot=$($as "$CX" dash -c 'echo uid $(id -u) $0; exit 2' zz)
		h=$?
		o=$(CACHED_EXEC_DIR=$d last_outcome)
		echo "run $n: $hot ($h) $o"
		[ "$cold" = "$hot" ] && [ "$c" = "$h" ] || return 1
		if [ "$o" = HIT ]; then
			hits=$((hits + 1))
			break
		fi
		$as "$CX" --inspect dash | sed -n '/^regions/,/^$/p' | tail -3
		$as "$CX" --explain dash | grep -i why
	done
	cx_note unprivileged-restore "$(uname -r): $n run(s) to the first HIT"
	[ $hits = 1 ] && [ "$(stat -c %U "$(set -- $($as "$CX" --internal-key dash); echo "$2")")" = cx ]
}
check unprivileged-warm-restore unprivileged

# What a restore saves under TCG (median of 10; docs/arm64.md has the caveat).
timing() {
	for c in "/bin/true" "dash -c true" "bash -c true" "cat /dev/null" "ls /"; do
		cold=$(CACHED_EXEC_DISABLE=1 /cx-run/bin/timeit 10 $CX $c) || return 1
		direct=$(/cx-run/bin/timeit 10 $c) || return 1
		hot=$(/cx-run/bin/timeit 10 $CX $c) || return 1
		echo "$c: direct $direct / launcher disabled $cold / restored $hot"
		cx_note cost "$c: direct $direct / launcher disabled $cold / restored $hot"
	done
}
check restore-cost timing
"$CX" -s

# Layout note (no check): how close this kernel's ASLR puts the libraries to
# the stack. A restore refuses (FAIL_COLLISION, cold) when an image region
# lies within max(RLIMIT_STACK, 128 MiB) below the restoring process's stack;
# pairs of (snapshot layout, run layout) from 100 fresh processes estimate how
# often that happens here.
layout_note() {
	i=0
	while [ $i -lt 100 ]; do
		cat /proc/self/maps >"$W/maps.$i"
		i=$((i + 1))
	done
	node -e '
		const fs = require("fs");
		const rows = [];
		for (let i = 0; i < 100; i++) {
			let stack = 0n, lib = 0n;
			for (const l of fs.readFileSync(`${process.argv[1]}/maps.${i}`, "utf8").split("\n")) {
				const end = BigInt("0x" + (l.split(" ")[0].split("-")[1] || "0"));
				if (l.endsWith("[stack]")) stack = end;
				else if (/ \/.*ld-linux/.test(l) && end > lib) lib = end;
			}
			rows.push([stack, lib]);
		}
		const room = 128n << 20n;
		let pairs = 0, hit = 0, min = null;
		for (const [, lib] of rows) for (const [stack] of rows) {
			pairs++;
			const d = stack - lib;
			if (d < room) hit++;
			if (min === null || d < min) min = d;
		}
		const rnd = fs.readFileSync("/proc/sys/vm/mmap_rnd_bits", "utf8").trim();
		console.log(`mmap_rnd_bits ${rnd}; ld.so top to stack top over ${rows.length} processes: min ${min >> 20n} MiB; ${hit} of ${pairs} (image, run) pairs within 128 MiB`);' "$W"
}
cx_note layout "$(uname -r): $(layout_note)"
