"""Outputs that appear atomically under their final name (the one helper for it).

Every file the project writes goes through :func:`atomic_output`: the writer
gets a *unique* temporary path beside the final one (same folder, so the final
``os.replace`` is a rename on one file system), the data are flushed to disk,
and only then is the temporary renamed over the final name.  A crash or a kill
leaves the old file or nothing under the final name, never a half-written one;
the temporary is removed on any exception.  Names of temporaries start with
``.`` and contain ``.partial-`` so that they are easy to recognise (and
:func:`remove_stale_partials` removes the ones a killed run left behind).

Unique names (pid + random suffix) mean two concurrent writers of the same
output never write into the same temporary.  With ``replace=False`` the final
step refuses to replace a file that appeared meanwhile (a hard link, which
fails when the name exists), so of two runs racing for a new name exactly one
wins and the other fails cleanly; with ``replace=True`` the last rename wins,
and each rename installs a complete file.  Folders are installed the same way
by :func:`install_folder` (``renameat2`` with ``RENAME_NOREPLACE`` or
``RENAME_EXCHANGE`` where Linux offers it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from pathlib import Path

PARTIAL_MARK = ".partial-"


def is_partial_name(name: str) -> bool:
    """Whether *name* is a temporary made by :func:`partial_name`."""
    return name.startswith(".") and PARTIAL_MARK in name


def final_name(name: str) -> str:
    """The output name a temporary stands for (``.NAME.partial-...`` -> ``NAME``); other names unchanged."""
    if not is_partial_name(name):
        return name
    return name[1:].split(PARTIAL_MARK, 1)[0]


def display_path(path) -> str:
    """*path* with any temporary component shown as the output it stands for (for messages)."""
    parts = Path(path).parts
    return str(Path(*[final_name(part) for part in parts])) if parts else str(path)


def partial_name(path, suffix: str = "") -> Path:
    """A unique temporary name beside *path* (``.NAME.partial-PID-RANDOM[SUFFIX]``).

    *suffix* keeps an extension that a writer needs to choose its format
    (matplotlib, Keras and astropy look at it).
    """
    path = Path(path)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}{PARTIAL_MARK}{token}{suffix}")


def fsync_path(path) -> None:
    """Flush a file (or a folder's entries) to disk; silently skipped where not supported."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path, suffix: str | None = None, fsync: bool = True, replace: bool = True):
    """Context manager yielding a temporary path to write; renamed to *path* on success.

    ``suffix`` defaults to *path*'s own suffixes so that format detection by
    extension keeps working.  On an exception the temporary is removed and
    *path* is left as it was.  With ``replace=False`` a file that appeared
    under *path* while the temporary was written is left alone and
    :class:`~napari_blendphot.errors.OutputExistsError` is raised.
    """
    path = Path(path)
    if suffix is None:
        suffix = "".join(path.suffixes)
    tmp = partial_name(path, suffix)
    try:
        yield tmp
        if fsync:
            fsync_path(tmp)
        install_file(tmp, path, replace=replace)
    except BaseException:
        discard(tmp)
        raise
    if fsync:
        fsync_path(path.parent if str(path.parent) else ".")


def discard(path) -> None:
    """Remove a temporary (file or folder) if it is there; never follows a link."""
    import shutil

    path = Path(path)
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def install_file(tmp, path, replace: bool = True) -> None:
    """Rename the finished temporary *tmp* to *path*.

    ``replace=False`` never replaces an existing *path*: a hard link fails
    with ``EEXIST`` when the name is taken, atomically, where a check then a
    rename would race with another process.
    """
    if replace:
        os.replace(tmp, path)
        return
    from napari_blendphot.errors import OutputExistsError

    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(path) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # A file system without hard links: the best that remains is check, then rename.
        if os.path.lexists(path):
            raise OutputExistsError(path) from None
        os.rename(tmp, path)
        return
    os.unlink(tmp)


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def rename2(source, target, flags: int) -> bool:
    """Linux ``renameat2(source, target, flags)``; False where the call or the flag is not supported.

    ``RENAME_NOREPLACE`` fails with ``FileExistsError`` when *target* exists;
    ``RENAME_EXCHANGE`` swaps the two names atomically (both must exist).
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = function(at_fdcwd, os.fsencode(os.fspath(source)), at_fdcwd, os.fsencode(os.fspath(target)),
                      ctypes.c_uint(flags))
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(source), None, os.fspath(target))


def install_folder(staging, folder, replace: bool, remove_old=None) -> None:
    """Rename the finished folder *staging* to *folder*.

    Without *replace* an existing non-empty *folder* is never touched: the
    rename fails (``OutputExistsError``), also when another process created
    it while this one was writing.  An empty folder is replaced.  With
    *replace* the two folders are swapped atomically where the system can
    (``RENAME_EXCHANGE``; elsewhere the old one is first renamed aside, so a
    kill between the two renames leaves no folder under the final name,
    never a mix), then ``remove_old(path)`` deletes the old content, now at
    a temporary name.  The caller has checked that the old folder may go.
    """
    from napari_blendphot.errors import OutputExistsError

    staging, folder = Path(staging), Path(folder)
    if folder.is_dir() and not folder.is_symlink():
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds when empty: nothing to lose
    if not os.path.lexists(folder):
        try:
            if not rename2(staging, folder, RENAME_NOREPLACE):
                os.rename(staging, folder)  # fails on a non-empty folder (ENOTEMPTY)
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not replace:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise OutputExistsError(folder) from None
                raise
    if not replace:
        raise OutputExistsError(folder)
    if rename2(staging, folder, RENAME_EXCHANGE):
        old = staging
    else:
        old = partial_name(folder)
        os.rename(folder, old)
        os.rename(staging, folder)
    if remove_old is not None:
        remove_old(old)


def write_bytes_atomic(path, data: bytes) -> Path:
    """Write *data* to *path* atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
    return Path(path)


def write_text_atomic(path, text: str, encoding: str = "utf-8") -> Path:
    """Write *text* to *path* atomically."""
    return write_bytes_atomic(path, text.encode(encoding))


def make_partial_folder(path) -> Path:
    """Create and return an empty temporary folder beside *path* (removed by :func:`remove_stale_partials`
    once its process has died)."""
    path = Path(path)
    while True:
        folder = partial_name(path)
        try:
            folder.mkdir()
            return folder
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue


def remove_stale_partials(folder, name: str | None = None, older_than_s: float = 0.0) -> list[Path]:
    """Remove temporaries (``.*.partial-*``) in *folder* left by killed runs.

    Only names this module makes are touched, and only those whose owning
    process (the pid in the name) is no longer alive, so a concurrent writer's
    temporary is never pulled from under it.  *name* limits the clean-up to the
    temporaries of one output.  Returns what was removed.
    """
    import shutil

    folder = Path(folder)
    removed = []
    prefix = f".{name}{PARTIAL_MARK}" if name else "."
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(prefix) or PARTIAL_MARK not in entry.name:
            continue
        token = entry.name.split(PARTIAL_MARK, 1)[1]
        pid_text = token.split("-", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        try:
            if now - entry.lstat().st_mtime < older_than_s:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            continue
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
