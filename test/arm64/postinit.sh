# The aarch64 snapshotter, post-init: bash after an rc file, and programs
# that speak the resume protocol themselves, warmed and restored in the
# guest. Run with
#   npm run test:arm64 -- --launcher --script test/arm64/postinit.sh
# Sourced by /cx-run/run.sh (POSIX sh, cwd /cx, as root) after
# scripts/arm64/guest/lib.sh; /cx/bin/cached-exec is the aarch64 launcher.
#
#  1. --warm --after-init=RC bash writes an image; --explain says it restores;
#  2. over several scripts the run through the launcher has the same stdout,
#     stderr and exit status as a cold run (CACHED_EXEC_DISABLE=1: the same
#     adapter, run directly) and the launcher recorded HIT (not taken back
#     by the adapter: FAIL_ADAPTER);
#  3. proof from outside: a restored bash blocked on a FIFO has the image in
#     its /proc/PID/maps, and strace -f -e trace=execve shows one execve;
#  4. probes/resregs: every register it had at the checkpoint read (x7, which
#     arm64's ptrace hides at syscall stops, x16, x17, v0-v31, NZCV) is back
#     after the restore;
#  5. probes/pacret (return addresses signed with PAC): refused, runs cold
#     and equal;
#  6. uid 1000 warms and restores bash after its rc file with its own cache.
. /cx/test/arm64/common.sh

# --warm "$@"; the image exists and --explain says the next run restores.
warm() {
	"$CX" --warm --json "$@" >"$W/warm.json" 2>&1
	rc=$?
	grep -E '"ok"|"reason"|"detail"|syscalls before|slots|serves' "$W/warm.json"
	img=$(image_of "$@")
	echo "warm rc=$rc image $img ($(wc -c <"$img" 2>/dev/null) bytes)"
	[ "$rc" = 0 ] && [ -s "$img" ] && "$CX" --explain "$@" | grep -q 'restores from the image'
}

# --- bash after an rc file ---------------------------------------------------------
H=/tmp/cx-home
mkdir -p "$H"
RC=$H/rc.sh
cat >"$H/lib.sh" <<'LIB'
lib_version() { echo "lib one"; }
LIB
cat >"$RC" <<RCFILE
. "$H/lib.sh"
greet() { printf "hello %s\n" "\$*"; }
export RC_VERSION=one
RC_COMPUTED=\$(echo computed-in-a-child)
shopt -s extglob
declare -A RC_MAP=([a]=1 [b]=2)
for i in \$(seq 1 20); do RC_LIST[\$i]=item\$i; done
RC_GREETING=\${CX_GREETING:-hi}
RCFILE
export HOME=$H
A="--after-init=$RC"

check warm-bash-after-init warm "$A" bash

