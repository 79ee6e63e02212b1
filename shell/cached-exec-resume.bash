__cx_so=$SHELLOPTS __cx_bo=$BASHOPTS; \builtin shopt -u expand_aliases # line 1: before any alias can bite
# cached-exec resume adapter for bash (docs/resume-protocol.md).
#
#   bash -c '. "$0"' /path/cached-exec-resume.bash [--init FILE]... -- ARGV...   (the launcher's form:
#                                          at the checkpoint bash holds no fd but 0-2 and the resume fd)
#   bash /path/cached-exec-resume.bash [--init FILE]... -- ARGV...               (works too; keeps fd 255)
#
# Sources each --init FILE (with no positional parameters), then, with
# CACHED_EXEC_RESUME_FD set, blocks in a plain `read -u` of that fd: the
# checkpoint. The context read there (cold: ARGV after "--", this process's
# environment and cwd) says what to run: ARGV is bash's own argv, e.g.
# `bash -e script.sh a b` or `bash -c 'cmd' name x`. The adapter applies the
# caller's environment (its difference from the one this process started
# with), SHLVL, PWD, OLDPWD, $BASH, $_, $0, BASH_EXECUTION_STRING, the
# positional parameters and options (-e -u -x -v -f -h -C -a -B -H -E -T -P
# -k -b, -o NAME, +o NAME, -O/+O SHOPT, combined as in -euo pipefail),
# reseeds RANDOM, zeroes SECONDS, empties the hash table, then sources the
# script (`. -- "$0"`) or evals the -c string at its own top level.
#
# Runs the real bash cold instead (exec -a ARGV0 bash ARGV[1..], with exactly
# the caller's environment and without the init) for what it cannot
# reproduce: -i -l -s -r -n -p -m -t -D, long options, -o history/monitor/
# posix/..., -O extdebug, no script (stdin), a script that is missing,
# unreadable, not a regular file, holds a NUL byte, or is in the cwd and also
# on PATH; argv[0] naming sh, su, rbash or a login shell; an environment
# difference in a variable bash treats specially at startup (BASH*, IFS, PS4,
# SHELLOPTS, POSIXLY_CORRECT, ENV, ...) or one bash cannot name.
#
# Differences from a plain `bash script.sh` / `bash -c CMD` that remain
# (measured with bash 5.2.15):
# - The script is sourced by the adapter: BASH_SOURCE and BASH_LINENO have
#   an extra entry for the adapter, FUNCNAME in a function is (f source
#   source) in the launcher form, (f source main) in the script form, for
#   (f main); `caller 0` says "2 source s.sh" for "2 main s.sh"; BASH_ARGV
#   and BASH_ARGC (read-only) hold the `.` frames' words. Error messages do
#   not change: they name BASH_SOURCE[0], the script as bash would open it,
#   with the script's own line numbers.
# - `return` at a script's top level ends the script with that status
#   (cold: "return: can only `return' from a function or sourced script").
# - `.` reads the script whole before running it; cold bash reads as it goes.
# - Launcher form: a fatal expansion error in a script (set -u and an unset
#   variable, ${x:?msg}) exits 127, as `bash -c` does, instead of 1; and $-
#   contains "c". (Script form: the same two hold for -c strings instead.)
# - -c strings run through `eval` inside the adapter: their error messages
#   name the adapter and its last line (".../cached-exec-resume.bash: line
#   N: x: command not found" for "bash: line 1: x: command not found"),
#   syntax errors read "...: eval: line N: ..." for "bash: -c: line N: ...",
#   LINENO counts from that line, and the last command is forked rather than
#   exec'd in place (bash -c's one-shot optimisation).
# - xtrace: PS4's first character repeats once per `.`/eval level ("+++ cmd"
#   in the launcher form for "+ cmd"). No adapter command shows in the trace:
#   it goes to /dev/null until a one-shot DEBUG trap (kept in `.` by set -T)
#   sees the user's first command (not when the init set a DEBUG trap or
#   BASH_XTRACEFD).
# - PIPESTATUS exists, as (0), at the first command (cold: unset).
# - The hash table starts empty even with an init (a restored image must not
#   run a path hashed days ago). The init's functions, variables, aliases,
#   options and traps are kept, as with BASH_ENV=init bash script.sh, except
#   that a DEBUG trap of the init's is suspended inside the script (`.`
#   without set -T) and fires for the adapter's last commands.
# - Cold fallback: the exec'd bash gets the caller's environment except `_`
#   (bash sets it to the path it runs), SHLVL as a plain number (bash's
#   exec lowers it by one; same resulting level), and variables whose names
#   bash cannot hold, which pass on as this process got them.

