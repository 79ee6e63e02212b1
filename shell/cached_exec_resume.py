# cached-exec resume adapter for python3 (docs/resume-protocol.md).
#
#   python3 /path/cached_exec_resume.py [--preload MOD,MOD...] [--init FILE]... -- ARGV...
#   python3 /path/cached_exec_resume.py --learn script:/ABS/PATH|module:NAME -- ARGV...
#
# --learn (learned preloads): the init imports what earlier runs of that
# script or -m module imported, read from the cache's learned/<hash> file
# (see _Learned); every run through the adapter that was restored or ran cold
# adds what it imported to that file at its end. Cold runs preload nothing.
#
# Imports each --preload module and runs each --init FILE (runpy.run_path, in
# its own namespace), without the script directory python would put first on
# sys.path (its own is removed; the program's is added after the checkpoint).
# With CACHED_EXEC_RESUME_FD set it then blocks in a plain
# os.read() of that fd: the checkpoint. The context arriving there (or, cold,
# ARGV after "--" with this process's own environment and cwd) says what to
# run: ARGV is python's own argv, one of
#     python3 [-u] SCRIPT [ARGS]     python3 [-u] -c CMD [ARGS]     python3 [-u] -m MOD [ARGS]
# (short options may be combined: -uc CMD). The adapter applies the caller's
# environment (the difference from the one this process started with; what
# the init set itself is kept unless the caller's value differs from the
# start's), reseeds `random` (and numpy's global RandomState, if imported),
# gives threading's main thread its new native id, multiprocessing a fresh
# authkey and logging a fresh start time, rebuilds sys.stdin/stdout/stderr
# for the real fds 0-2 exactly as python's startup does (isatty, -u,
# PYTHONUNBUFFERED, PYTHONIOENCODING, locale), drops the import system's
# cached directory listings, sets sys.argv, sys.orig_argv and sys.path[0] as
# python would, and runs the code as a fresh __main__ module: __name__,
# __file__ (absolute as in 3.9+), __loader__, __spec__, __builtins__ and
# __annotations__ as python sets them; -m through runpy._run_module_as_main
# as python does. Uncaught exceptions go through sys.excepthook with the
# adapter's frames cut off (same text, exit status 1; KeyboardInterrupt ends
# the process by SIGINT as python does); SystemExit, stdio flushing and atexit
# follow python's own order, -c/-m included.
#
# Runs the real python cold instead (execve(sys.executable, ARGV, caller's
# environment) in the caller's cwd, without the preload): any other option
# (-O -B -E -I -s -S -X -W -b -d -i -q -v -x -P, long options; sys.flags is
# read-only), no script or "-" (stdin), a script that is not a readable
# regular file, is compiled (.pyc), a zip or a directory, source that does
# not compile (python's own message then), a script directory (cwd for -c/-m)
# holding a module or package named like one the init imported or tried to
# import (a cold run would import that local file), ARGV[0] naming another
# python than sys.executable, a caller environment differing in PYTHON*,
# LC_*, LANG, LANGUAGE, TZ (or HOME with user site-packages, TMPDIR/TEMP/TMP
# once tempfile chose its dir), relative or empty PYTHONPATH entries with
# another cwd than the snapshot's, a process cwd that is not the context's
# (after a chdir to it), stdin a directory, a preload or init that fails
# (cold direct runs only; a snapshot then exits: a refusal). sys.flags,
# sys.warnoptions and the stdio configuration therefore are the snapshot's
# and equal a plain run's.
#
# Measured differences from a plain `python3 app.py` / `-c` / `-m` (3.11):
# - Two frames below the program's: the adapter's module frame and a
#   one-line frame ("sys", line 1; "<sys>", line 0 from 3.13; its globals are
#   sys.__dict__), where a plain run has none. So sys._getframe(1) at module
#   level returns a frame (plain: ValueError), inspect.stack() and
#   traceback.print_stack() list them, and RecursionError comes two calls
#   earlier. Tracebacks are cut, and warnings.warn() with a stacklevel past
#   the program reports "sys:1" with sys.__dict__'s registry, as plain.
# - The hash secret (str/bytes hashes, set order) is the snapshot's: all
#   restores of one image share it until the image is re-taken
#   (CACHED_EXEC_MAX_AGE). Acceptable because the secret stays secret (the
#   image is readable by its owner only) and hash flooding needs an attacker
#   to learn it, which takes many timed requests to one long-lived process,
#   not a short run; the per-process secret of a plain run adds nothing for
#   such runs. PYTHONHASHSEED in the environment is part of the key (an image
#   per value; -R and a changed value run cold). A program that needs a fresh
#   secret per process (a server exposed to hash flooding) should run with
#   CACHED_EXEC_DISABLE=1. Other randomness the init drew (random.Random
#   instances other than random's own, uuid's clock sequence) is shared too.
# - The C-level environ (what children see with env=None) holds the caller's
#   variables, but where the caller's order differs from the snapshot's, in
#   the snapshot's (new ones last); os.environ is in the caller's order.
#   Entries without "=" and repeated names are dropped, as os.environ does.
# - KeyboardInterrupt between the restore and the program's first line
#   prints the adapter's traceback.
# - Objects the init bound to the old sys.stdout/stderr (a logging handler
#   made at import time) keep writing to the same fd through the old
#   stream, buffered as /dev/null was (fully), flushed at exit.
# - Modules imported by the init saw the adapter's sys.argv and __main__.
# - sys.executable and the stdio configuration come from the snapshot (both
#   are checked or keyed to be what the caller would get).
# Cold direct runs (no CACHED_EXEC_RESUME_FD) take the same path with the
# context read from this process.

import sys
import os

_G = globals()
_MAGIC = b'cached-exec-resume 1'
_FD_VAR = 'CACHED_EXEC_RESUME_FD'
_SENSITIVE = ('LANG', 'LANGUAGE', 'TZ')
_STATE = {}


def _die(msg, status=125):
    os.write(2, ('cached-exec: %s\n' % msg).encode('utf-8', 'replace'))
    os._exit(status)


# Calls f(a, b) from a frame python would not have: warnings.warn(stacklevel=N)
# reaching it reports "sys:1" ("<sys>:0" from 3.13 on) and uses sys.__dict__'s
# registry, as when the stack ends there in a plain run.
_R = compile('lambda f, a, b: f(a, b)', '<sys>' if sys.version_info >= (3, 13) else 'sys', 'eval').co_consts[0]
_R = type(_die)(_R.replace(co_firstlineno=0) if sys.version_info >= (3, 13) else _R, sys.__dict__)


def _flush_std():
    for n in ('stderr', 'stdout'):
        try:
            getattr(sys, n, None).flush()
        except BaseException:
            pass


