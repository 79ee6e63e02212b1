# cached-exec for boot-time rc scripts (busybox rcS, sysvinit, OpenRC, a systemd
# ExecStartPre=/bin/sh -c '. .../boot-rc.sh; ...').
#
# Source it near the top of the init script:
#     . /usr/lib/cached-exec/shell/boot-rc.sh
# It uses the read-only system image layer, which the firmware build or the
# first boot fills as root:
#     CACHED_EXEC_SYSTEM_DIR=/var/lib/cached-exec/system cached-exec --warm --system sed awk grep cut ...
#     CACHED_EXEC_SYSTEM_DIR=/var/lib/cached-exec/system cached-exec --shims-install --system sed awk grep cut ...
# Images there are keyed for uid 0 and for the PATH the boot scripts use, so
# warm them with that PATH. The launcher needs no HOME and no writable disk:
# without a user cache directory it reads the system layer only and records
# nothing. Anything it cannot restore runs cold, so a missing or stale system
# layer only costs the time it would have saved.
#
# Uninstall: remove the line from the init script; delete the system directory.

CACHED_EXEC_SYSTEM_DIR=${CACHED_EXEC_SYSTEM_DIR:-/var/lib/cached-exec/system}
export CACHED_EXEC_SYSTEM_DIR
if [ -d "$CACHED_EXEC_SYSTEM_DIR/shims" ]; then
	case ":${PATH}:" in
		*":$CACHED_EXEC_SYSTEM_DIR/shims:"*) ;;
		*) PATH="$CACHED_EXEC_SYSTEM_DIR/shims${PATH:+:${PATH}}"; export PATH ;;
	esac
fi
# At boot nothing should start a background snapshot: the system layer is fixed.
CACHED_EXEC_NO_WARM=1
export CACHED_EXEC_NO_WARM