# Adapter state lives in variables and functions named __cx_*; all are unset
# before the first command of the user's code runs (the init sees them).

# Options the adapter's own code must not run under; remembered, switched off,
# and given back to the init and to the user's code.
__cx_set_opts=(allexport errexit errtrace functrace keyword noglob nounset pipefail posix verbose xtrace)
__cx_shopt_opts=(expand_aliases nocasematch nullglob failglob lastpipe inherit_errexit)

__cx_norm() {
  builtin set +o allexport +o errexit +o errtrace +o functrace +o keyword +o noglob +o nounset \
    +o pipefail +o posix +o verbose +o xtrace
  builtin shopt -u "${__cx_shopt_opts[@]}"
}

__cx_save() {
  __cx_so=$SHELLOPTS __cx_bo=$BASHOPTS
  __cx_norm
}

__cx_restore() {
  local __cx_o
  for __cx_o in "${__cx_set_opts[@]}"; do
    if [[ :$__cx_so: == *:$__cx_o:* ]]; then builtin set -o "$__cx_o"; fi
  done
  for __cx_o in "${__cx_shopt_opts[@]}"; do
    if [[ :$__cx_bo: == *:$__cx_o:* ]]; then builtin shopt -s "$__cx_o"; fi
  done
}

__cx_bad() {
  builtin printf '%s\n' 'cached-exec: bad resume context' >&2
  builtin trap - EXIT
  builtin exit 125
}

# Unsets a variable itself, even a nameref (whose target stays).
__cx_unset() {
  builtin unset -n "$1" 2>/dev/null
  builtin unset -v "$1" 2>/dev/null
}