_RESUME = {'fd': None}


def _close_resume():
    """Closes the resume fd: after the context is applied (its close ends the
    resume for the snapshot's differential runs), or before a cold exec."""
    fd, _RESUME['fd'] = _RESUME['fd'], None
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _amend_stats():
    """After a restore, tells the statistics that this run went cold after all: the
    launcher counted a HIT and is gone. Appends the record it prepared to its log,
    opened as it does (no link followed, never created, the user's own regular
    file); any failure leaves the HIT counted."""
    rec, path = _RESUME.pop('amend', None), _RESUME.pop('stats', None)
    if rec is None or path is None:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if (st.st_mode & 0o170000) == 0o100000 and st.st_uid == os.geteuid():
            os.write(fd, rec)
    except OSError:
        pass
    finally:
        os.close(fd)


# Learned pages (src/restore/pages.c, docs/resume-protocol.md): the launcher asks a
# restored run to record which of the image's writable pages it wrote, so that
# later restores copy only those.
_PAGES_MAGIC = 0x3153454741505843  # "CXPAGES1"
_PAGES_MAX = 1024  # ranges the launcher reads (CX_PAGES_MAX)
_PAGE_SHIFT = os.sysconf('SC_PAGE_SIZE').bit_length() - 1  # pagemap has an entry per page
# A pagemap entry's top byte: present (bit 63) and not a page of the file (bit 61
# clear) is a copied page, i.e. one this process wrote or the launcher populated.
_COPIED = bytes(1 if b & 0xa0 == 0x80 else 0 for b in range(256))


def _pages_request(v):
    """cached-exec-pages=RUNS:DEV:INO:SIZE:MTIME_SEC:MTIME_NSEC:DATA_OFFSET:PATH"""
    f = v.split(b':', 7)
    if len(f) == 8 and all(x.isdigit() for x in f[:7]) and f[7][:1] == b'/' and f[7].endswith(b'.pages'):
        _RESUME['pages'] = (os.getpid(), [int(x) for x in f[:7]], f[7])


def _copied_ranges(dev, ino, data_offset):
    """[addr, len] of the copied pages of the image's writable regions, in address
    order, per mapping. Mappings of the image file below data_offset are not
    regions (the launcher's view of the metadata)."""
    with open('/proc/self/maps', 'rb') as m:
        lines = m.read().split(b'\n')
    fd = os.open('/proc/self/pagemap', os.O_RDONLY | os.O_CLOEXEC)
    out = []
    try:
        for line in lines:
            f = line.split(None, 5)
            if len(f) < 5 or f[1][1:2] != b'w' or int(f[4]) != ino or int(f[2], 16) < data_offset:
                continue
            major, minor = f[3].split(b':')
            if os.makedev(int(major, 16), int(minor, 16)) != dev:
                continue
            lo, hi = (int(x, 16) for x in f[0].split(b'-'))
            n = (hi - lo) >> _PAGE_SHIFT
            data = os.pread(fd, n * 8, (lo >> _PAGE_SHIFT) * 8)
            if len(data) != n * 8:
                return None
            top = data[7::8].translate(_COPIED)
            run, i = [], top.find(1)
            while i >= 0:
                j = top.find(0, i)
                j = n if j < 0 else j
                run.append([lo + (i << _PAGE_SHIFT), (j - i) << _PAGE_SHIFT])
                i = top.find(1, j)
            out.append(run)
    finally:
        os.close(fd)
    return out


def _merged(mappings):
    """The ranges, as many as the launcher reads: where there are more, ranges
    of one mapping less than `gap` apart become one, with the gap doubled until
    the limit holds (the launcher merges near ranges itself when it populates)."""
    gap = 0
    while True:
        out = []
        for run in mappings:
            prev = None
            for a, n in run:
                if prev is not None and a - (prev[0] + prev[1]) <= gap:
                    prev[1] = a + n - prev[0]
                else:
                    prev = [a, n]
                    out.append(prev)
        if len(out) <= _PAGES_MAX:
            return out
        gap = gap * 2 or 1 << _PAGE_SHIFT


def _record_pages(full):
    """At the end of a restored run the launcher asked to record: the pages it
    copied (the learned ranges it populated and what the run wrote besides), or
    FULL for python's full exit, whose teardown writes nearly every page after
    this point. The file is written as the cache's others are: temp + rename,
    no link followed, only into the euid's own images directory. Any failure
    leaves the file as it was (the launcher then populates every page)."""
    import struct
    req = _RESUME.pop('pages', None)
    if req is None or req[0] != os.getpid():  # a child the program forked is not the restored run
        return
    _, (runs, dev, ino, size, msec, mnsec, data_offset), path = req
    tmp = None
    try:
        ranges = [] if full else _copied_ranges(dev, ino, data_offset)
        if ranges is None:
            return
        ranges = ranges and _merged(ranges)
        head, name = os.path.split(path)
        st = os.lstat(head)
        if (st.st_mode & 0o170000) != 0o040000 or st.st_uid != os.geteuid() or st.st_mode & 0o022 \
                or os.path.basename(head) != b'images':
            return
        data = struct.pack('<6Q4I', _PAGES_MAGIC, dev, ino, size, msec, mnsec, 1 if full else 0,
                           min(runs + 1, 1 << 30), len(ranges), 0)
        data += b''.join(struct.pack('<2Q', a, n) for a, n in ranges)
        tmp = b'%s/.%s.%d.%d.tmp' % (head, name, os.getpid(), int(__import__('time').time() * 1000))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if os.write(fd, data) != len(data):
                raise OSError
        finally:
            os.close(fd)
        os.rename(tmp, path)
        tmp = None
    except BaseException:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except BaseException:
                pass


def _cold(argv, env, cwd=None):
    """Runs the real python as the caller would have: nothing of this process survives."""
    _close_resume()
    _amend_stats()
    _flush_std()
    if cwd is not None:
        try:
            if os.getcwd() != cwd:
                os.chdir(cwd)
        except OSError:
            pass
    exe = sys.executable
    try:
        os.execve(exe, list(argv) or [exe], env)
    except (OSError, ValueError) as e:
        _die('%s: %s' % (exe or 'python3', e), 126 if isinstance(e, PermissionError) else 127)


class _Recorder(object):
    """On sys.meta_path during the init: every top-level name an import looked for."""

    def __init__(self):
        self.names = set()

    def find_spec(self, name, path=None, target=None):
        self.names.add(name.partition('.')[0])
        return None


