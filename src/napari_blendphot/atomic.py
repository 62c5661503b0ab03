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
output never write into the same temporary: the last rename wins, and each
rename installs a complete file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

PARTIAL_MARK = ".partial-"


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
def atomic_output(path, suffix: str | None = None, fsync: bool = True):
    """Context manager yielding a temporary path to write; renamed to *path* on success.

    ``suffix`` defaults to *path*'s own suffixes so that format detection by
    extension keeps working.  On an exception the temporary is removed and
    *path* is left as it was.
    """
    path = Path(path)
    if suffix is None:
        suffix = "".join(path.suffixes)
    tmp = partial_name(path, suffix)
    try:
        yield tmp
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            if tmp.is_dir() and not tmp.is_symlink():
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()
        raise
    if fsync:
        fsync_path(path.parent if str(path.parent) else ".")


def write_bytes_atomic(path, data: bytes) -> Path:
    """Write *data* to *path* atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
    return Path(path)


def write_text_atomic(path, text: str, encoding: str = "utf-8") -> Path:
    """Write *text* to *path* atomically."""
    return write_bytes_atomic(path, text.encode(encoding))


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
