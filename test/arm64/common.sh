# What the guest suites share (sourced by postlink.sh, restore.sh and postinit.sh,
# after scripts/arm64/guest/lib.sh): the environment of their runs and the helpers
# that compare a restored run with a cold one. POSIX sh; /cx/bin/cached-exec is the
# aarch64 launcher.
CX=/cx/bin/cached-exec
export PATH=/usr/local/bin:/usr/bin:/bin
export LC_ALL=C
export CACHED_EXEC_DIR=/tmp/cx-cache
export CACHED_EXEC_NO_WARM=1
W=/tmp/cx-work
mkdir -p "$W"

check() { cx_check "$@" || CX_FAILED=$((CX_FAILED + 1)); }

# The last outcome the launcher recorded (stats/runs.log), by name.
last_outcome() {
	node --input-type=module -e "
		import * as fs from 'node:fs';
		import { decodeRunRecords } from '/cx/dist/cache/stats.js';
		const r = decodeRunRecords(fs.readFileSync('$CACHED_EXEC_DIR/stats/runs.log')).records;
		console.log(r.at(-1).outcome);"
}

# The image path of "$@" (a program, or an --after-init command line) as the launcher computes it.
image_of() { set -- $("$CX" --internal-key "$@") && echo "$2"; }

# "$@" cold and restored: stdout, stderr and status equal, and the launcher's run a HIT
# (a FAIL_ADAPTER record after it would mean an adapter ran it cold after all). A run
# whose ASLR put its stack within 128 MiB above an image region is cold by rule
# (FAIL_COLLISION, about 1 run in 100 here: docs/arm64.md "Not done"): up to 3 runs,
# each compared with the cold one.
same_restored() {
	CACHED_EXEC_DISABLE=1 "$CX" "$@" >"$W/cold.out" 2>"$W/cold.err" </dev/null
	c=$?
	for n in 1 2 3; do
		"$CX" "$@" >"$W/cx.out" 2>"$W/cx.err" </dev/null
		r=$?
		o=$(last_outcome)
		if [ "$c" != "$r" ] || ! cmp -s "$W/cold.out" "$W/cx.out" || ! cmp -s "$W/cold.err" "$W/cx.err"; then
			echo "DIFFERS: $* (status cold $c, restored $r, $o)"
			diff "$W/cold.out" "$W/cx.out" | head -8
			diff "$W/cold.err" "$W/cx.err" | head -8
			return 1
		fi
		echo "same: $* (status $r, $(wc -c <"$W/cx.out")+$(wc -c <"$W/cx.err") bytes out+err, $o)"
		[ "$o" = FAIL_COLLISION ] || break
	done
	[ "$o" = HIT ]
}

# Runs a check function again (up to 3 times) when it failed because its run was cold by
# rule, FAIL_COLLISION (see same_restored).
retry_collision() {
	for n in 1 2 3; do
		"$@" && return 0
		[ "$(last_outcome)" = FAIL_COLLISION ] || return 1
		echo "(that run was FAIL_COLLISION: again)"
	done
	return 1
}