class _EnvReads(object):
    """During a snapshot's init: which variables it read through os.environ /
    os.environb / os.getenv (a dict the tracer cannot see), announced to the
    tracer before the checkpoint (docs/resume-protocol.md): the image is keyed
    on them. Listing or copying the whole mapping announces everything."""

    _ONE = ('__getitem__', '__setitem__', '__delitem__')
    _ALL = ('__iter__', '__len__', '__repr__', 'copy', '__or__', '__ror__', '__ior__')

    def __init__(self):
        self.names = set()
        self.everything = False
        self._saved = {}

    def install(self):
        cls = os._Environ
        for m in self._ONE + self._ALL:
            orig = cls.__dict__.get(m)
            if orig is None:
                continue
            self._saved[m] = orig
            setattr(cls, m, self._wrap(orig, m in self._ONE))

    def uninstall(self):
        for m, orig in self._saved.items():
            setattr(os._Environ, m, orig)
        self._saved.clear()

    def _wrap(self, orig, one):
        reads = self

        def wrapper(env, *args):
            if one and args:
                key = args[0]
                reads.names.add(os.fsdecode(key) if isinstance(key, bytes) else key)
            elif not one:
                reads.everything = True
            return orig(env, *args)
        return wrapper

    def announce(self, fd, sensitive):
        names = set(self.names) | set(sensitive)
        if self.everything or any(not isinstance(n, str) or not n or '/' in n or '\0' in n or '=' in n for n in names):
            names = {'*'}
        for n in sorted(names):
            try:
                os.stat('/proc/self/fd/%d/env/%s' % (fd, n))
            except (OSError, ValueError):
                pass


def _sensitive_names():
    """The variables whose difference sends a restore cold (_sensitive_diff): the image is keyed on them."""
    names = ['PYTHON*', 'LC_*'] + list(_SENSITIVE)
    if getattr(sys.modules.get('site'), 'ENABLE_USER_SITE', False):
        names.append('HOME')
    if getattr(sys.modules.get('tempfile'), 'tempdir', None) is not None:
        names += ['TMPDIR', 'TEMP', 'TMP']
    return names


def _parse_adapter_args(args):
    preload, inits, i = [], [], 0
    learn = None
    while i < len(args):
        a = args[i]
        if a == '--':
            return preload, inits, learn, args[i + 1:]
        if a == '--learn' and i + 1 < len(args) and learn is None:
            learn = args[i + 1]
            i += 2
            continue
        if a in ('--preload', '--init') and i + 1 < len(args):
            if a == '--preload':
                preload += [m for m in args[i + 1].split(',') if m]
            else:
                inits.append(args[i + 1])
            i += 2
        elif a.startswith('--preload='):
            preload += [m for m in a[10:].split(',') if m]
            i += 1
        elif a.startswith('--init='):
            inits.append(a[7:])
            i += 1
        else:
            break
    _die('bad adapter arguments (expected [--preload MODS] [--init FILE] -- ARGV)')


def _parse_python_argv(argv):
    """python's own option parsing for the forms the adapter reproduces: (kind, target, rest, unbuffered) or None."""
    i, unbuffered = 1, False
    while i < len(argv):
        a = argv[i]
        if a == '--':
            i += 1
            break
        if a[:1] != '-' or a == '-':
            break
        if a[:2] == '--':
            return None
        j = 1
        while j < len(a):
            ch = a[j]
            if ch in 'cm':
                if j + 1 < len(a):
                    return ch, a[j + 1:], argv[i + 1:], unbuffered
                if i + 1 < len(argv):
                    return ch, argv[i + 1], argv[i + 2:], unbuffered
                return None
            if ch != 'u':
                return None
            unbuffered = True
            j += 1
        i += 1
    if i >= len(argv) or argv[i] == '-':
        return None
    return 's', argv[i], argv[i + 1:], unbuffered


def _read_context(fd):
    try:
        chunks = [os.read(fd, 65536)]  # the checkpoint: the image is taken at this read
        while chunks[-1]:
            chunks.append(os.read(fd, 65536))
        _RESUME['fd'] = fd  # closed once the context is applied (_close_resume)
    except OSError:
        _die('bad resume context')
    data = b''.join(chunks)
    f = data.split(b'\0')
    try:
        if f[0] != _MAGIC or f[-1] != b'' or not f[1].isdigit():
            raise ValueError
        i = 2 + int(f[1])
        argv = [os.fsdecode(x) for x in f[2:i]]
        if not f[i].isdigit():
            raise ValueError
        n = int(f[i])
        env = [os.fsdecode(x) for x in f[i + 1:i + 1 + n]]
        cwd, seed = os.fsdecode(f[i + 1 + n]), f[i + 2 + n]
        if len(f) < i + 4 + n or len(env) != n or len(argv) != i - 2 or cwd[:1] != '/' \
                or len(seed) != 32 or seed.strip(b'0123456789abcdef'):
            raise ValueError
        for x in f[i + 3 + n:-1]:  # optional fields after the seed
            k, _, v = x.partition(b'=')
            if k == b'cached-exec-amend' and len(v) == 64 and not v.strip(b'0123456789abcdef'):
                _RESUME['amend'] = bytes.fromhex(v.decode())
            elif k == b'cached-exec-stats' and v[:1] == b'/':
                _RESUME['stats'] = v
            elif k == b'cached-exec-pages':
                _pages_request(v)
    except (ValueError, IndexError):
        _die('bad resume context')
    return argv, env, cwd, int(seed, 16)


def _env_dict(entries):
    """As python builds os.environ: NAME=VALUE split at the first '=' after the first character; first one wins."""
    d = {}
    for e in entries:
        k = e.find('=', 1)
        if k > 0 and e[:k] not in d:
            d[e[:k]] = e[k + 1:]
    return d


def _isxfile(p):
    try:
        st = os.stat(p)
    except (OSError, ValueError):
        return False
    return (st.st_mode & 0o170000) == 0o100000 and bool(st.st_mode & 0o111)


def _executable_for(argv0, env, cwd):
    """sys.executable as python's startup computes it from argv[0], PATH and the cwd (None: unknown)."""
    name = argv0 or 'python3'
    if '/' in name:
        return os.path.normpath(os.path.join(cwd, name))
    for d in env.get('PATH', '').split(':') if 'PATH' in env else ():
        p = os.path.join(d, name)
        if _isxfile(p):
            return p if d[:1] == '/' else None
    return '' if 'PATH' in env else None


def _sensitive_diff(start, ctx):
    for k in set(start) | set(ctx):
        if start.get(k) == ctx.get(k):
            continue
        if not k or '=' in k or k.startswith('PYTHON') or k.startswith('LC_') or k in _SENSITIVE:
            return True
        if k == 'HOME' and getattr(sys.modules.get('site'), 'ENABLE_USER_SITE', False):
            return True
        if k in ('TMPDIR', 'TEMP', 'TMP') and getattr(sys.modules.get('tempfile'), 'tempdir', None) is not None:
            return True
    return False


