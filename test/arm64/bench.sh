# npm run bench inside the arm64 guest, as package.json has it (it builds first:
# the TypeScript with node alone; the launcher is the cross-built one, which
# scripts/build-native.mjs keeps on a machine without a compiler; the timing
# runner and the exit floor are cross-built too, build/bench/prebuilt.json).
#   npm run test:arm64 -- --launcher --cpu neoverse-n1 --script test/arm64/bench.sh --timeout 3600
# (and --kernel 16k). --cpu neoverse-n1: under -cpu max node died in tsc in 3 of 4
# attempts (SIGSEGV, SIGILL), and it is several times slower (docs/arm64.md, Measured).
# Sourced by /cx-run/run.sh (POSIX sh, cwd /cx, as root) after
# scripts/arm64/guest/lib.sh. /cx is the tree disk's copy, writable (qemu's
# snapshot=on overlay), so the build and the results land there.
#
# Passes when the bench exits 0 and, by the launcher's own records
# (stats/runs.log of the bench's cache, test/arm64/bench-check.mjs), every
# program group's restored row was restored (HIT records at least its rounds).
# A post-init row the machine refuses is reported NOT restored, not a failure.
# CX_BENCH_RUNS (default 15) rounds per group: TCG runs each exec 20-200x slower
# than the host. The workloads (hundreds of execs each, twenty programs warmed
# for the shims) are left out: --no-workloads.
CX_BENCH_CACHE=/tmp/cx-bench-cache
CX_BENCH_OUT=/cx/build/bench/results

check() { cx_check "$@" || CX_FAILED=$((CX_FAILED + 1)); }

# node itself has died of SIGSEGV under TCG now and then (in tsc, in vitest: docs/arm64.md),
# never in the same place twice; such a death (exit 139 of npm, no results yet) is noted
# and the bench run once more. Any other failure, or a second one, fails the check.
bench_run() {
	for attempt in 1 2; do
		rm -rf "$CX_BENCH_CACHE" "$CX_BENCH_OUT/latest.json"
		npm run bench -- --runs "${CX_BENCH_RUNS:-15}" --no-workloads --cache "$CX_BENCH_CACHE"
		rc=$?
		[ "$rc" = 139 ] && [ "$attempt" = 1 ] && [ ! -f "$CX_BENCH_OUT/latest.json" ] || return $rc
		cx_note bench-retried "npm run bench exited 139 (node died of SIGSEGV) on attempt 1: run again"
	done
}

bench_records() {
	[ -f "$CX_BENCH_OUT/latest.json" ] || { echo "no $CX_BENCH_OUT/latest.json"; return 1; }
	node /cx/test/arm64/bench-check.mjs "$CX_BENCH_OUT/latest.json" "$CX_BENCH_CACHE" /cx/bin/cached-exec
}

check bench bench_run
for f in latest.md latest.json; do
	[ -f "$CX_BENCH_OUT/$f" ] && cx_export "$CX_BENCH_OUT/$f" "bench-$f"
done
check bench-records bench_records