# (No =~ anywhere: it would leave BASH_REMATCH behind.)
__cx_valid_name() { [[ $1 == [A-Za-z_]* && $1 != *[!A-Za-z0-9_]* ]]; }
__cx_digits() { [[ -n $1 && $1 != *[!0-9]* && ${#1} -le ${2:-9} ]]; }

# PATH's directories in __cx_dirs ("" as "."), without a here-string's pipe.
__cx_path_dirs() {
  local rest=${1-} d
  __cx_dirs=()
  [[ -n $rest ]] || return 0
  rest+=:
  while [[ -n $rest ]]; do
    d=${rest%%:*}
    rest=${rest#*:}
    __cx_dirs+=("${d:-.}")
  done
}

# The environment this process started with, NAME=VALUE, as execve gave it.
__cx_start_env() {
  __cx_senv=()
  if [[ -r /proc/self/environ ]] && builtin mapfile -d '' __cx_senv < /proc/self/environ; then
    return
  fi
  local c n i letters=ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_
  local -a names
  for ((i = 0; i < ${#letters}; i++)); do
    c=${letters:i:1}
    builtin eval "names=(\"\${!$c@}\")"
    for n in "${names[@]}"; do
      if [[ ${!n@a} == *x* && -v $n ]]; then __cx_senv+=("$n=${!n}"); fi
    done
  done
}

# The real bash binary (never a cached-exec shim that $BASH may name): the
# cold fallback execs it.
__cx_find_bash() {
  __cx_bash=$BASH
  [[ -e /proc/self/exe ]] || return 0
  [[ $BASH -ef /proc/self/exe ]] && return 0
  local d
  __cx_path_dirs "/usr/bin:/bin:/usr/local/bin:${PATH-}"
  for d in "${__cx_dirs[@]}"; do
    if [[ $d/bash -ef /proc/self/exe ]]; then __cx_bash=$d/bash; return 0; fi
  done
}

# Reads the context: __cx_argv, __cx_env, __cx_seed (empty when cold).
__cx_context() {
  __cx_seed=
  if [[ ! -v CACHED_EXEC_RESUME_FD ]]; then
    __cx_argv=("${__cx_user[@]}")
    __cx_env=("${__cx_senv[@]}")
    __cx_cwd=$__cx_cwd0
    ((${#__cx_argv[@]})) || __cx_bad
    return 0
  fi
  __cx_fd=$CACHED_EXEC_RESUME_FD
  __cx_digits "$__cx_fd" || __cx_bad
  __cx_announce
  __cx_magic=
  # The checkpoint: the first read of the fd, a plain read(2).
  IFS= builtin read -r -d '' -u "$__cx_fd" __cx_magic
  builtin mapfile -d '' -u "$__cx_fd" __cx_ctx
  # The fd stays open until the context is applied (__cx_close): its close
  # marks the end of the resume for the snapshot's differential runs.
  builtin unset -v CACHED_EXEC_RESUME_FD
  [[ $__cx_magic == 'cached-exec-resume 1' ]] || __cx_bad
  local n=${#__cx_ctx[@]} i=0 argc envc
  argc=${__cx_ctx[0]-}
  __cx_digits "$argc" && ((10#$argc > 0 && 10#$argc + 4 <= n)) || __cx_bad
  argc=$((10#$argc))
  __cx_argv=("${__cx_ctx[@]:1:argc}")
  i=$((1 + argc))
  envc=${__cx_ctx[i]}
  __cx_digits "$envc" && ((i + 1 + 10#$envc + 2 <= n)) || __cx_bad
  envc=$((10#$envc))
  __cx_env=("${__cx_ctx[@]:i+1:envc}")
  i=$((i + 1 + envc))
  __cx_cwd=${__cx_ctx[i]}
  __cx_seed=${__cx_ctx[i + 1]}
  [[ ${#__cx_seed} -eq 32 && $__cx_seed != *[!0-9a-f]* && $__cx_cwd == /* ]] || __cx_bad
  for ((i += 2; i < n; i++)); do # optional fields after the seed
    case ${__cx_ctx[i]} in
    cached-exec-amend=*) __cx_amend=${__cx_ctx[i]#*=} ;;
    cached-exec-stats=*) __cx_stats=${__cx_ctx[i]#*=} ;;
    esac
  done
  builtin unset -v '__cx_ctx'
}

# bash's own argv parsing (shell.c) for the forms run here. Sets __cx_mode
# (script or c), __cx_flags (set/shopt words), __cx_zero ($0), __cx_args.
# Returns 1 for anything that must run cold.
__cx_parse() {
  local a0=${__cx_argv[0]} base i=1 n=${#__cx_argv[@]} a j ch on want_c=0
  local interactive='interactive and login shells are not resumed after an init (their terminal, job control and readline state belong to the session that starts them): running bash cold, without the init'
  [[ $a0 == -* ]] && { __cx_why=$interactive; return 1; } # login shell
  base=${a0##*/}
  [[ $base == sh || $base == su || $base == rbash ]] && return 1
  __cx_flags=()
  while ((i < n)); do
    a=${__cx_argv[i]}
    if [[ $a == - || $a == -- ]]; then i=$((i + 1)); break; fi
    [[ $a == [-+]?* ]] || break
    [[ $a == --* || $a == ++* ]] && return 1         # long options
    on=${a:0:1}
    i=$((i + 1))
    for ((j = 1; j < ${#a}; j++)); do
      ch=${a:j:1}
      case $ch in
        c) [[ $on == - ]] || return 1; want_c=1 ;;
        [abefhkuvxBCEHPT]) __cx_flags+=(set "$on$ch") ;;
        o)
          ((i < n)) || return 1
          case ${__cx_argv[i]} in
            allexport | braceexpand | emacs | errexit | errtrace | functrace | hashall | histexpand | \
              ignoreeof | interactive-comments | keyword | noclobber | noglob | nolog | notify | nounset | \
              physical | pipefail | verbose | vi | xtrace) ;;
            *) return 1 ;;
          esac
          __cx_flags+=(set "${on}o" "${__cx_argv[i]}")
          i=$((i + 1))
          ;;
        O)
          ((i < n)) || return 1
          [[ ${__cx_argv[i]} == extdebug ]] && return 1
          if [[ $on == - ]]; then __cx_flags+=(shopt -s "${__cx_argv[i]}"); else __cx_flags+=(shopt -u "${__cx_argv[i]}"); fi
          i=$((i + 1))
          ;;
        i | l) __cx_why=$interactive; return 1 ;;
        *) return 1 ;;                                 # s r n p m t D and unknown letters
      esac
    done
  done
  if ((want_c)); then
    ((i < n)) || return 1
    __cx_mode=c
    __cx_cmd=${__cx_argv[i]}
    if ((i + 1 < n)); then __cx_zero=${__cx_argv[i + 1]}; else __cx_zero=$a0; fi
    __cx_args=("${__cx_argv[@]:i+2}")
    return 0
  fi
  if ((i >= n)); then                                 # would read stdin: interactive on a terminal
    [[ -t 0 && -t 2 ]] && __cx_why=$interactive
    return 1
  fi
  __cx_mode=script
  __cx_zero=${__cx_argv[i]}
  __cx_args=("${__cx_argv[@]:i+1}")
  __cx_script_ok "$__cx_zero"
}

# The file `bash SCRIPT` would open must be the one `. SCRIPT` opens, under
# the same name (BASH_SOURCE, error messages), and safe to read whole.
__cx_script_ok() {
  local s=$1 path= d
  [[ -n $s ]] || return 1
  if [[ $s == */* ]]; then
    path=$s
  elif [[ -e $s || -L $s ]]; then
    # bash opens it in the cwd; `.` would search PATH first.
    [[ :$BASHOPTS: == *:sourcepath:* ]] || return 1
    __cx_path_dirs "${PATH-}"
    for d in "${__cx_dirs[@]}"; do
      [[ -e $d/$s || -L $d/$s ]] && return 1
    done
    path=$s
  else
    # bash and `.` both take find_path_file's answer.
    [[ :$BASHOPTS: == *:sourcepath:* ]] || return 1
    __cx_path_dirs "${PATH-}"
    for d in "${__cx_dirs[@]}"; do
      if [[ -e $d/$s ]]; then path=$d/$s; break; fi
    done
  fi
  [[ -n $path && -f $path && -r $path ]] || return 1
  # A NUL anywhere: bash would run the text before it, `.` refuses or strips.
  local -a parts
  builtin mapfile -d '' -n 2 parts < "$path" || return 1
  ((${#parts[@]} < 2))
}

# The variables a restore cannot take from the caller (__cx_special: their
# value; __cx_defaulted: whether they are set), announced to the snapshot
# before the checkpoint (docs/resume-protocol.md): the image is keyed on them,
# so a caller that differs gets another image instead of a resumed bash that
# goes cold. Keep these lists the same as the two functions below.
__cx_announce() {
  local __cx_n
  for __cx_n in 'BASH*' SHELLOPTS POSIXLY_CORRECT ENV IFS PS4 SECONDS RANDOM SRANDOM LINENO 'EPOCH*' \
    UID EUID PPID GROUPS FUNCNAME DIRSTACK HISTCMD COMP_WORDBREAKS OPTIND OPTERR \
    HOSTTYPE MACHTYPE OSTYPE MAILCHECK HISTFILE HISTSIZE HISTFILESIZE; do
    [[ -e /proc/self/fd/$__cx_fd/env/$__cx_n ]]
  done
  for __cx_n in PATH SHELL TERM HOSTNAME PS1 PS2; do
    [[ -e /proc/self/fd/$__cx_fd/env-set/$__cx_n ]]
  done
}

# Special to bash when imported or defaulted: a difference in one of these
# (or a name bash cannot hold) is not reproduced by assignment.
__cx_special() {
  case $1 in
    BASH* | SHELLOPTS | POSIXLY_CORRECT | ENV | IFS | PS4 | SECONDS | RANDOM | SRANDOM | LINENO | EPOCH* | \
      UID | EUID | PPID | GROUPS | FUNCNAME | DIRSTACK | HISTCMD | COMP_WORDBREAKS | OPTIND | OPTERR | \
      HOSTTYPE | MACHTYPE | OSTYPE | MAILCHECK | HISTFILE | HISTSIZE | HISTFILESIZE) return 0 ;;
  esac
  return 1
}
__cx_defaulted() {
  case $1 in
    PATH | SHELL | TERM | HOSTNAME | PS1 | PS2) return 0 ;;
  esac
  __cx_special "$1"
}

# Computes the environment difference (__cx_set: NAME=VALUE, __cx_gone: NAME).
# Returns 1 when it cannot be applied.
__cx_diff() {
  local kv n
  declare -gA __cx_S=() __cx_C=()
  for kv in "${__cx_senv[@]}"; do
    [[ $kv == *=* ]] && __cx_S[${kv%%=*}]=${kv#*=}
  done
  builtin unset -v '__cx_S[CACHED_EXEC_RESUME_FD]'
  __cx_set=() __cx_gone=()
  for kv in "${__cx_env[@]}"; do
    [[ $kv == *=* ]] || continue
    n=${kv%%=*}
    __cx_C[$n]=${kv#*=}
  done
  for n in "${!__cx_C[@]}"; do
    case $n in _ | PWD | OLDPWD | SHLVL) continue ;; esac
    if [[ -v __cx_S[$n] && ${__cx_S[$n]} == "${__cx_C[$n]}" ]]; then continue; fi
    __cx_valid_name "$n" || return 1
    __cx_special "$n" && return 1
    __cx_set+=("$n")
  done
  for n in "${!__cx_S[@]}"; do
    case $n in _ | PWD | OLDPWD | SHLVL) continue ;; esac
    [[ -v __cx_C[$n] ]] && continue
    __cx_valid_name "$n" || return 1
    __cx_defaulted "$n" && return 1
    __cx_gone+=("$n")
  done
  return 0
}

# The real program, cold, with exactly the caller's environment.
# Closes the resume fd once the context is applied (docs/resume-protocol.md).
__cx_close() {
  [[ -n ${__cx_fd-} ]] || return 0
  exec {__cx_fd}<&- # plain exec: with `builtin` the redirection would be undone
  __cx_fd=
}

# After a restore that goes cold after all: the statistics record the launcher
# prepared (outcome FAIL_ADAPTER: the fold counts this run as a fallback, not
# the HIT the launcher recorded), appended to its log in one write. Only to
# the user's own regular file, not through a symlink.
__cx_amend_stats() {
  local hex=${__cx_amend-} log=${__cx_stats-} esc= i
  __cx_amend= __cx_stats=
  [[ ${#hex} -eq 64 && $hex != *[!0-9a-f]* && $log == /* ]] || return 0
  [[ -f $log && ! -L $log && -O $log ]] || return 0
  for ((i = 0; i < 64; i += 2)); do esc+="\\x${hex:i:2}"; done
  builtin printf "$esc" 2>/dev/null >>"$log" || :
}

__cx_cold() {
  local n kv
  local -a names
  __cx_close
  __cx_amend_stats
  # Said once, for the forms a user asked for on purpose (bash -i): the others are silent.
  if [[ -n ${__cx_why-} ]]; then builtin printf 'cached-exec: %s\n' "$__cx_why" >&2; fi
  __cx_norm
  [[ -v __cx_xfd ]] && builtin unset -v BASH_XTRACEFD # closes that fd
  builtin trap - EXIT
  builtin mapfile -t names < <(builtin compgen -e)
  for n in "${names[@]}"; do
    [[ -v __cx_C[$n] ]] || __cx_unset "$n" || builtin export -n "$n" 2>/dev/null
  done
  [[ -v __cx_C[OLDPWD] ]] || builtin unset -v OLDPWD 2>/dev/null
  for n in "${!__cx_C[@]}"; do
    __cx_valid_name "$n" && [[ $n != _ ]] || continue
    if [[ ${!n@a} == *x* && -v $n && ${!n} == "${__cx_C[$n]}" ]]; then continue; fi
    __cx_unset "$n"
    builtin export -- "$n=${__cx_C[$n]}" 2>/dev/null
  done
  builtin mapfile -t names < <(builtin compgen -A function)
  for n in "${names[@]}"; do
    [[ -v __cx_C["BASH_FUNC_$n%%"] ]] || builtin export -nf -- "$n" 2>/dev/null
  done
  # exec lowers SHLVL by one (so that the new bash counts it back up); the
  # new bash must arrive at the level the caller's SHLVL gives it.
  __cx_level
  if [[ -v __cx_C[SHLVL] ]] && ((__cx_level > 0)); then
    __cx_warn_level
    builtin export SHLVL=$__cx_level
  fi
  builtin exec -a "${__cx_argv[0]}" "$__cx_bash" "${__cx_argv[@]:1}"
}

# The shell level bash computes at startup from the caller's SHLVL
# (variables.c adjust_shell_level): a decimal number (blanks and a sign
# allowed, else 0) plus one, as an int, kept within 0..999. Sets __cx_level,
# and __cx_too_high to the level bash warns about.
__cx_level() {
  local v=${__cx_C[SHLVL]-} sign= digits lvl=0
  __cx_too_high=
  v=${v#"${v%%[![:space:]]*}"}
  v=${v%"${v##*[![:space:]]}"}
  if [[ $v == [-+]* ]]; then sign=${v:0:1} v=${v:1}; fi
  if [[ -n $v && $v != *[!0-9]* ]]; then
    digits=${v#"${v%%[!0]*}"}
    if ((${#digits} < 19)) || [[ ${#digits} -eq 19 && $digits < 9223372036854775808 ]]; then
      lvl=$((10#${digits:-0}))
      [[ $sign == - ]] && lvl=$((-lvl))
    fi
  fi
  lvl=$(((lvl + 1) & 0xffffffff))
  ((lvl >= 0x80000000)) && lvl=$((lvl - 0x100000000))
  if ((lvl < 0)); then
    lvl=0
  elif ((lvl >= 1000)); then
    __cx_too_high=$lvl
    lvl=1
  fi
  __cx_level=$lvl
}

# bash's warning for a level that high, which a cold bash prints at startup
# (this process did already when it is the cold run itself).
__cx_warn_level() {
  [[ -n $__cx_too_high && -n $__cx_seed ]] || return 0
  local name=${__cx_argv[0]}
  [[ -z $name || $name == - ]] && name=bash
  builtin printf '%s: warning: shell level (%d) too high, resetting to 1\n' "$name" "$__cx_too_high" >&2
}

# PWD and OLDPWD as bash sets them at startup (variables.c set_pwd); also
# bash's own idea of the cwd. The process already is in the caller's cwd.
__cx_pwd() {
  local p=${__cx_C[PWD]-}
  if [[ -v __cx_C[PWD] && $p == /* && $p -ef . ]]; then
    case /$p/ in */./* | */../*) return 1 ;; esac   # cd would go elsewhere
    builtin cd -L -- "$p" 2>/dev/null || return 1
    builtin export PWD="$p"
  else
    builtin cd -P . 2>/dev/null || return 1
    builtin export PWD
  fi
  if [[ -v __cx_C[OLDPWD] && -d ${__cx_C[OLDPWD]} ]]; then
    builtin export OLDPWD="${__cx_C[OLDPWD]}"
  else
    builtin unset -v OLDPWD
    builtin export OLDPWD
  fi
}

# $BASH as bash computes it from argv[0] (shell.c get_bash_name); this
# process's own is right already for the same argv[0] and PATH.
__cx_bash_name() {
  local a=${__cx_argv[0]} d
  if [[ $a == "$__cx_argv0" && ${__cx_C[PATH]-} == "${__cx_S[PATH]-}" && $a != ./* ]]; then
    return 0
  elif [[ $a == /* ]]; then
    BASH=$a
  elif [[ $a == ./* ]]; then
    BASH=$PWD${a:1}
  elif [[ $a == */* ]]; then
    BASH=$PWD/$a
  elif [[ -n $a ]]; then
    __cx_path_dirs "${PATH-}"
    for d in "${__cx_dirs[@]}"; do
      if [[ -f $d/$a && -x $d/$a ]]; then
        [[ $d == /* ]] || d=$PWD/$d
        BASH=$d/$a
        return
      fi
    done
  fi
}

# Everything between the checkpoint and the user's code that needs no
# top-level scope. Never returns when the run goes cold.
__cx_apply() {
  __cx_context
  local ok=1 n
  # The caller's cwd (an init's `cd` does not carry over, as it cannot into
  # a restored process).
  if [[ -n $__cx_cwd && ! . -ef $__cx_cwd ]]; then builtin cd -P -- "$__cx_cwd" 2>/dev/null || ok=0; fi
  __cx_parse || ok=0
  __cx_diff || ok=0
  ((ok)) || __cx_cold
  for n in "${__cx_gone[@]}"; do
    __cx_unset "$n" || __cx_cold
  done
  for n in "${__cx_set[@]}"; do
    __cx_unset "$n" && builtin export -- "$n=${__cx_C[$n]}" 2>/dev/null || __cx_cold
  done
  __cx_pwd || __cx_cold
  __cx_level
  __cx_warn_level
  builtin export SHLVL=$__cx_level
  __cx_bash_name
  if [[ -n $__cx_seed && ! -v __cx_C[HOSTNAME] && ${HOSTNAME-} == "$__cx_host0" && -r /proc/sys/kernel/hostname ]]; then
    builtin read -r HOSTNAME < /proc/sys/kernel/hostname
  fi
  if [[ -n $__cx_seed ]]; then RANDOM=$((16#${__cx_seed:0:8})); else RANDOM=$SRANDOM; fi
  SECONDS=0
  builtin hash -r
  __cx_close
  if [[ $__cx_mode == c ]]; then
    BASH_EXECUTION_STRING=$__cx_cmd
  else
    builtin unset -v BASH_EXECUTION_STRING
  fi
  BASH_ARGV0=$__cx_zero
  # $_ at the first command: the caller's $_ (environment), else argv[0].
  # The last command before the user's code unsets the adapter's variables
  # with this as its last word; it must name no variable of the user's.
  if [[ -v __cx_C[_] ]]; then __cx_last=${__cx_C[_]}; else __cx_last=${__cx_argv[0]}; fi
  if [[ $__cx_last == *[[]* ]] || { __cx_valid_name "$__cx_last" && builtin declare -p -- "$__cx_last" >/dev/null 2>&1; }; then
    __cx_last=__cx_last
  fi
}

# Gives the init's options back and applies bash's command-line options.
# When xtrace ends up on, none of the adapter's remaining commands may show:
# they trace to /dev/null until a DEBUG trap (kept in `.` by set -T) sees the
# user's first command, then unsets BASH_XTRACEFD (closing that fd) and the
# adapter's variables, with the caller's $_ as the unset's last word.
__cx_finish() {
  local i=0 f trace=0
  if [[ :$__cx_so: == *:xtrace:* ]]; then trace=1; fi
  for f in "${__cx_flags[@]}"; do [[ $f == [-+]*x* || $f == xtrace ]] && trace=1; done
  # (Not over a DEBUG trap or trace fd of the init's: then the adapter's last
  # commands show in the trace.)
  if ((trace)) && [[ ! -v BASH_XTRACEFD && -z $(builtin trap -p DEBUG) ]] && exec {__cx_xfd}>/dev/null; then
    BASH_XTRACEFD=$__cx_xfd
  else
    trace=0
  fi
  __cx_restore
  while ((i < ${#__cx_flags[@]})); do
    case ${__cx_flags[i]} in
      set)
        if [[ ${__cx_flags[i + 1]} == [-+]o ]]; then
          builtin set "${__cx_flags[i + 1]}" "${__cx_flags[i + 2]}"
          i=$((i + 3))
        else
          builtin set "${__cx_flags[i + 1]}"
          i=$((i + 2))
        fi
        ;;
      shopt)
        builtin shopt "${__cx_flags[i + 1]}" "${__cx_flags[i + 2]}" 2>/dev/null || __cx_cold
        i=$((i + 3))
        ;;
    esac
  done
  ((trace)) || return 0
  if [[ $- != *x* ]]; then
    builtin unset -v BASH_XTRACEFD __cx_xfd
    return 0
  fi
  [[ $- == *T* ]] && __cx_keep_T=1
  builtin set -T
  builtin trap -- '
    if [[ -v __cx_go ]]; then
      [[ -v __cx_keep_T ]] || builtin set +T
      builtin trap - DEBUG
      ! builtin unset -v BASH_XTRACEFD "${!__cx_@}" "$__cx_last" 2>/dev/null
    elif [[ $BASH_COMMAND == "builtin . -- \"\$0\"" || $BASH_COMMAND == "builtin eval -- \"\$BASH_EXECUTION_STRING\"" ]]; then
      __cx_go=1
    fi' DEBUG
  __cx_hook=1
}

__cx_norm
__cx_cwd0=${PWD-}
__cx_host0=${HOSTNAME-}
__cx_argv0=
[[ -r /proc/self/cmdline ]] && IFS= builtin read -r -d '' __cx_argv0 < /proc/self/cmdline
__cx_start_env
__cx_find_bash

__cx_inits=()
while (($#)); do
  case $1 in
    --init) (($# >= 2)) || __cx_bad; __cx_inits+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) __cx_bad ;;
  esac
done
__cx_user=("$@")
builtin set --

# The init runs under the options it would have had (those bash started
# with); the options it leaves are kept for the user's code. For a snapshot,
# its start is marked (docs/resume-protocol.md): the variables bash assigned
# before it are the environment it imported, not dependencies.
[[ -v CACHED_EXEC_RESUME_FD && -e /proc/self/fd/$CACHED_EXEC_RESUME_FD/init ]]
for __cx_i in "${__cx_inits[@]}"; do
  __cx_restore
  builtin . "$__cx_i"
  __cx_save
done

__cx_apply
# Last line, read whole before any of it runs (so -v echoes none of it):
__cx_finish; builtin set -- "${__cx_args[@]}"; builtin unset -f __cx_norm __cx_announce __cx_save __cx_restore __cx_bad __cx_unset __cx_valid_name __cx_digits __cx_path_dirs __cx_start_env __cx_find_bash __cx_context __cx_parse __cx_script_ok __cx_special __cx_defaulted __cx_diff __cx_amend_stats __cx_cold __cx_close __cx_level __cx_warn_level __cx_pwd __cx_bash_name __cx_apply __cx_finish; [[ -v __cx_hook ]] || builtin unset -v "${!__cx_@}" "$__cx_last" 2>/dev/null || ((1)); case ${BASH_EXECUTION_STRING+c} in c) builtin eval -- "$BASH_EXECUTION_STRING" ;; *) builtin . -- "$0" ;; esac
