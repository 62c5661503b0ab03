"""Where an output may go, and what ``--overwrite`` may replace: one set of rules for every writer.

- **Before computing**, every command checks its output location
  (:func:`check_output_location`): the folder that will hold it exists or can
  be made, nothing on the way is a file, a file can be created there (a real
  probe, so a read-only file system fails now, not after an hour), and there
  is room for what will be written (:func:`check_free_space`).
- **Replace only what the project made.**  An existing output is replaced
  only with ``overwrite=True`` *and* when it carries the project's mark: a
  blend dataset's ``provenance.json``, a native sample file's ``BPFORMAT``
  card, a table's ``blendphot-meta`` provenance, a PNG's ``Software`` tag, a
  report folder's manifest (:func:`check_replaceable_file`,
  :func:`check_replaceable_folder`).  A folder holding anything else is
  refused, naming the first foreign entry, and only the files the project
  knows it wrote are ever deleted (:func:`remove_known_files`).
- **Inputs never lie inside an output** that would be replaced
  (:func:`check_inputs_outside`).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from napari_blendphot.atomic import discard, is_partial_name, partial_name
from napari_blendphot.errors import InputError, OutputExistsError

#: ``Software`` text chunk of every PNG the project writes (how a figure is recognised as ours).
PNG_SOFTWARE = "napari-blendphot"
#: Room kept free beyond what an output needs (other writers, file system overhead).
SPACE_MARGIN_BYTES = 1024**2


# -- location ------------------------------------------------------------------------------------

def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path):
        if path.parent == path:
            break
        path = path.parent
    return path


def check_output_location(path, kind: str = "file", need_bytes: int = 0, source=None) -> None:
    """Refuse an output *path* that cannot be written, before anything is computed.

    *kind* is ``"file"`` or ``"folder"`` (what *path* will be).  Checks: the
    nearest existing ancestor is a folder (not a file), a file can be created
    in it (a probe: read-only file systems and missing permissions fail here,
    also for root), *path* itself is not a folder where a file is expected (or
    the reverse) and not a symbolic link to replace, and *need_bytes* fit in
    the free space.  Raises :class:`InputError` naming *source* (default the
    path).
    """
    path = Path(path)
    source = str(path) if source is None else source
    if path.is_symlink():
        raise InputError(source, "is a symbolic link; give the real path of the output")
    if kind == "file" and path.is_dir():
        raise InputError(source, "is a folder; give a file name for this output")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise InputError(source, "exists and is not a folder", "choose another output path")
    if kind == "folder" and path.exists() and _holds_current_folder(path):
        raise InputError(source, "is the current folder (or holds it)", "give the name of a new folder for the output")
    parent = Path(os.path.abspath(path)).parent
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise InputError(source, f"{str(existing)!r} is a file, not a folder, so nothing can be written under it")
    probe_writable(existing, source)
    if kind == "folder" and path.is_dir():
        probe_writable(path, source)  # an existing output folder is written into, not only beside
    if need_bytes:
        check_free_space(existing, need_bytes, source)


def _holds_current_folder(path: Path) -> bool:
    try:
        here = Path.cwd().resolve()
        target = path.resolve()
    except OSError:
        return False
    return target == here or target in here.parents


def probe_writable(folder, source=None) -> None:
    """Create and remove an empty temporary file in *folder*; :class:`InputError` if that fails."""
    folder = Path(folder)
    probe = partial_name(folder / "write-probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise InputError(source or folder, f"cannot write in {str(folder)!r}: {exc.strerror}",
                         "choose an output location you can write to") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass


def free_bytes(folder) -> int:
    stats = os.statvfs(folder)
    return int(stats.f_bavail) * int(stats.f_frsize)


def check_free_space(folder, need_bytes: int, source=None) -> None:
    """Refuse when the file system of *folder* has less than *need_bytes* (plus a margin) free."""
    folder = _nearest_existing(Path(folder))
    try:
        free = free_bytes(folder)
    except OSError:
        return  # unknown (no statvfs here): the write itself will tell
    if free < int(need_bytes) + SPACE_MARGIN_BYTES:
        raise InputError(source or folder, f"not enough free space: the output needs {_size(need_bytes)}, "
                         f"{_size(free)} free on the disk of {str(folder)!r}",
                         "free some space or choose another output location")


def _size(n: float) -> str:
    n = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


def reserve(path, size: int, source=None) -> None:
    """Allocate *size* bytes of the file *path* on disk now (``posix_fallocate``).

    A sparse file (what ``open_memmap`` makes) takes its blocks when its pages
    are written: on a full disk that is a SIGBUS that kills the process with
    no message.  Reserved blocks cannot run out later.  ``ENOSPC`` becomes an
    :class:`InputError`; file systems without ``fallocate`` keep the sparse
    file (the free-space check before the run is then the only guard).
    """
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, int(size))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(source or path, f"not enough free space on the disk ({exc.strerror}) for "
                             f"{_size(size)}", "free some space or choose another output location") from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def check_inputs_outside(output, inputs, source=None) -> None:
    """Refuse when an input is *output* itself or lies inside it (it would be replaced or deleted)."""
    try:
        target = Path(output).resolve()
    except OSError:
        return
    for item in inputs:
        if item is None:
            continue
        try:
            resolved = Path(item).resolve()
        except OSError:
            continue
        if not os.path.lexists(resolved):
            continue
        if resolved == target or target in resolved.parents:
            raise InputError(source or output, f"the input {str(item)!r} lies in this output, which would "
                             "replace it", "write the output somewhere else")


# -- recognising the project's own outputs ---------------------------------------------------

def is_native_sample_file(path) -> bool:
    """A native sample FITS file (``BPFORMAT = 'blendphot-sample'`` in its first header)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2880 * 4)
    except OSError:
        return False
    if head[:2] == b"\x1f\x8b":
        import gzip

        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(2880 * 4)
        except (OSError, EOFError):
            return False
    if not head.startswith(b"SIMPLE  ="):
        return False
    cards = [head[i:i + 80] for i in range(0, len(head) - 79, 80)]
    return any(card.startswith(b"BPFORMAT=") and b"'blendphot-sample'" in card for card in cards)


