#!/bin/sh
# The boot demo: runs rc.sh (a few hundred small program runs) with and without
# the cached-exec shims first on PATH, checks both give the same output, and
# prints the median times and the ratio.
#
#   examples/boot/run.sh [ROUNDS]        (after `npm install`)
set -eu
rounds=${1:-7}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cx="$root/bin/cached-exec"
[ -x "$cx" ] || { echo "run.sh: $cx is not built: run npm install first" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/cx-boot.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
# Boot scripts run in the C locale, with no user environment to speak of.
export LC_ALL=C
unset LANG LANGUAGE 2>/dev/null || true
export CACHED_EXEC_DIR="$work/cache" CACHED_EXEC_SHIMS_DIR="$work/shims" CACHED_EXEC_NO_WARM=1
progs="sed awk grep cut tr sort uniq wc head tail date id uname basename dirname cat ls rm expr seq mkdir"
plain_path=$PATH
shim_path="$work/shims:$PATH"

# Images are keyed by PATH too: warm them with the PATH the script will run with.
PATH=$shim_path "$cx" --warm $progs > "$work/warm.log" 2>&1 || { cat "$work/warm.log" >&2; exit 1; }
"$cx" --shims-install $progs > /dev/null

now_ms() { date +%s%N | cut -c1-13; }
run_rc() { # $1 = PATH to use; prints elapsed ms
	dir=$(mktemp -d "$work/rc.XXXXXX")
	t0=$(now_ms)
	PATH=$1 RC_ROOT=$dir sh "$here/rc.sh" > "$dir.out"
	t1=$(now_ms)
	echo $((t1 - t0))
}

run_rc "$plain_path" > /dev/null; run_rc "$shim_path" > /dev/null # warm the page cache
out_plain=$(PATH=$plain_path RC_ROOT=$(mktemp -d "$work/o.XXXXXX") sh "$here/rc.sh")
out_shims=$(PATH=$shim_path RC_ROOT=$(mktemp -d "$work/o.XXXXXX") sh "$here/rc.sh")
if [ "$out_plain" != "$out_shims" ]; then
	echo "run.sh: output differs with shims:" >&2
	printf '%s\n--- with shims:\n%s\n' "$out_plain" "$out_shims" >&2
	exit 1
fi

: > "$work/plain.ms"; : > "$work/shims.ms"
r=0
while [ $r -lt "$rounds" ]; do # interleaved: both modes see the same machine noise
	run_rc "$plain_path" >> "$work/plain.ms"
	run_rc "$shim_path" >> "$work/shims.ms"
	r=$((r + 1))
done
median() { sort -n "$1" | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
plain=$(median "$work/plain.ms")
shims=$(median "$work/shims.ms")
hits=$("$cx" --show-stats --json | sed -n 's/.*"hits": *\([0-9]*\).*/\1/p' | head -n 1)
echo "boot demo: rc.sh ($(grep -c . "$here/rc.sh") lines, ~550 program runs), $rounds rounds each, interleaved"
echo "  without shims  median ${plain} ms"
echo "  with shims     median ${shims} ms   (restored runs so far: ${hits:-?})"
awk -v a="$plain" -v b="$shims" 'BEGIN { printf "  speed-up       %.2fx\n", a / b }'
