"""Output folders that never destroy what twotower did not write, and are never half there.

The rules, for every folder twotower writes (a recipe's ``--out``, an index folder, a
SavedModel export):

- **Only our own output is replaced.** A target may be missing, an empty folder, or a
  folder twotower wrote — recognised by the marker file ``.twotower-artifact`` that every
  folder written here carries (or, for folders of earlier versions, an index
  ``manifest.json`` whose format starts with ``twotower-``). Replacing our own output
  needs ``overwrite=True`` (the recipes' ``--overwrite``). Anything else — a file, a
  non-empty folder of the user's, a symbolic link — is refused with
  :class:`OutputPathError` by :func:`check_output_dir`, which recipes call right after
  parsing their flags, before any work.
- **No missing window.** The new version is built in a temporary sibling and swapped in
  with Linux ``renameat2(..., RENAME_EXCHANGE)`` (through ctypes): the two folders trade
  places in one step, so a reader (a server starting) finds either the old or the new
  folder at the path, never nothing. Where the kernel or file system lacks
  RENAME_EXCHANGE, the fallback renames the old folder aside first, leaving a window of
  two ``rename`` calls; it is used only when the exchange is refused (EINVAL/ENOSYS).
- **One writer at a time.** A lock file ``.<name>.twotower-lock`` beside the target is
  held with ``flock`` for the whole write; a second writer gets OutputPathError at once.
- **No debris.** Temporary siblings are named ``.<name>.twotower-tmp-*``; a killed save
  leaves at most one, and the next save to that target (holding the lock, so no live
  writer owns them) removes them, along with the ``.tmp-<name>-*`` / ``.old-<name>-*``
  siblings of earlier versions of this module.
- Folders respect the umask (``tempfile.mkdtemp`` makes 0700 folders; they are set to
  0777 & ~umask, as ``os.makedirs`` would).
"""

import contextlib
import ctypes
import datetime
import errno
import fcntl
import glob
import hashlib
import json
import os
import shutil
import tempfile

MARKER = ".twotower-artifact"
MARKER_FORMAT = "twotower-artifact/1"
TMP_TAG = ".twotower-tmp-"
LOCK_TAG = ".twotower-lock"

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


class OutputPathError(ValueError):
    """An output path twotower will not write to (names the path and what to do)."""


