# The aarch64 port, post-link images: run in the guest with
#   npm run test:arm64 -- --launcher --script test/arm64/postlink.sh
# Sourced by /cx-run/run.sh (POSIX sh, cwd /cx, as root) after
# scripts/arm64/guest/lib.sh; /cx/bin/cached-exec is the aarch64 launcher.
#
# 1. The launcher runs programs cold (miss) with their output and status.
# 2. An image of another architecture (an x86_64 header on an otherwise
#    valid image, checksum recomputed) and one of another page size are
#    refused: the run is cold, the statistics record FAIL_ARCH /
#    FAIL_PAGE_SIZE, --explain names the machine.
# 3. --warm --after-init of an init a restore cannot stand for (it prints)
#    refuses in one line and the runs stay cold and correct; an
#    unprivileged user's runs are cold and correct too. (Post-link images of
#    real programs: test/arm64/restore.sh; post-init: test/arm64/postinit.sh.)
# 4. The aarch64 restorer on a hand-written image of a static program (the
#    marker probe): restored output differs from cold only by the marker the
#    image changed; the image in its maps, no execve in strace; root and uid 1000.
# 5. The counter-trap probe (cntvct_el0) answers as the kernel allows.
# 6. What the launcher costs (timing notes).
. /cx/test/arm64/common.sh

# Runs "$@" cold and through the launcher; stdout, stderr and status must be equal.
same_as_cold() {
	CACHED_EXEC_DISABLE=1 "$CX" "$@" >"$W/cold.out" 2>"$W/cold.err"
	c=$?
	"$CX" "$@" >"$W/cx.out" 2>"$W/cx.err"
	r=$?
	if [ "$c" != "$r" ] || ! cmp -s "$W/cold.out" "$W/cx.out" || ! cmp -s "$W/cold.err" "$W/cx.err"; then
		echo "DIFFERS: $* (status cold $c, launcher $r)"
		diff "$W/cold.out" "$W/cx.out" | head -5
		diff "$W/cold.err" "$W/cx.err" | head -5
		return 1
	fi
	echo "same: $* (status $r, $(wc -c <"$W/cx.out") bytes out)"
}

launcher_is_aarch64() {
	file=$(od -An -tx1 -j18 -N2 "$CX" | tr -d ' ')
	echo "e_machine bytes: $file" && [ "$file" = b700 ]
}
check launcher-aarch64 launcher_is_aarch64

miss_runs_cold() {
	same_as_cold /bin/true || return 1
	same_as_cold sh -c 'echo "$0 $#"; exit 3' a b || return 1
	same_as_cold ls -d / /cx || return 1
	o=$(last_outcome) && echo "recorded: $o" && [ "$o" = MISS ]
}
check miss-runs-cold miss_runs_cold

# An image for PROG at the launcher's key path, otherwise valid, with one header field rewritten.
foreign_image() {
	set -- "$1" "$2" "$3" $("$CX" --internal-key "$1")
	mkdir -p "$(dirname "$5")" && node test/arm64/foreign-image.mjs "$5" "$2" "$3" && echo "$5"
}

foreign_refused() {
	field=$1 value=$2 want=$3 why=$4
	img=$(foreign_image /usr/bin/dash "$field" "$value") || return 1
	echo "image with $field=$value at $img"
	same_as_cold dash -c 'echo foreign; exit 5' || return 1
	o=$(last_outcome) && echo "recorded: $o" && [ "$o" = "$want" ] || return 1
	"$CX" --explain dash >"$W/explain.txt"
	rc=$?
	cat "$W/explain.txt"
	rm -f "$img"
	[ "$rc" = 1 ] && grep -q "why *$want: $why" "$W/explain.txt"
}
check foreign-arch-refused foreign_refused arch 62 FAIL_ARCH 'image taken on x86_64, this machine is aarch64'
pagesz=$(getconf PAGESIZE)
other=16384
[ "$pagesz" = 16384 ] && other=4096
check foreign-pagesize-refused foreign_refused page_size "$other" FAIL_PAGE_SIZE "image taken with $other-byte pages, this kernel's are $pagesz bytes"

# --- snapshots ------------------------------------------------------------
# A post-init snapshot of an init that prints (a restore would not repeat
# the output): --warm --after-init must say so in one line and leave every
# run cold and correct, never half an image.

