# cached-exec shell integration for POSIX shells (sh, dash, bash, zsh, ksh,
# busybox sh): the same as `eval "$(cached-exec --shell-init sh)"`, as a file.
#
# Install: add one line to your rc file (~/.bashrc, ~/.zshrc, ~/.profile):
#     . /path/to/cached-exec/shell/cached-exec.sh
# It puts the shim directory first on PATH, once: sourcing it again (a nested
# shell, `exec bash`, re-reading the rc file) changes nothing. Create shims
# with `cached-exec --shims-install PROG...` or `cached-exec --shims-install --auto`.
# The shim directory is $CACHED_EXEC_SHIMS_DIR, else
# ${XDG_DATA_HOME:-~/.local/share}/cached-exec/shims, as the CLI computes it.
#
# Uninstall:
#     1. delete the line above from your rc file and open a new shell
#        (or remove the directory from PATH by hand in running shells);
#     2. cached-exec --shims-remove      # the shims (and their directory)
#     3. cached-exec --clear             # optional: the images

__cx_shims=${CACHED_EXEC_SHIMS_DIR:-${XDG_DATA_HOME:-${HOME-}/.local/share}/cached-exec/shims}
case ":${PATH-}:" in
	*":${__cx_shims}:"*) ;;
	*) PATH="${__cx_shims}:${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"; export PATH ;;
esac
unset __cx_shims
# Forget program locations the shell hashed before the shims were on PATH.
hash -r 2>/dev/null || true