S=$W/scripts
mkdir -p "$S" && cd "$S" || exit 1
cat >"$S/args.sh" <<'S'
echo "$0" "$#"; for a in "$@"; do printf "[%s]\n" "$a"; done
S
cat >"$S/exit.sh" <<'S'
true; (exit 7); echo "sub $?"; echo to-stderr >&2; exit 42
S
cat >"$S/trap.sh" <<'S'
trap "echo exiting" EXIT; trap "echo got USR1" USR1; kill -USR1 $$; echo after; kill -TERM $$; echo not reached
S
cat >"$S/jobs.sh" <<'S'
( echo "in subshell $BASH_SUBSHELL"; exit 3 ); echo "status $?"
x=$(echo substituted); echo "$x"
sleep 0.05 & pid=$!; wait $pid; echo "job status $?"
echo piped | tr a-z A-Z | cat
for i in 1 2 3; do /bin/echo "child $i"; done
S
cat >"$S/float.sh" <<'S'
printf "%.3f %e\n" 3.14159 2.5e-3; echo $(( 2**40 / 3 )) ${#RC_LIST[@]} ${RC_LIST[15]}
S
bash_runs() {
	same_restored "$A" bash "$S/args.sh" one 'two words' '' '*' &&
	same_restored "$A" bash -c 'greet "$RC_VERSION $RC_GREETING"; lib_version; echo "$RC_COMPUTED ${RC_MAP[b]}"; x=abc; echo ${x/+(b)/B}' name a &&
	same_restored "$A" bash -c 'env | grep -v "^_=\|^CACHED_EXEC_DISABLE=" | sort' &&
	same_restored "$A" bash -c 'pwd; echo "$PWD|$SHLVL"; ls' &&
	same_restored "$A" bash "$S/exit.sh" &&
	same_restored "$A" bash -e -c 'echo before; false; echo after' &&
	same_restored "$A" bash "$S/trap.sh" &&
	same_restored "$A" bash "$S/jobs.sh" &&
	same_restored "$A" bash "$S/float.sh"
}
check restored-bash-after-init bash_runs
# A form the adapter does not resume (a missing script: bash's own message and 127) runs cold
# after the restore (FAIL_ADAPTER takes the HIT back); equal to the cold run.
adapter_cold() {
	same_restored "$A" bash /nonexistent-script
	o=$(last_outcome)
	echo "outcome $o"
	cmp -s "$W/cold.out" "$W/cx.out" && cmp -s "$W/cold.err" "$W/cx.err" && [ "$o" = FAIL_ADAPTER ]
}
check adapter-cold-equal adapter_cold
# $$, $PPID and $RANDOM are this process's (they differ between two runs by nature: compared with /proc).
own_ids() {
	"$CX" "$A" bash -c 'echo "$$ $PPID $BASHPID"; cut -d" " -f1,4 /proc/$$/stat; echo $RANDOM' >"$W/ids.out" 2>&1
	cat "$W/ids.out"
	set -- $(cat "$W/ids.out")
	[ "$(last_outcome)" = HIT ] && [ "$1" = "$3" ] && [ "$1" = "$4" ] && [ "$2" = "$5" ]
}
check restored-bash-own-ids retry_collision own_ids
cd /cx || exit 1

# From outside: a restored bash blocked on a FIFO has the image in its maps; one execve.
# An asynchronous command of a non-interactive shell starts with SIGINT and SIGQUIT
# ignored, which a post-init image was not taken with (a cold bash would inherit them:
# FAIL_RESUME, cold): env puts them back to default first.
maps_from_outside() {
	img=$(image_of "$A" bash)
	rm -f "$W/fifo" && mkfifo "$W/fifo" || return 1
	env --default-signal=INT,QUIT "$CX" "$A" bash -c 'read x; echo got $x; greet there' <"$W/fifo" >"$W/bg.out" 2>&1 &
	pid=$!
	exec 9>"$W/fifo"
	i=0
	until grep -qF "$img" "/proc/$pid/maps" 2>/dev/null || [ $i -ge 150 ]; do sleep 0.2; i=$((i + 1)); done
	grep -F "$img" "/proc/$pid/maps" | head -3
	found=$?
	echo "cmdline: $(head -c 200 "/proc/$pid/cmdline" | tr '\0' ' ')"
	echo bye >&9
	exec 9>&-
	wait $pid
	rc=$?
	echo "exit $rc, output: $(head -c 200 "$W/bg.out"), $(last_outcome)"
	[ $found = 0 ] && [ "$(last_outcome)" = HIT ] && [ "$(cat "$W/bg.out")" = "got bye
hello there" ]
}
check maps-bash-after-init retry_collision maps_from_outside
one_execve() {
	strace -f -e trace=execve -o "$W/strace.txt" "$CX" "$A" bash -c 'greet strace; exit 5' >"$W/st.out" 2>&1 </dev/null
	rc=$?
	cat "$W/strace.txt" "$W/st.out"
	[ "$rc" = 5 ] && [ "$(grep -c 'execve(' "$W/strace.txt")" = 1 ] && [ "$(last_outcome)" = HIT ]
}
check execve-bash-after-init retry_collision one_execve

# Another value of a variable the rc file read (CX_GREETING) is not this image's: cold, equal.
other_env() {
	CX_GREETING=yo same_restored "$A" bash -c 'greet "$RC_GREETING"' && return 1
	o=$(last_outcome)
	echo "CX_GREETING=yo: $(cat "$W/cx.out") ($o)"
	cmp -s "$W/cold.out" "$W/cx.out" && [ "$o" != HIT ] && grep -q 'hello yo' "$W/cx.out"
}
check other-env-cold other_env

# --- every register back: x7, x16, x17, v0-v31, NZCV ---------------------------------
R=/cx-run/bin/resregs
check warm-resregs warm --after-init $R
resregs_runs() {
	same_restored --after-init $R || return 1
	cat "$W/cx.out"
	grep -q '^regs ok$' "$W/cx.out" || return 1
	same_restored --after-init $R a 'b c' '' || return 1
	cat "$W/cx.out"
	grep -q '^regs ok$' "$W/cx.out" && grep -q '^\[b c\]$' "$W/cx.out"
}
check restored-resregs resregs_runs

# --- pointer authentication: a signed return address live at the checkpoint ------------
P=/cx-run/bin/pacret
pac_refused() {
	n=$(node -e '
		const fs = require("fs");
		let n = 0;
		for (const f of ["/usr/bin/bash", "/lib/aarch64-linux-gnu/libc.so.6", process.argv[1]]) {
			const b = fs.readFileSync(f);
			let c = 0;
			for (let i = 0; i + 4 <= b.length; i += 4) if (b.readUInt32LE(i) === 0xd503233f) c++;
			n += c;
			console.log(`${f}: ${c} paciasp`);
		}' $P)
	echo "$n"
	"$CX" --warm --after-init $P >"$W/warm.out" 2>&1
	rc=$?
	cat "$W/warm.out"
	[ "$rc" != 0 ] && grep -q 'signed with pointer authentication' "$W/warm.out" || return 1
	CACHED_EXEC_DISABLE=1 "$CX" --after-init $P x 'y z' >"$W/cold.out" 2>&1
	c=$?
	"$CX" --after-init $P x 'y z' >"$W/cx.out" 2>&1
	r=$?
	o=$(last_outcome)
	cat "$W/cx.out"
	echo "cold $c, launcher $r ($o)"
	[ "$c" = "$r" ] && [ "$r" = 2 ] && cmp -s "$W/cold.out" "$W/cx.out" && [ "$o" != HIT ]
}
check pac-refused pac_refused

# --- an unprivileged user, own cache -------------------------------------------------------
unprivileged() {
	d=/tmp/cx-user-pi
	rm -rf "$d" && mkdir -p "$d" && chown cx:cx "$d" && chmod 700 "$d" || return 1
	cp "$RC" "$H/lib.sh" "$d/" && chown cx:cx "$d/rc.sh" "$d/lib.sh" || return 1
	sed -i "s|$H/lib.sh|$d/lib.sh|" "$d/rc.sh"
	as="setpriv --reuid=cx --regid=cx --clear-groups env CACHED_EXEC_DIR=$d/cache HOME=$d"
	$as "$CX" --warm "--after-init=$d/rc.sh" bash || return 1
	cold=$($as CACHED_EXEC_DISABLE=1 "$CX" "--after-init=$d/rc.sh" bash -c 'greet uid $(id -u) $0; exit 2' zz)
	c=$?
	echo "cold: $cold ($c)"
	[ "$cold" = "hello uid 1000 zz" ] && [ "$c" = 2 ] || return 1
	for n in 1 2 3 4 5; do
		hot=$($as "$CX" "--after-init=$d/rc.sh" bash -c 'greet uid $(id -u) $0; exit 2' zz)
		h=$?
		o=$(CACHED_EXEC_DIR=$d/cache last_outcome)
		echo "run $n: $hot ($h) $o"
		[ "$cold" = "$hot" ] && [ "$c" = "$h" ] || return 1
		[ "$o" = HIT ] && return 0
	done
	return 1
}
check unprivileged-after-init unprivileged

# What a restore saves under TCG (median of 10; docs/arm64.md has the caveat).
timing() {
	cold=$(CACHED_EXEC_DISABLE=1 /cx-run/bin/timeit 10 $CX "$A" bash -c true) || return 1
	hot=$(/cx-run/bin/timeit 10 $CX "$A" bash -c true) || return 1
	plain=$(/cx-run/bin/timeit 10 bash -c true) || return 1
	echo "bash -c true: plain $plain / after the rc file cold $cold / restored $hot"
	cx_note cost-postinit "$(uname -r) bash -c true: plain $plain / after the rc file cold $cold / restored $hot"
}
check postinit-cost timing
"$CX" -s