def table_provenance(path) -> dict | None:
    """The provenance a table written by :func:`napari_blendphot.tables.write_table` carries (None if none)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            from napari_blendphot.tables import _META_PREFIX, meta_path

            sidecar = meta_path(path)
            if sidecar.is_file():  # today's CSV tables: metadata in NAME.csv.meta.json
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
                provenance = meta.get("provenance") if isinstance(meta, dict) else None
                return provenance if isinstance(provenance, dict) else None
            with open(path, encoding="utf-8-sig", errors="replace") as handle:  # older: '# blendphot-meta' lines
                for line in handle:
                    if not line.startswith("#"):
                        break
                    text = line[1:].strip()
                    if text.startswith(_META_PREFIX):
                        try:
                            meta = json.loads(text[len(_META_PREFIX):])
                        except json.JSONDecodeError:
                            continue
                        if isinstance(meta, dict) and isinstance(meta.get("provenance"), dict):
                            return meta["provenance"]
            return None
        if suffix in (".fits", ".fit"):
            from astropy.io import fits

            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                if len(hdul) < 2:
                    return None
                text = hdul[1].header.get("PROVENANCE")
            value = json.loads(text) if isinstance(text, str) else None
            return value if isinstance(value, dict) else None
    except Exception:  # anything unreadable is not recognisably ours
        return None
    return None


def is_project_table(path, steps=None) -> bool:
    """A table this project wrote (provenance in its metadata), of one of *steps* if given."""
    provenance = table_provenance(path)
    if provenance is None:
        return False
    return steps is None or provenance.get("step") in steps


def is_project_png(path) -> bool:
    """A PNG this project wrote: its ``Software`` text chunk is :data:`PNG_SOFTWARE`."""
    import struct
    import zlib

    try:
        with open(path, "rb") as handle:
            if handle.read(8) != b"\x89PNG\r\n\x1a\n":
                return False
            for _ in range(64):
                header = handle.read(8)
                if len(header) < 8:
                    return False
                length, kind = struct.unpack(">I4s", header)
                if kind == b"IDAT" or kind == b"IEND":
                    return False
                data = handle.read(length)
                handle.read(4)  # CRC
                if kind == b"tEXt":
                    key, _, value = data.partition(b"\0")
                    if key == b"Software" and value.decode("latin-1") == PNG_SOFTWARE:
                        return True
                elif kind == b"zTXt":
                    key, _, rest = data.partition(b"\0")
                    if key == b"Software" and zlib.decompress(rest[1:]).decode("latin-1") == PNG_SOFTWARE:
                        return True
    except (OSError, struct.error, zlib.error, UnicodeDecodeError):
        return False
    return False


# -- replacing -----------------------------------------------------------------------------------

def check_replaceable_file(path, overwrite: bool, recognise, what: str, option: str = "--overwrite") -> None:
    """Refuse to write *path* unless it is absent, or *overwrite* is set and ``recognise(path)`` says it is ours.

    *what* names the kind of output for the message ("a native sample file").
    """
    path = Path(path)
    if path.is_symlink():
        raise InputError(path, "is a symbolic link; refusing to replace it", "give the real path of the output")
    if path.is_dir():
        raise InputError(path, "is a folder; give a file name for this output")
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise OutputExistsError(path, option)
    if not recognise(path):
        raise InputError(path, f"exists and is not {what} written by blendphot; refusing to replace it",
                         "move it away or choose another output")


def folder_entries(folder) -> list[str]:
    """Names in *folder*, leaving out the temporaries of writers (removed with the folder or by the next run)."""
    return sorted(name for name in os.listdir(folder) if not is_partial_name(name))


def check_replaceable_folder(folder, overwrite: bool, recognise, known, what: str,
                             option: str = "--overwrite") -> None:
    """Refuse to replace the folder *folder* unless that loses nothing the project did not make.

    Allowed: no folder, an empty folder, or (with *overwrite*) a folder that
    ``recognise(folder)`` marks as ours and that holds only the names in
    *known*.  Anything else is an :class:`InputError` naming the reason (the
    first foreign entry); without *overwrite* a non-empty folder is an
    :class:`OutputExistsError`.
    """
    folder = Path(folder)
    if folder.is_symlink():
        raise InputError(folder, "is a symbolic link; refusing to replace it", "give the real path of the output")
    if not os.path.lexists(folder):
        return
    if not folder.is_dir():
        raise InputError(folder, "exists and is not a folder", "choose another output path")
    entries = folder_entries(folder)
    if not entries:
        return
    if not overwrite:
        raise OutputExistsError(folder, option)
    if not recognise(folder):
        raise InputError(folder, f"is not {what} written by blendphot; refusing to replace it (it holds "
                         f"{entries[0]!r})", "move it away or choose another output folder")
    foreign = [name for name in entries if name not in known]
    if foreign:
        raise InputError(folder / foreign[0], f"is not part of {what}; refusing to replace the folder that "
                         "holds it", "move it away or choose another output folder")


def remove_known_files(folder, known) -> list[str]:
    """Delete the files named in *known* (and writers' temporaries) from *folder*, then the folder if empty.

    Anything else is left where it is; returns the names left behind.
    """
    folder = Path(folder)
    left = []
    for name in os.listdir(folder):
        entry = folder / name
        if name in known and entry.is_file() and not entry.is_symlink():
            entry.unlink()
        elif is_partial_name(name):
            discard(entry)
        else:
            left.append(name)
    if not left:
        try:
            folder.rmdir()
        except OSError:
            pass
    return sorted(left)


def replace_folder_with(staging, folder, overwrite: bool, recognise, known, what: str) -> None:
    """Install the finished folder *staging* as *folder*, by the rules of :func:`check_replaceable_folder`.

    The check runs again here (the folder may have changed during the run);
    the old folder's known files are deleted after the swap and anything
    foreign that appeared meanwhile is kept (the old folder then stays under
    a hidden name beside *folder*, which is said on stderr).
    """
    import sys

    from napari_blendphot.atomic import install_folder

    folder = Path(folder)
    check_replaceable_folder(folder, overwrite, recognise, known, what)

    def remove_old(old):
        left = remove_known_files(old, known)
        if left:
            kept = folder.with_name(f"{folder.name}.replaced-{os.getpid()}")
            try:
                os.rename(old, kept)
            except OSError:
                kept = old
            print(f"{folder}: the replaced folder held {left[0]!r}, which blendphot did not write; kept in "
                  f"{kept}", file=sys.stderr)

    install_folder(staging, folder, replace=overwrite, remove_old=remove_old)