def is_twotower_artifact(path):
    """True when the folder ``path`` was written by twotower (marker or index manifest)."""
    if os.path.isfile(os.path.join(path, MARKER)):
        return True
    manifest = os.path.join(path, "manifest.json")
    if os.path.isfile(manifest):
        try:
            with open(manifest, encoding="utf-8") as f:
                fmt = json.load(f).get("format", "")
        except (OSError, ValueError, AttributeError):
            return False
        return isinstance(fmt, str) and fmt.startswith("twotower-")
    return False


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(path, *, overwrite=False, flag="--out"):
    """Checks that twotower may write the folder ``path``; returns its absolute path.

    Call it before any work starts. Allowed: a missing path whose nearest existing
    ancestor is a writable folder, an empty folder, or a folder twotower wrote (only with
    ``overwrite=True``).

    Raises:
      OutputPathError: naming the path, why, and ``--overwrite`` where it applies.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise OutputPathError(f"{flag} must be a folder path, got {path!r}")
    target = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if os.path.islink(target):
        raise OutputPathError(f"{flag} {target!r} is a symbolic link; twotower replaces only "
                              "folders it wrote: give the real folder or a new path")
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise OutputPathError(
                f"{flag} {target!r} is a file, not a folder; twotower never replaces what it "
                "did not write (--overwrite only replaces an earlier twotower output): "
                "choose another path")
        if os.listdir(target):
            if not is_twotower_artifact(target):
                raise OutputPathError(
                    f"{flag} {target!r} is a non-empty folder that twotower did not write; "
                    "refusing to replace it (--overwrite only replaces an earlier twotower "
                    "output): choose a new or empty folder")
            if not overwrite:
                raise OutputPathError(
                    f"{flag} {target!r} holds an earlier twotower output; pass --overwrite "
                    "to replace it, or choose another path")
    ancestor = os.path.dirname(target)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise OutputPathError(f"{flag} {target!r}: cannot create it, {ancestor!r} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {target!r}: cannot create it, no write permission "
                              f"in {ancestor!r}")
    return target


@contextlib.contextmanager
def _writer_lock(parent, name, target, flag):
    """flock on ``parent/.name.twotower-lock``; removed on release.

    Unlinking a lock file races with a writer that opened it just before: after taking
    the lock we check that the path still names the file we locked, and retry if not.
    """
    lock_path = os.path.join(parent, f".{name}{LOCK_TAG}")
    for _ in range(10):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputPathError(
                f"{flag} {target!r}: another twotower process is writing it (lock file "
                f"{lock_path!r}); wait for it to finish or choose another path") from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:  # pragma: no cover - needs ten lost races in a row
        raise OutputPathError(f"{flag} {target!r}: could not take the lock {lock_path!r}")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


def _clean_leftovers(parent, name):
    """Removes temporary siblings of ``name`` left by killed saves (caller holds the lock)."""
    patterns = (f".{glob.escape(name)}{TMP_TAG}*",        # this module
                f".tmp-{glob.escape(name)}-*", f".old-{glob.escape(name)}-*")  # earlier versions
    for pattern in patterns:
        for leftover in glob.glob(os.path.join(parent, pattern)):
            if os.path.isdir(leftover) and not os.path.islink(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(leftover)


def _renameat2(src, dst, flags):
    """Linux renameat2(2) through libc; raises OSError with errno on failure."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 is not in this C library")
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


def exchange_paths(a, b):
    """Atomically swaps two paths (renameat2 RENAME_EXCHANGE). Returns True when the swap
    was atomic; False when the file system refused it and the two-rename fallback ran."""
    try:
        _renameat2(a, b, _RENAME_EXCHANGE)
        return True
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    aside = f"{a}.aside"
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)
    return False


def _write_marker(folder):
    record = {"format": MARKER_FORMAT,
              "written": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "pid": os.getpid()}
    with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as f:
        json.dump(record, f)
        f.write("\n")


@contextlib.contextmanager
def atomic_directory(path, *, overwrite=False, flag="--out"):
    """Yields a temporary folder beside ``path``; swaps it in for ``path`` on success.

    The target is checked as :func:`check_output_dir` does (again under the lock, in
    case another writer landed meanwhile). On an exception nothing at ``path`` changes and
    the temporary folder is removed.

    Args:
      path: the final folder.
      overwrite: replace an earlier twotower output at ``path``.
      flag: the flag name used in error messages.
    """
    target = check_output_dir(path, overwrite=overwrite, flag=flag)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    with _writer_lock(parent, name, target, flag):
        check_output_dir(target, overwrite=overwrite, flag=flag)
        _clean_leftovers(parent, name)
        tmp = tempfile.mkdtemp(prefix=f".{name}{TMP_TAG}", dir=parent)
        try:
            os.chmod(tmp, 0o777 & ~_umask())
            yield tmp
            _write_marker(tmp)
            if os.path.isdir(target):
                exchange_paths(tmp, target)   # tmp now holds the previous version
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                try:
                    _renameat2(tmp, target, _RENAME_NOREPLACE)
                except OSError as e:
                    if e.errno == errno.EEXIST:
                        raise OutputPathError(f"{flag} {target!r} appeared while twotower "
                                              "was writing it; nothing was replaced") from None
                    if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def atomic_write_text(path, text, encoding="utf-8"):
    """Writes ``text`` to ``path`` through a temporary file in the same folder + rename.

    Meant for files inside a folder twotower is writing (a temporary folder of
    :func:`atomic_directory`): it replaces ``path`` if it exists.
    """
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{TMP_TAG}",
                               dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding=encoding) as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path):
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
