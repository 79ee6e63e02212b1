# Helpers for guest test scripts (sourced by /cx-run/run.sh, POSIX sh).
# The host reads these markers from the serial console:
#   @@CX BEGIN name / @@CX END name rc ms     one check
#   @@CX FILE name bytes ... @@CX FILE-END    a file, base64, saved by the host
#   @@CX NOTE key value                       a fact for the summary

cx_ms() { date +%s%3N; }

# cx_check NAME CMD [ARG...]: runs CMD (a program or a shell function) with its
# output on the console; the check passes when it exits 0.
cx_check() {
	_cx_name=$1
	shift
	echo "@@CX BEGIN $_cx_name"
	_cx_t0=$(cx_ms)
	"$@" 2>&1
	_cx_rc=$?
	echo "@@CX END $_cx_name $_cx_rc $(($(cx_ms) - _cx_t0))"
	return $_cx_rc
}

# cx_note KEY VALUE...: a measured fact the host lists after the checks.
cx_note() {
	_cx_k=$1
	shift
	echo "@@CX NOTE $_cx_k $*"
}

# cx_export FILE [NAME]: copies a guest file to the host's run directory.
cx_export() {
	_cx_n=${2:-$(basename "$1")}
	echo "@@CX FILE $_cx_n $(wc -c <"$1")"
	base64 -w 76 "$1"
	echo "@@CX FILE-END $_cx_n"
}
