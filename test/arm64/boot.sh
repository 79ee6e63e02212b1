# The boot demo (examples/boot/run.sh) in the guest: rc.sh, a boot-style
# script of ~600 small program runs (sed, awk, grep, cut, sort, coreutils...),
# run by dash with and without the cached-exec shims first on PATH,
# interleaved; run.sh itself fails on any output difference between the two.
#   npm run test:arm64 -- --launcher --script test/arm64/boot.sh
# Sourced by /cx-run/run.sh (POSIX sh, cwd /cx, as root) after
# scripts/arm64/guest/lib.sh; /cx/bin/cached-exec is the aarch64 launcher.
#
# Passes when run.sh exits 0 (every rc.sh run through the shims printed what
# the plain run printed) and the launcher's own statistics counted restored
# program runs in every rc.sh run. busybox is not part of it: Debian's
# busybox sh runs its applets (sed, grep...) inside itself without a PATH
# lookup, and busybox is static, so a busybox userland has nothing to restore
# but the dynamically linked programs it starts (dash, bash, coreutils here).
# CX_BOOT_ROUNDS (default 2) rounds of each mode: TCG makes every exec tens
# of milliseconds, so one rc.sh run takes about a minute.
check() { cx_check "$@" || CX_FAILED=$((CX_FAILED + 1)); }

# Debian links awk to mawk in mawk's maintainer script, which the guest never runs.
[ -e /usr/bin/awk ] || ln -s mawk /usr/bin/awk

boot_demo() {
	sh /cx/examples/boot/run.sh "${CX_BOOT_ROUNDS:-2}" > /tmp/cx-boot.out 2>&1
	rc=$?
	cat /tmp/cx-boot.out
	[ "$rc" = 0 ] || return 1
	restored=$(sed -n 's/.*; \([0-9][0-9]*\) program runs restored per rc.sh run.*/\1/p' /tmp/cx-boot.out)
	cx_note boot-demo "$(grep -E 'median|speed-up' /tmp/cx-boot.out | tr -s ' ' | tr '\n' ';')"
	[ "${restored:-0}" -gt 0 ]
}
check boot-demo-dash boot_demo