def _shadowed(directory, names):
    """Whether `directory` holds a module or package an import of one of `names` would find first."""
    if not names:
        return False
    try:
        entries = os.listdir(directory or '.')
    except OSError:
        return True
    import _imp
    suffixes = ['.py', '.pyc'] + list(_imp.extension_suffixes())
    for e in entries:
        # A bare name is a package only as a directory: a file named like a
        # module (the bin directory of pip, flask, aws holds such scripts) is not
        # something an import would find.
        if e in names and os.path.isdir(os.path.join(directory or '.', e)):
            return True
        for s in suffixes:
            if e.endswith(s) and e[:-len(s)] in names:
                return True
    return False


def _stdio_config():
    """Encoding, errors and buffering python's startup chose (PYTHONIOENCODING, locale, PYTHONUNBUFFERED)."""
    enc = errors = buffered = None
    for s in (sys.__stdout__, sys.__stdin__, sys.__stderr__):
        if s is None:
            continue
        try:
            enc = enc or s.encoding
            if buffered is None:
                buffered = not s.write_through
            if errors is None and s is not sys.__stderr__:
                errors = s.errors
        except AttributeError:
            pass
    if buffered is None:
        buffered = not os.environ.get('PYTHONUNBUFFERED')
    return enc, errors, buffered


def _make_stdio(fd, write, name, enc, errors, buffered, into=None):
    """python's create_stdio() (Python/pylifecycle.c). With into, the init's
    stream for that fd, the text layer is that very object set up again
    (TextIOWrapper.__init__ over the new buffer; it keeps nothing of its old
    state): a module that kept sys.stdout or sys.stderr at import (a logging
    handler, a saved stream) then writes through the object the program prints
    to, into one buffer, as in a plain run. The layers under it are new: a
    file object's __init__ keeps what it learned of the old file (seekable)."""
    import io
    try:
        os.get_inheritable(fd)  # fcntl(F_GETFD), python's is_valid_fd()
    except OSError:
        return None
    buffering = 0 if write and not buffered else -1
    buf = open(fd, 'wb' if write else 'rb', buffering, None, None, None, False)
    raw = buf.raw if buffering else buf
    raw.name = name
    line_buffering = buffered and (raw.isatty() or (fd == 2 and sys.version_info >= (3, 9)))
    if type(into) is io.TextIOWrapper:
        io.TextIOWrapper.__init__(into, buf, enc, errors, '\n', line_buffering, not buffered)
        stream = into
    else:
        stream = io.TextIOWrapper(buf, enc, errors, '\n', line_buffering, not buffered)
    stream.mode = 'w' if write else 'r'
    return stream


def _fresh_state(seed):
    """What the init left that a new process would have fresh."""
    m = sys.modules
    try:
        if 'random' in m:
            m['random'].seed(seed)
        if 'numpy.random' in m:
            m['numpy.random'].seed([(seed >> s) & 0xffffffff for s in (96, 64, 32, 0)])
    except Exception:
        pass
    try:
        if 'threading' in m:
            t = m['threading'].main_thread()
            if hasattr(t, '_set_native_id'):
                t._set_native_id()
        if 'multiprocessing.process' in m:
            m['multiprocessing.process'].current_process().authkey = os.urandom(32)
        if 'logging' in m and hasattr(m['logging'], '_startTime'):
            import time
            lg = m['logging']
            lg._startTime = time.time_ns() if isinstance(lg._startTime, int) else time.time()
    except Exception:
        pass
    # The import system starts with no directory listings, no negative
    # entries and no finders for relative paths (PathFinder.invalidate_caches,
    # without importing importlib.metadata as 3.12's does).
    cache = sys.path_importer_cache
    for k, finder in list(cache.items()):
        if finder is None or not (isinstance(k, str) and k.startswith('/')):
            del cache[k]
        elif hasattr(finder, 'invalidate_caches'):
            try:
                finder.invalidate_caches()
            except Exception:
                pass
    ns = getattr(m.get('_frozen_importlib_external'), '_NamespacePath', None)
    if ns is not None and hasattr(ns, '_epoch'):
        ns._epoch += 1


def _apply_env(start, ctx, order):
    environ = os.environ
    for k, v in ctx.items():
        if start.get(k) != v and environ.get(k) != v:
            environ[k] = v
    for k in start:
        if k not in ctx and k in environ:
            del environ[k]
    try:  # os.environ in the caller's order (environb shares this dict)
        data, enc = environ._data, environ.encodekey
        keys = [enc(k) for k in order if enc(k) in data]
        seen = set(keys)
        items = [(k, data[k]) for k in keys] + [(k, v) for k, v in data.items() if k not in seen]
        data.clear()
        data.update(items)
    except Exception:
        pass


_LEARNED_MAGIC = 'cached-exec-learned 1'
_M64 = (1 << 64) - 1


def _hash64(b):
    """cx_hash64 (src/restore/util.h, schema.ts hash64): FNV-1a over little-endian 64-bit words, then the tail bytes."""
    h, n = 0xcbf29ce484222325, len(b) // 8 * 8
    for i in range(0, n, 8):
        h = ((h ^ int.from_bytes(b[i:i + 8], 'little')) * 0x100000001b3) & _M64
    for c in b[n:]:
        h = ((h ^ c) * 0x100000001b3) & _M64
    return h


def _trusted_dir(d):
    """The launcher's rule for the cache directory: a real directory of this user's, not writable by others."""
    try:
        st = os.lstat(d)
    except (OSError, ValueError):
        return False
    return (st.st_mode & 0o170000) == 0o040000 and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _learned_name(target, python):
    """learned/<this>: src/resume/learned.ts learnedFileName() computes the same."""
    return '%016x' % _hash64(os.fsencode(target + '\0' + os.path.realpath(python)))


