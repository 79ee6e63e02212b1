#!/bin/sh
# The boot demo: runs rc.sh (a boot-style script of ~600 small program runs)
# with and without the cached-exec shims first on PATH, interleaved, checks
# that every run gives the same output, and prints the median times and the
# ratio. Everything happens in a temp dir (cache, shims, the script's files);
# nothing of the user's own cache or shims is touched.
#
#   npm run demo:boot               (after `npm install`)
#   sh examples/boot/run.sh [ROUNDS]   ROUNDS runs of each mode, default 11
set -eu
rounds=${1:-11}
case $rounds in '' | *[!0-9]*) echo "usage: run.sh [ROUNDS]" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cx="$root/bin/cached-exec"
[ -x "$cx" ] || { echo "run.sh: $cx is not built: run npm install first" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/cx-boot.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
# Boot scripts run in the C locale, with no user environment to speak of.
export LC_ALL=C
unset LANG LANGUAGE 2>/dev/null || true
# A private cache and shim directory; no background snapshots (everything is warmed up front).
export CACHED_EXEC_DIR="$work/cache" CACHED_EXEC_SHIMS_DIR="$work/shims" CACHED_EXEC_NO_WARM=1
# Every program rc.sh runs by name (sh itself is run by the init, not by name).
progs="sed awk grep cut tr sort uniq wc head tail date id uname basename dirname cat ls rm expr seq mkdir"
plain_path=$PATH
shim_path="$work/shims:$PATH"

# Images are keyed by PATH too: warm them with the PATH the script will run with.
echo "warming: $progs"
PATH=$shim_path "$cx" --warm $progs > "$work/warm.log" 2>&1 || { cat "$work/warm.log" >&2; exit 1; }
"$cx" --shims-install $progs > /dev/null

# The mount table as it is now: every run parses the same one.
cp /proc/mounts "$work/mounts"
export RC_MOUNTS="$work/mounts"

# One `date` per timestamp (nanoseconds; sh arithmetic is 64-bit): the same cost in both modes.
run_rc() { # $1 = PATH, $2 = where the output goes; prints elapsed microseconds
	rc_root=$(mktemp -d "$work/rc.XXXXXX")
	t0=$(date +%s%N)
	PATH=$1 RC_ROOT=$rc_root sh "$here/rc.sh" > "$2"
	t1=$(date +%s%N)
	rm -rf "$rc_root"
	echo $(((t1 - t0) / 1000))
}
# Counted by the launcher itself (stats/runs.log): top-level "hits", and "misses" + "fallbacks".
stat_sum() { "$cx" --show-stats --json | awk -v keys="$1" -F'[":, ]+' '
	BEGIN { n = split(keys, k, " "); for (i = 1; i <= n; i++) want[k[i]] = 1 }
	/^  "/ && ($2 in want) { s += $3 } END { print s + 0 }'; }
restored() { stat_sum hits; }
other() { stat_sum "misses fallbacks"; }

# Reference output, and one run of each to warm the page cache.
run_rc "$plain_path" "$work/expected" > /dev/null
run_rc "$shim_path" "$work/out" > /dev/null
h0=$(restored)
o0=$(other)
: > "$work/plain.us"
: > "$work/shims.us"
r=0
while [ "$r" -lt "$rounds" ]; do # interleaved: both modes see the same machine noise
	run_rc "$plain_path" "$work/out" >> "$work/plain.us"
	cmp -s "$work/expected" "$work/out" || { echo "run.sh: rc.sh output changed between runs" >&2; exit 1; }
	run_rc "$shim_path" "$work/out" >> "$work/shims.us"
	if ! cmp -s "$work/expected" "$work/out"; then
		echo "run.sh: output differs with shims:" >&2
		diff "$work/expected" "$work/out" >&2 || true
		exit 1
	fi
	r=$((r + 1))
done
per_run=$((($(restored) - h0) / rounds))
cold_per_run=$((($(other) - o0) / rounds))

median() { sort -n "$1" | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
spread() { sort -n "$1" | awk '{ a[NR] = $1 } END { printf "%.1f-%.1f", a[1] / 1000, a[NR] / 1000 }'; }
plain=$(median "$work/plain.us")
shims=$(median "$work/shims.us")
echo "boot demo: examples/boot/rc.sh under sh, $rounds runs of each mode, interleaved; output identical in every run"
awk -v p="$plain" -v s="$shims" -v ps="$(spread "$work/plain.us")" -v ss="$(spread "$work/shims.us")" \
	-v n="$per_run" -v c="$cold_per_run" 'BEGIN {
	printf "  without shims  median %6.1f ms   (min-max %s ms)\n", p / 1000, ps
	printf "  with shims     median %6.1f ms   (min-max %s ms; %d program runs restored per rc.sh run, %d cold)\n", s / 1000, ss, n, c
	printf "  speed-up       %.2fx\n", p / s
}'
