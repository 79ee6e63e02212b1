# cached-exec shell integration for POSIX shells (sh, dash, bash, zsh, ksh).
#
# Source it from your rc file instead of `eval "$(cached-exec --shell-init sh)"`:
#     . /path/to/cached-exec/shell/cached-exec.sh
# It puts the shim directory first on PATH, once: sourcing it again changes
# nothing. Create shims with `cached-exec --shims-install PROG...` or
# `cached-exec --shims-install --auto`.
#
# Uninstall: remove the line from your rc file, then `cached-exec --shims-remove`
# (and `cached-exec --clear` to drop the images).

__cx_shims=${CACHED_EXEC_SHIMS_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/cached-exec/shims}
case ":${PATH}:" in
	*":${__cx_shims}:"*) ;;
	*) PATH="${__cx_shims}${PATH:+:${PATH}}"; export PATH ;;
esac
unset __cx_shims
hash -r 2>/dev/null || true
