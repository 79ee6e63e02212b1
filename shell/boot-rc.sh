# cached-exec for boot-time rc scripts: busybox rcS, sysvinit /etc/init.d
# scripts, OpenRC, or a systemd unit (ExecStartPre=/bin/sh -c '. .../boot-rc.sh; ...').
#
# Install: source it near the top of the init script:
#     . /usr/lib/cached-exec/shell/boot-rc.sh
# It puts the system layer's shims first on PATH (once; sourcing it again
# changes nothing), so every program the script runs by name is restored from
# the read-only system image layer. Root fills that layer once, at firmware
# build or first boot, with the PATH the boot scripts will use (images are
# keyed by PATH and for uid 0), e.g.:
#     export CACHED_EXEC_SYSTEM_DIR=/var/lib/cached-exec/system
#     PATH=$CACHED_EXEC_SYSTEM_DIR/shims:/usr/sbin:/usr/bin:/sbin:/bin \
#         cached-exec --warm --system sed awk grep cut tr sort head mount ...
#     cached-exec --shims-install --system sed awk grep cut tr sort head mount ...
#
# At boot the launcher needs no HOME and no writable disk: without a user
# cache directory it reads the system layer only and records nothing. Images
# are used only when owned by root and not writable by others; anything it
# cannot restore runs cold, so a missing or stale layer costs only the time it
# would have saved. The shim directory is put on PATH only when it is a
# directory owned by root and writable by nobody else.
#
# Variables it sets and exports: PATH (an unset or empty PATH, as some inits
# leave it, first becomes the usual system directories), CACHED_EXEC_SYSTEM_DIR, and
# CACHED_EXEC_NO_WARM=1 (the layer is fixed: no background snapshots during
# boot; daemons the script starts inherit it).
#
# Uninstall:
#     1. delete the line from the init script;
#     2. rm -rf /var/lib/cached-exec/system   (or your CACHED_EXEC_SYSTEM_DIR:
#        the images and the shims; `cached-exec --clear --system` and
#        `cached-exec --shims-remove --system` do it piecewise).

CACHED_EXEC_SYSTEM_DIR=${CACHED_EXEC_SYSTEM_DIR:-/var/lib/cached-exec/system}
export CACHED_EXEC_SYSTEM_DIR
[ -n "${PATH-}" ] || { PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH; }
# One find(1) run checks the shim directory: root's, writable by root only.
if [ -n "$(find "$CACHED_EXEC_SYSTEM_DIR/shims" -maxdepth 0 -type d -user 0 ! -perm -0020 ! -perm -0002 2>/dev/null)" ]; then
	case ":${PATH-}:" in
		*":$CACHED_EXEC_SYSTEM_DIR/shims:"*) ;;
		*) PATH="$CACHED_EXEC_SYSTEM_DIR/shims:$PATH"; export PATH ;;
	esac
	hash -r 2>/dev/null || true
fi
CACHED_EXEC_NO_WARM=1
export CACHED_EXEC_NO_WARM