class _Learned(object):
    """The learned preloads of one script or -m module (--learn TARGET) in
    <cache>/learned/<_learned_name>, a text file (src/resume/learned.ts reads
    and edits it too):
        cached-exec-learned 1
        target TARGET
        script DEV INO SIZE MTIME_NS CTIME_NS     ("script -" for a module)
        + NAME ORIGIN      what runs imported, in import order: the init imports these
        - NAME REASON      dropped: the snapshot could not accept its import
    Used only in a cache directory that is this user's and not writable by
    others (the launcher's rule), as files of this user's."""

    def __init__(self, target, env):
        self.target, self.plus, self.dropped, self.ident, self.path = target, [], {}, None, None
        kind, _, what = target.partition(':')
        self.script = what if kind == 'script' else None
        d = env.get('CACHED_EXEC_DIR') or ''
        if not d:
            x, h = env.get('XDG_CACHE_HOME') or '', env.get('HOME') or ''
            d = x + '/cached-exec' if x else h + '/.cache/cached-exec' if h else ''
        if d[:1] == '/' and kind in ('script', 'module') and what and sys.executable:
            self.cache, self.dir = d, d + '/learned'
            self.path = self.dir + '/' + _learned_name(target, sys.executable)

    def script_identity(self):
        """'-' for a module; the script's identity, read from an open fd (so a snapshot depends on the script); None: unreadable."""
        if self.script is None:
            return '-'
        try:
            fd = os.open(self.script, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, ValueError):
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            return None
        finally:
            os.close(fd)
        return '%d %d %d %d %d' % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def read(self):
        if self.path is None or not _trusted_dir(self.cache) or not _trusted_dir(self.dir):
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, ValueError):
            return
        chunks = []
        try:
            st = os.fstat(fd)
            if (st.st_mode & 0o170000) != 0o100000 or st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return
            while len(chunks) < 64:
                chunks.append(os.read(fd, 65536))
                if not chunks[-1]:
                    break
        except OSError:
            return
        finally:
            os.close(fd)
        lines = b''.join(chunks).decode('utf-8', 'surrogateescape').split('\n')
        if len(lines) < 3 or lines[0] != _LEARNED_MAGIC or lines[1] != 'target ' + self.target \
                or not lines[2].startswith('script '):
            return
        self.ident = lines[2][7:]
        for line in lines[3:]:
            name, _, rest = line[2:].partition(' ')
            if line[:2] == '+ ' and name:
                self.plus.append((name, rest))
            elif line[:2] == '- ' and name:
                self.dropped[name] = rest

    def preloads(self, limit):
        """What the init imports: the learned modules but the dropped ones (only the first `limit`: the snapshot's bisection)."""
        p = [x for x in self.plus if x[0] not in self.dropped]
        return p[:limit] if limit is not None else p

    def save(self, ident, seen):
        """After a run: adds what it imported (seen: [(name, origin)]); another script identity starts over."""
        if self.path is None or ident is None:
            return
        if ident != self.ident:
            plus, dropped = list(seen), {}
        else:
            known = set(n for n, _ in self.plus)
            new = [x for x in seen if x[0] not in known]
            if not new:
                return
            plus, dropped = self.plus + new, self.dropped
        out = [_LEARNED_MAGIC, 'target ' + self.target, 'script ' + ident]
        out += ['+ %s %s' % x for x in plus] + ['- %s %s' % x for x in dropped.items()]
        data = ('\n'.join(out) + '\n').encode('utf-8', 'surrogateescape')
        if not _trusted_dir(self.cache):
            return
        try:
            os.mkdir(self.dir, 0o700)
        except FileExistsError:
            pass
        if not _trusted_dir(self.dir):
            return
        tmp = '%s.%d.tmp' % (self.path, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
            os.rename(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


# The order imports start in (sys.modules has the order they end in: a
# module after what it imported, which would import the parts of an import
# cycle the wrong way round). The import system calls its module's
# _find_and_load for every module not yet in sys.modules: a wrapper compiled
# as importlib's own code notes the name; python cuts importlib's frames out
# of tracebacks, this one's with them.
_STARTED = {}
_FIND_AND_LOAD = compile("""def _find_and_load(name, import_):
    if name not in _cx_started:
        _cx_started[name] = len(_cx_started)
    return _cx_find_and_load(name, import_)
""", '<frozen importlib._bootstrap>', 'exec')


def _record_import_order():
    b = sys.modules.get('_frozen_importlib')
    orig = getattr(b, '_find_and_load', None)
    if orig is None:
        return
    ns = {'_cx_started': _STARTED, '_cx_find_and_load': orig}
    exec(_FIND_AND_LOAD, ns)
    f = ns['_find_and_load']
    f.__module__, f.__qualname__ = orig.__module__, orig.__qualname__
    b._find_and_load = f


def _learn_seen(start_modules, roots, path0):
    """What this run imported that the init can import the same way: (name, origin) in import order.
    A top-level module counts only when found directly in one of the init's sys.path
    directories (not the script's directory or the cwd, which the init does not
    have); a submodule only below such a package; built-in and frozen ones always."""
    # sys.modules is in the order imports completed (a package after its submodules).
    found, top_ok = [], set()
    for name, m in list(sys.modules.items()):
        if name in start_modules or name == '__main__' or type(m) is not type(sys):
            continue
        spec = m.__dict__.get('__spec__')
        if spec is None or getattr(spec, 'name', None) != name:
            continue
        origin = getattr(spec, 'origin', None)
        if origin not in ('built-in', 'frozen') and \
                (not isinstance(origin, str) or origin[:1] != '/' or '\n' in origin or ' ' in name):
            continue
        found.append((name, origin))
        if '.' in name:
            continue
        if origin in ('built-in', 'frozen'):
            top_ok.add(name)
            continue
        base = os.path.dirname(origin)
        if getattr(spec, 'submodule_search_locations', None) is not None:
            base = os.path.dirname(base)
        if base in roots and base != path0:
            top_ok.add(name)
    started = _STARTED
    found = [x for x in found if x[0].partition('.')[0] in top_ok]
    return sorted(found, key=lambda x: started.get(x[0], -1))


def _learn_after():
    """At the end of a run (any end but os._exit): what it imported goes to the learned file."""
    st = _STATE.pop('learn', None)
    if st is None:
        return
    try:
        learned, start_modules, roots, path0, known = st
        if known is not None and known.issuperset(sys.modules):
            return
        learned.save(learned.script_identity(), _learn_seen(start_modules, roots, path0))
    except BaseException:
        pass


def _prepare():
    start_modules = set(sys.modules)
    me = os.path.realpath(os.path.abspath(__file__))
    here = os.path.dirname(me)
    if sys.path and sys.path[0] == here:
        del sys.path[0]
    sys.path_importer_cache.pop(here, None)
    start_env = dict(os.environ)
    resume_fd = start_env.pop(_FD_VAR, None)
    try:
        start_cwd = os.getcwd()
    except OSError:
        start_cwd = None
    preload, inits, learn_target, cold_argv = _parse_adapter_args(sys.argv[1:])
    learned, learned_preload = None, []
    if learn_target is not None and start_env.get('CACHED_EXEC_DISABLE', '0') in ('', '0'):
        # Before the init's environment reads are recorded: where the cache is
        # decides nothing the program sees. Cold runs import nothing learned
        # (a module not yet accepted by a snapshot might print, write or
        # depend on when it is imported), they only learn.
        learned = _Learned(learn_target, start_env)
        learned.read()
        if resume_fd is not None:
            limit = start_env.get('CACHED_EXEC_PRELOAD_LIMIT', '')
            ident = learned.script_identity()
            if ident is not None and ident == learned.ident:
                learned_preload = learned.preloads(int(limit) if limit.isdigit() else None)
    pythonpath = start_env.get('PYTHONPATH')
    # sys.path entries that depend on the cwd at startup (python makes relative
    # PYTHONPATH entries absolute against it): only that cwd can resume.
    path_dependent = any(not (isinstance(p, str) and p.startswith('/')) for p in sys.path) \
        or (bool(pythonpath) and any(p[:1] != '/' for p in pythonpath.split(':')))
    if resume_fd is None:
        if start_cwd is None or _parse_python_argv(cold_argv) is None:
            _cold(cold_argv, start_env)
    elif not resume_fd.isdigit():
        _die('bad resume context')
    stdio = _stdio_config()

    # The init: what the checkpoint saves.
    rec = _Recorder()
    sys.meta_path.insert(0, rec)
    reads = _EnvReads() if resume_fd is not None else None
    if reads:
        reads.install()
    try:
        for m in preload:
            __import__(m)
        for m, origin in learned_preload:
            # From a frame outside __main__ (_R's globals are sys's): python shows a
            # DeprecationWarning only where __main__ triggers it, and in the run that
            # learned the module something else imported it (pip's pkg_resources).
            _R(__import__, m, None)
            spec = getattr(sys.modules.get(m), '__spec__', None)
            found = getattr(spec, 'origin', None)
            if spec is not None and found != origin:
                # Resolved elsewhere than in the run that learned it: that run found it another way.
                raise ImportError('%s: learned from %s, found %s' % (m, origin, found))
        if inits:
            import runpy
            for f in inits:
                runpy.run_path(f)
    except KeyboardInterrupt:
        raise
    except BaseException:
        if resume_fd is not None:
            raise  # the snapshot process exits: a refusal
        _cold(cold_argv, start_env, start_cwd)
    finally:
        if rec in sys.meta_path:
            sys.meta_path.remove(rec)
        if reads:
            reads.uninstall()
    if resume_fd is None:
        try:  # as a restore is in the caller's cwd whatever the init did
            if os.getcwd() != start_cwd:
                os.chdir(start_cwd)
        except OSError:
            _cold(cold_argv, start_env, start_cwd)
    names = rec.names | set(n.partition('.')[0] for n in sys.modules if n not in start_modules)
    import _imp
    names = set(n for n in names if n and n not in sys.builtin_module_names and not _imp.is_frozen(n))
    del rec

    # What the init built lives as long as the process: move it out of the
    # collector's reach (gc.freeze, meant for fork-then-work servers, which a
    # restore is). Collections, and the one at exit, then walk only the
    # program's own objects: an exit after importing numpy takes ~7 ms less.
    # Cold runs do the same, so both behave alike.
    import gc
    if resume_fd is not None:
        # Objects the init made are frozen below, out of gc.get_objects()'s sight:
        # the ones that would finalize are kept for the exit, which looks at them
        # again after the atexit callbacks (certifi's, e.g., closes a context
        # manager of importlib.resources that its import entered). A cold run
        # keeps none: its exit unfreezes them all (_exit_like_python).
        _FAST['init'] = _finalizers(gc.get_objects(), _std_ids())
        # The init's standard streams outlive the restore where a module kept one
        # (a logging handler, a saved sys.stdout): what the program writes there
        # is flushed at exit, as python's teardown does when it frees them.
        import weakref
        _FAST['init_std'] = [weakref.ref(x) for f in _std_streams() for x in _layers(f)]
    gc.freeze()

    if resume_fd is not None:
        _flush_std()  # anything the init left buffered belongs to the snapshot
        fd = int(resume_fd)
        reads.announce(fd, _sensitive_names())
        del reads
        argv, env_list, cwd, seed = _read_context(fd)
        try:
            del os.environ[_FD_VAR]
        except KeyError:
            pass
        env = _env_dict(env_list)
    else:
        argv, env_list, cwd = cold_argv, None, start_cwd
        env = start_env
        seed = int.from_bytes(os.urandom(16), 'big')

    # Everything that can send us cold is checked before anything is applied.
    parsed = _parse_python_argv(argv)
    if parsed is None:
        _cold(argv, env, cwd)
    kind, target, rest, unbuffered = parsed
    try:
        here_cwd = os.getcwd()
    except OSError:
        here_cwd = None
    if here_cwd != cwd:
        _cold(argv, env, cwd)
    if env is not start_env:
        if _sensitive_diff(start_env, env):
            _cold(argv, env)
        if path_dependent and cwd != start_cwd:
            _cold(argv, env)
    if _executable_for(argv[0] if argv else '', env, cwd) != sys.executable:
        _cold(argv, env)
    try:
        if (os.fstat(0).st_mode & 0o170000) == 0o040000:
            _cold(argv, env)  # python: "<stdin> is a directory, cannot continue"
    except OSError:
        pass
    enc, errors, buffered = stdio
    if enc is None or errors is None:
        _cold(argv, env)

    path0 = None
    code = None
    if kind == 's':
        filename = target
        if sys.version_info >= (3, 9) and not filename.startswith('/'):
            filename = cwd + '/' + target  # python does not normalise ("//x" for cwd "/")
        try:
            if (os.stat(target).st_mode & 0o170000) != 0o100000 or target.endswith('.pyc'):
                raise ValueError  # python runs directories and .pyc files otherwise
            with open(target, 'rb') as fh:
                src = fh.read()
            fe = sys.modules.get('_frozen_importlib_external')
            magic = getattr(fe, 'MAGIC_NUMBER', b'\r\r')[:2]
            if src[:2] == magic or b'PK\x05\x06' in src[-65557:]:
                raise ValueError  # compiled or a zip: python runs those otherwise
            code = compile(src, filename, 'exec', 0, True)
        except Exception:
            _cold(argv, env)
        try:
            path0 = os.path.dirname(os.path.realpath(target))
        except Exception:
            _cold(argv, env)
    elif kind == 'c':
        try:
            code = compile(target, '<string>', 'exec', 0, True)
        except Exception:
            _cold(argv, env)
        path0 = ''
    else:
        path0 = cwd
    if getattr(sys.flags, 'safe_path', False):
        path0 = None
    if path0 is not None and _shadowed(path0 or cwd, names):
        _cold(argv, env)
    if learned is not None and learn_target == ('module:' + target if kind == 'm' else 'script:' + os.path.abspath(target)
                                                if kind == 's' else None):
        roots = set(p for p in sys.path if isinstance(p, str) and p[:1] == '/')
        # A restore (its script cannot have changed: the image depends on it) has
        # nothing to write unless a module beyond the preloaded and learned ones comes.
        known = set(sys.modules).union(n for n, _ in learned.plus) if resume_fd is not None else None
        _STATE['learn'] = (learned, start_modules, roots, os.path.realpath(path0 or cwd), known)
        _record_import_order()

    if resume_fd is not None and hasattr(sys, 'addaudithook'):
        sys.addaudithook(_audit)
    # From here on the process becomes the caller's program.
    if env is not start_env:
        _apply_env(start_env, env, list(env))
    _fresh_state(seed)
    _close_resume()
    old = (sys.stdin, sys.stdout, sys.stderr)
    _flush_std()
    buffered = buffered and not unbuffered
    sys.stdin = sys.__stdin__ = _make_stdio(0, False, '<stdin>', enc, errors, buffered, sys.__stdin__)
    sys.stdout = sys.__stdout__ = _make_stdio(1, True, '<stdout>', enc, errors, buffered, sys.__stdout__)
    sys.stderr = sys.__stderr__ = _make_stdio(2, True, '<stderr>', enc, 'backslashreplace', buffered, sys.__stderr__)
    del old
    if hasattr(sys, 'orig_argv'):
        sys.orig_argv = list(argv)
    sys.argv = ['-c' if kind == 'c' else '-m' if kind == 'm' else target] + list(rest)
    if path0 is not None:
        sys.path.insert(0, path0)

    main = type(sys)('__main__')
    d = main.__dict__
    d['__loader__'] = sys.modules['_frozen_importlib'].BuiltinImporter
    d['__annotations__'] = {}
    d['__builtins__'] = sys.modules['builtins']
    _STATE.update(kind=kind, globals=d, adapter_main=sys.modules.get('__main__'))
    sys.modules['__main__'] = main
    audit = getattr(sys, 'audit', None)
    if kind == 's':
        d['__file__'] = filename
        d['__cached__'] = None
        d['__loader__'] = sys.modules['_frozen_importlib_external'].SourceFileLoader('__main__', filename)
        if audit:
            audit('cpython.run_file', filename)
        return exec, code, d
    if kind == 'c':
        if audit:
            audit('cpython.run_command', target)
        if sys.version_info >= (3, 13):  # tracebacks of -c show its lines
            try:
                import linecache
                linecache._register_code('<string>', target, '<string>')
            except Exception:
                pass
        return exec, code, d
    if audit:
        audit('cpython.run_module', target)
    import runpy
    return runpy._run_module_as_main, target, True


def _trim(tb):
    while tb is not None and (tb.tb_frame.f_globals is _G or tb.tb_frame.f_code is _R.__code__):
        tb = tb.tb_next
    return tb


def _del_file(d):
    for k in ('__file__', '__cached__'):
        d.pop(k, None)


class _Hold(object):
    """Stands in for sys.stdout/stderr until the adapter's own flush_io():
    python flushes after a script but not after -c or -m."""
    __slots__ = ('_name', '_real', '_main')

    def __init__(self, name, real, main):
        self._name, self._real, self._main = name, real, main

    def flush(self):
        import _thread
        if _thread.get_ident() == self._main and getattr(sys, self._name, None) is self:
            setattr(sys, self._name, self._real)
            return None
        return self._real.flush()

    def __getattr__(self, a):
        return getattr(self._real, a)


def _install_hook(script, d):
    missing = not hasattr(sys, 'excepthook')
    user = getattr(sys, 'excepthook', None)

    def hook(t, v, tb):
        # PyErr_Print() calls this with the adapter's frames on top; the
        # program's own hook gets what a plain run would give it.
        if missing:
            try:
                del sys.excepthook
            except AttributeError:
                pass
        else:
            sys.excepthook = user
        full, tb = tb, _trim(tb)
        try:
            v.__traceback__ = tb
        except Exception:
            pass
        if getattr(sys, 'last_traceback', None) is full:
            sys.last_traceback = tb
        try:
            if missing:
                sys.stderr.write('sys.excepthook is missing\n')
                sys.__excepthook__(t, v, tb)
            else:
                user(t, v, tb)
        except SystemExit:
            raise
        except BaseException as e2:
            try:
                tb2 = e2.__traceback__ = _trim(e2.__traceback__)
                sys.stderr.write('Error in sys.excepthook:\n')
                sys.__excepthook__(type(e2), e2, tb2)
                sys.stderr.write('\nOriginal exception was:\n')
                sys.__excepthook__(t, v, tb)
            except BaseException:
                pass
        if script:
            _del_file(d)

    sys.excepthook = hook


def _after(how):
    """how: 0 the code returned, 1 SystemExit, 2 another exception."""
    kind, d = _STATE.get('kind'), _STATE.get('globals')
    if kind is None:
        return
    _learn_after()
    # _STATE was frozen with the adapter (gc.freeze) and the adapter's module
    # is no longer in sys.modules: nothing would ever clear it, so a reference
    # kept there would keep the program's globals alive past the exit. Python
    # clears __main__ at exit: __del__ methods run, files left open are flushed.
    del _STATE['globals']
    if kind == 's':
        _flush_std()  # _PyRun_SimpleFileObject's flush_io()
        if how == 0:
            _del_file(d)
    else:
        import _thread
        main = _thread.get_ident()
        for n in ('stderr', 'stdout'):
            f = getattr(sys, n, None)
            if f is not None:
                setattr(sys, n, _Hold(n, f, main))
    if how == 2:
        _install_hook(kind == 's', d)
    _STATE.clear()  # the rest of the adapter's state (the adapter's module) goes too
    del d


def _gen_types():
    def g():
        yield

    async def c():
        pass

    async def a():
        yield
    co = c()
    co.close()
    return type(g()), type(co), type(a())


# Weak reference callbacks that only drop an entry from a container when their
# referent dies: the standard weak containers', logging's handler list.
_HARMLESS_CALLBACKS = (('weakref', 'WeakValueDictionary.__init__.<locals>.remove'),
                       ('weakref', 'WeakKeyDictionary.__init__.<locals>.remove'),
                       ('weakref', 'WeakMethod.__new__.<locals>._cb'),
                       ('_weakrefset', 'WeakSet.__init__.<locals>._remove'),
                       ('logging', '_removeHandlerRef'))


def _harmless_callback(cb):
    """Whether a weak reference's callback only forgets its referent. Besides the
    python ones above, two C ones that every program with an isinstance check on
    an ABC or a threading.local has: _abc's _destroy (bound to a weak reference to
    the ABC's cache set: it discards the dead entry) and _thread's
    _localdummy_destroyed (bound to a weak reference to the local; from 3.13
    clear_locals, bound to a (weak reference to the local, key) pair: both drop
    the dead thread's dict)."""
    import weakref
    import _thread
    if type(cb) is not type(len):  # a python function: by its name
        return (getattr(cb, '__module__', None), getattr(cb, '__qualname__', None)) in _HARMLESS_CALLBACKS
    own = getattr(cb, '__self__', None)  # a C function: by what it is bound to
    if cb.__name__ == 'clear_locals' and type(own) is tuple and len(own) == 2:
        own = own[0]
    if not isinstance(own, weakref.ref):
        return False
    target = own()
    if cb.__name__ == '_destroy':
        return target is None or type(target) is set
    if cb.__name__ in ('_localdummy_destroyed', 'clear_locals'):
        return target is None or isinstance(target, _thread._local)  # a subclass's dict drops the same way
    return False


def _finalizers(objs, std):
    """The objects of objs that would do something when python's teardown frees
    them: an open file but the standard streams, a suspended generator or
    coroutine (its finally blocks run), an object of a class with __del__, a
    weak reference with a callback that is not _harmless_callback."""
    import io
    import weakref
    gens = _gen_types()
    found = []
    for o in objs:
        t = type(o)
        if t in gens:
            fr = getattr(o, 'gi_frame', None) or getattr(o, 'cr_frame', None) or getattr(o, 'ag_frame', None)
            if fr is not None and fr.f_lasti >= 0:
                found.append(o)
        elif isinstance(o, io.IOBase):
            if id(o) not in std and not o.closed:
                found.append(o)
        elif getattr(t, '__del__', None) is not None:
            found.append(o)
        elif isinstance(o, weakref.ref) and o.__callback__ is not None and not _harmless_callback(o.__callback__):
            found.append(o)
    return found


def _program_finalizes(std):
    """Whether an object the program made (not frozen: not the init's) would do
    something at teardown."""
    import gc
    return bool(_finalizers(gc.get_objects(), std))


def _layers(f):
    """A stream and the layers under it, top first: text, buffer, raw file."""
    f = getattr(f, '_real', f)
    out = []
    while f is not None and len(out) < 3:
        out.append(f)
        f = getattr(f, 'buffer', None) or getattr(f, 'raw', None)
    return out


def _std_streams():
    """The standard streams, each once."""
    seen = {}
    for f in (sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__):
        f = getattr(f, '_real', f)
        if f is not None:
            seen[id(f)] = f
    return list(seen.values())


def _std_ids():
    """The standard streams and their layers: python's teardown only flushes them."""
    return set(id(x) for f in _std_streams() for x in _layers(f))


def _only_flushes(f):
    """Whether freeing the stream f only flushes it: its bottom layer is a file
    object of fd 0, 1 or 2 that does not close its fd, as python's standard
    streams are (a wrapper a module made over sys.stderr.buffer, e.g.)."""
    import io
    raw = _layers(f)[-1]
    try:
        return isinstance(raw, io.FileIO) and not raw.closefd and raw.fileno() in (0, 1, 2)
    except ValueError:  # closed
        return False


def _fast_exit(status):
    """A restored run's end without python's teardown, which writes to every object
    the init created (a copy-on-write fault per page: most of a restored tool's
    time). Only when the teardown would do nothing anyone sees (_finalizers of
    the program's objects and of the init's that _prepare kept), and after what
    python's finalisation does first, in its order: threading's shutdown (no
    thread may be left; its own atexit callbacks run), atexit callbacks
    (weakref.finalize too), flushing stdout and stderr. Not when the program
    added an audit hook (teardown calls it) or asked for teardown's reports.
    Any doubt returns: python exits as usual (_exit_like_python)."""
    init = _FAST.get('init')
    init_std = _FAST.get('init_std')
    if init is None or init_std is None or not isinstance(status, int) or not -2 ** 31 <= status < 2 ** 31:
        return
    try:
        if sys.flags.inspect or os.environ.get('PYTHONINSPECT') or _FAST.get('hooked'):
            return
        # Options under which teardown reports something (resource warnings,
        # allocator statistics, reference dumps).
        if sys.warnoptions or getattr(sys.flags, 'dev_mode', False) or getattr(sys, '_xoptions', None) or \
                any(os.environ.get(v) for v in ('PYTHONMALLOCSTATS', 'PYTHONDUMPREFS', 'PYTHONDUMPREFSFILE')):
            return
        th = sys.modules.get('threading')
        if th is not None and th.active_count() > 1:
            return
        # No look at the objects before the exit callbacks: were they to finalize,
        # python's own exit would find threading's shutdown and atexit done, as
        # it would have done them itself, in this order.
        std = _std_ids()
        if th is not None:
            th._shutdown()  # its own atexit callbacks (concurrent.futures'), before atexit's
        import atexit
        atexit._run_exitfuncs()
        if (th is not None and th.active_count() > 1) or _program_finalizes(std):
            return
        left = _finalizers(init, std)
        if not all(_only_flushes(f) for f in left):
            return
        # python's order: sys.stdout and sys.stderr, then the streams that teardown frees.
        flush = [getattr(sys, 'stdout', None), getattr(sys, 'stderr', None)] + [r() for r in init_std] + left
        for f in flush:
            if f is not None and not f.closed:
                f.flush()
    except BaseException:
        return
    finally:
        del init, init_std
    _record_pages(False)
    os._exit(status & 0xff)


def _audit(event, args):
    """A restore's audit hook: a hook the program adds is called when python's
    teardown clears the hooks, which a fast exit would skip."""
    if event == 'sys.addaudithook':
        _FAST['hooked'] = True


def _exit_like_python():
    """The exit python makes when _fast_exit declined. Where an object the init
    made would still finalize, the init's objects go back under the collector
    (gc.unfreeze), so teardown's last collection finalizes the ones on reference
    cycles, as in a plain run; frozen, they never would be. That collection walks
    every object (tens of ms for a large init): only when it can matter."""
    _record_pages(True)
    init = _FAST.get('init')
    _FAST.clear()  # teardown must not find the init's objects held here
    try:
        if init is None or _finalizers(init, _std_ids()):
            import gc
            gc.unfreeze()
    except BaseException:
        import gc
        gc.unfreeze()
    finally:
        del init


def _exit_status(e):
    """The status python gives a SystemExit, when it prints nothing (None or an int)."""
    code = e.code
    if code is None:
        return 0
    return code if isinstance(code, int) else None


_FAST = {}
_cx = _prepare()
try:
    _R(*_cx)
except SystemExit as _e:
    _cx = None
    _after(1)
    _fast_exit(_exit_status(_e))
    _exit_like_python()
    raise
except BaseException:
    _cx = None
    _after(2)
    _exit_like_python()
    raise
_cx = None
_after(0)
_fast_exit(0)
_exit_like_python()