warm_refused() {
	echo 'echo printed by the init' >"$W/noisy-rc.sh"
	"$CX" --warm --after-init="$W/noisy-rc.sh" bash >"$W/warm.out" 2>"$W/warm.err"
	rc=$?
	cat "$W/warm.out" "$W/warm.err"
	[ "$rc" != 0 ] && cat "$W/warm.out" "$W/warm.err" | grep -q 'refused (init-output)' && ! ls "$CACHED_EXEC_DIR"/images/*.img 2>/dev/null || return 1
	"$CX" --after-init="$W/noisy-rc.sh" bash -c 'echo after the refusal $0 $#; exit 6' a b >"$W/cx.out" 2>&1
	r=$?
	CACHED_EXEC_DISABLE=1 "$CX" --after-init="$W/noisy-rc.sh" bash -c 'echo after the refusal $0 $#; exit 6' a b >"$W/cold.out" 2>&1
	c=$?
	cat "$W/cx.out"
	[ "$r" = "$c" ] && cmp "$W/cold.out" "$W/cx.out" && grep -q 'printed by the init' "$W/cx.out" || return 1
	"$CX" --explain --after-init="$W/noisy-rc.sh" bash >"$W/explain.txt"
	cat "$W/explain.txt"
	grep -q 'refused *init-output' "$W/explain.txt"
}
check warm-after-init-refused warm_refused

# As an unprivileged user with a cache that user owns: cold, correct, recorded.
unprivileged_cold() {
	d=/tmp/cx-user
	rm -rf "$d" && mkdir -p "$d" && chown cx:cx "$d" && chmod 700 "$d" || return 1
	out=$(setpriv --reuid=cx --regid=cx --clear-groups env CACHED_EXEC_DIR=$d HOME=/tmp "$CX" dash -c 'echo uid $(id -u); exit 2')
	rc=$?
	echo "$out (exit $rc)"
	[ "$out" = "uid 1000" ] && [ "$rc" = 2 ] && [ -s "$d/stats/runs.log" ] && [ "$(stat -c %U "$d/stats/runs.log")" = cx ]
}
check unprivileged-cold unprivileged_cold

# --- the aarch64 restorer, on a hand-written image ---------------------------
# Without a snapshotter the restore path is proved with the marker probe (a
# static program) and test/arm64/marker-image.mjs, which writes what the
# kernel would map for it with its data page saying "rstd" instead of "cold":
# the vdso move, regions from the program file (identity-checked) and from
# the image, the auxv, PR_SET_MM_MAP, the trampoline's cache maintenance and
# its jump to the entry point with sp = &argc.
M=/cx-run/bin/marker

marker_restore() {
	user=$1
	as=""
	dir=$CACHED_EXEC_DIR
	out=$W
	if [ "$user" = cx ]; then
		as="setpriv --reuid=cx --regid=cx --clear-groups"
		dir=/tmp/cx-marker-user
		out=/tmp/cx-marker-out
		rm -rf "$dir" "$out" && mkdir -p "$dir" "$out" && chown cx:cx "$dir" "$out" && chmod 700 "$dir" || return 1
	fi
	set -- $($as env CACHED_EXEC_DIR=$dir "$CX" --internal-key $M)
	img=$2
	$as env CACHED_EXEC_DIR=$dir HOME=/tmp sh -c 'mkdir -p "$(dirname "$1")" && node test/arm64/marker-image.mjs "$2" "$1"' - "$img" $M || return 1
	cold=$($as env CACHED_EXEC_DIR=$dir CACHED_EXEC_DISABLE=1 "$CX" $M a b)
	c=$?
	hot=$($as env CACHED_EXEC_DIR=$dir "$CX" $M a b)
	h=$?
	echo "cold:     $cold (exit $c)"
	echo "restored: $hot (exit $h)"
	[ "$cold" = "CX-MARKER:cold argc=3 argv1=a" ] && [ "$c" = 43 ] || return 1
	[ "$hot" = "CX-MARKER:rstd argc=3 argv1=a" ] && [ "$h" = 43 ] || return 1
	# From outside: the program's own maps show the image file; strace shows one execve (the launcher's).
	$as env CACHED_EXEC_DIR=$dir "$CX" $M maps >"$W/marker-maps.txt"
	grep -F "$img" "$W/marker-maps.txt" || return 1
	grep '\[vdso\]\|\[vvar' "$W/marker-maps.txt"
	$as env CACHED_EXEC_DIR=$dir strace -f -e trace=execve,prctl -o "$out/marker.strace" "$CX" $M x >"$W/marker.out"
	cat "$out/marker.strace"
	[ "$(grep -c 'execve(' "$out/marker.strace")" = 1 ] && grep -q PR_SET_MM_MAP "$out/marker.strace" && grep -q rstd "$W/marker.out"
}
check marker-restore-root marker_restore root
o=$(last_outcome)
cx_note marker-outcome "$o"
check marker-restore-unprivileged marker_restore cx

# The counter-trap probe the snapshotter's clock.ts asks (arch/aarch64/start.c):
# PR_SET_TSC is EINVAL for arm64 before Linux 6.12 (the read of cntvct_el0 runs
# on: exit 0), and traps from 6.12 (killed by SIGSEGV).
counter_probe() {
	"$CX" --internal-tsc-probe
	rc=$?
	rel=$(uname -r)
	echo "kernel $rel: --internal-tsc-probe exit $rc"
	cx_note counter-trap "kernel $rel: exit $rc"
	case $rel in
	6.1.*) [ "$rc" = 0 ] ;;
	*) [ "$rc" = 139 ] ;;
	esac
}
check counter-trap-probe counter_probe

# What the launcher adds to a cold run under TCG (median of 20; see docs/arm64.md for the caveat).
timing() {
	cold=$(CACHED_EXEC_DISABLE=1 /cx-run/bin/timeit 20 $CX $M) || return 1
	hot=$(/cx-run/bin/timeit 20 $CX $M) || return 1
	echo "marker (static, hand-written image): launcher disabled $cold / restored $hot"
	cx_note cost "marker: launcher disabled $cold / restored $hot"
	for c in "/bin/true" "dash -c true"; do
		direct=$(/cx-run/bin/timeit 20 $c) || return 1
		via=$(CACHED_EXEC_DISABLE=1 /cx-run/bin/timeit 20 $CX $c) || return 1
		miss=$(/cx-run/bin/timeit 20 $CX $c) || return 1
		echo "$c: direct $direct / launcher, disabled $via / launcher, miss $miss"
		cx_note cost "$c: direct $direct / launcher disabled $via / launcher miss $miss"
	done
}
check launcher-cost timing
