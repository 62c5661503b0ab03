"""Download and unpack the real CANDELS sample (Zenodo record 2604740).

The archive ``candels-blender-data.tar.gz`` (~120 MB) is downloaded with
:mod:`pooch` into a cache folder, its SHA-256 checked when one is known, and
unpacked *safely*: every member is checked before anything is written, and
absolute paths, paths escaping the target folder, links, devices and FIFOs are
refused.  The result is the folder :func:`~napari_blendphot.sample.io_candels.read_candels`
reads.

Cache folder, first match wins: the ``cache_dir`` argument (``--cache-dir``),
the environment variable ``BLENDPHOT_DATA_DIR``, ``pooch.os_cache("napari-blendphot")``.
An archive already in the cache folder is used without downloading (so the
file can be copied there by hand on an offline machine).
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
from pathlib import Path, PurePosixPath

from napari_blendphot.errors import InputError
from napari_blendphot.provenance import sha256_file

ZENODO_RECORD = "2604740"
ZENODO_DOI = "10.5281/zenodo.2604740"
ARCHIVE_NAME = "candels-blender-data.tar.gz"
DEFAULT_URL = f"https://zenodo.org/records/{ZENODO_RECORD}/files/{ARCHIVE_NAME}?download=1"
#: SHA-256 of the published archive.  Not recorded yet (Zenodo was unreachable
#: when this was written): the first download prints the hash it found, which
#: can be passed with ``--sha256`` to pin it.
KNOWN_SHA256: str | None = None
DATA_DIR_ENV = "BLENDPHOT_DATA_DIR"
#: Name of the folder the archive is unpacked into, inside the cache folder.
EXTRACTED_NAME = "candels-blender-data"
_COMPLETE_MARKER = ".blendphot-extracted"


def default_cache_dir(cache_dir=None) -> Path:
    """The cache folder: *cache_dir*, else ``$BLENDPHOT_DATA_DIR``, else pooch's OS cache."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("napari-blendphot"))


def _cache_source(cache_dir) -> str:
    """How the user named the cache folder (for messages)."""
    if cache_dir:
        return f"argument --cache-dir {cache_dir}"
    if os.environ.get(DATA_DIR_ENV):
        return f"${DATA_DIR_ENV} ({os.environ[DATA_DIR_ENV]})"
    return "the cache folder"


def check_cache_dir(cache_dir=None, need_bytes: int = 0) -> Path:
    """The cache folder, checked before downloading: a folder (or creatable), writable, with room."""
    from napari_blendphot.outputs import check_free_space, check_output_location, probe_writable

    cache = default_cache_dir(cache_dir)
    source = _cache_source(cache_dir)
    if cache.exists() and not cache.is_dir():
        raise InputError(source, f"{str(cache)!r} is a file, not a folder",
                         f"point --cache-dir or ${DATA_DIR_ENV} at a folder")
    check_output_location(cache, "folder", 0, source)
    if cache.is_dir():
        probe_writable(cache, source)
        if need_bytes:
            check_free_space(cache, need_bytes, source)
    return cache


class StderrProgress:
    """A minimal progress bar with the interface pooch expects (no tqdm needed).

    Prints ``label: 12.3/120.0 MB (10%)`` lines on *stream*, at most every 5 %.
    """

    def __init__(self, label: str = "download", stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.total = 0
        self.count = 0
        self._last = -1

    def update(self, n: int) -> None:
        self.count += n
        if self.total:
            percent = min(100, int(100 * self.count / self.total))
            if percent // 5 == self._last // 5 and percent != 100:
                return
            self._last = percent
            self.stream.write(f"{self.label}: {self.count / 1e6:.1f}/{self.total / 1e6:.1f} MB ({percent}%)\n")
        else:
            self.stream.write(f"{self.label}: {self.count / 1e6:.1f} MB\n")
        self.stream.flush()

    def reset(self) -> None:
        self.count = 0
        self._last = -1

    def close(self) -> None:
        self.stream.flush()


def _progressbar(progress):
    """pooch's ``progressbar``: tqdm when installed, otherwise :class:`StderrProgress`."""
    if progress is False or progress is None:
        return False
    if progress is not True:
        return progress
    try:
        import tqdm  # noqa: F401  (pooch's own bar needs it)
    except ImportError:
        return StderrProgress(ARCHIVE_NAME)
    return True


def download_archive(cache_dir=None, url: str = DEFAULT_URL, sha256: str | None = KNOWN_SHA256,
                     force: bool = False, progress=True) -> Path:
    """Download the archive into the cache folder (or reuse it) and check its hash.

    A download whose SHA-256 differs from *sha256* raises :class:`InputError`;
    the bad file is not kept.
    """
    import pooch

    cache = check_cache_dir(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / ARCHIVE_NAME
    if force and archive.exists():
        archive.unlink()
    if sha256:
        sha256 = sha256.lower().removeprefix("sha256:")
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InputError("argument --sha256", f"{sha256!r} is not a SHA-256 hex digest")
    existed = archive.exists()
    downloader = pooch.HTTPDownloader(progressbar=_progressbar(progress), chunk_size=1 << 16, timeout=60)
    try:
        path = pooch.retrieve(url, known_hash=f"sha256:{sha256}" if sha256 else None, fname=ARCHIVE_NAME,
                              path=cache, downloader=downloader, progressbar=bool(progress))
    except ValueError as exc:
        if "hash" not in str(exc).lower():
            raise InputError(url, f"download failed: {type(exc).__name__}: {exc}") from None
        # pooch checks the hash on a temporary file and only then moves it into
        # place; a mismatching archive that was already cached is removed here.
        if existed and archive.exists() and sha256 and pooch.file_hash(str(archive)) != sha256:
            archive.unlink()
        raise InputError(url, f"checksum mismatch, download rejected: {' '.join(str(exc).split())}",
                         "retry; if it persists the file changed upstream or --sha256 is wrong") from None
    except Exception as exc:  # requests raises its own hierarchy (connection, HTTP status...)
        raise InputError(url, f"download failed: {type(exc).__name__}: {exc}",
                         f"check the network, or copy {ARCHIVE_NAME} into {cache} by hand") from None
    return Path(path)


#: Limits on what an archive may unpack to.  The real archive holds 3 files
#: and ~0.27 GB; these leave room for a larger release while refusing an
#: archive built to fill the disk (a "tar bomb": gigabytes of zeros compress
#: to megabytes).
MAX_UNPACKED_BYTES = 8 * 1024**3
#: Disk space checked before fetching: the archive and the unpacked sample, with room to spare.
FETCH_BYTES = 450 * 1000**2
MAX_MEMBERS = 1000


def check_members(archive: tarfile.TarFile, target: Path, source) -> list[tarfile.TarInfo]:
    """Every member of *archive*, checked to unpack strictly inside *target*.

    Raises :class:`InputError` naming the first offending member: absolute
    paths, ``..`` escapes, symbolic and hard links, devices, FIFOs and any
    other non-regular entries are refused, and so are archives with more than
    :data:`MAX_MEMBERS` members or more than :data:`MAX_UNPACKED_BYTES` of data
    (sizes are read from the member headers, before anything is written).
    """
    target = target.resolve()
    members = []
    total = 0
    for member in archive:  # iterating reads headers only; stop early on a bomb
        members.append(member)
        if len(members) > MAX_MEMBERS:
            raise InputError(source, f"refusing an archive of more than {MAX_MEMBERS} members",
                             "the CANDELS archive holds 3 files")
        total += max(member.size, 0)
        if total > MAX_UNPACKED_BYTES:
            raise InputError(source, f"refusing an archive that unpacks to more than {MAX_UNPACKED_BYTES:,} bytes "
                             f"(member {member.name!r} reaches {total:,})",
                             "the CANDELS archive unpacks to about 0.27 GB")
    for member in members:
        name = member.name
        if member.issym() or member.islnk():
            raise InputError(source, f"refusing archive member {name!r}: it is a link",
                             "the CANDELS archive holds only plain files")
        if not (member.isfile() or member.isdir()):
            raise InputError(source, f"refusing archive member {name!r}: not a regular file or folder "
                             "(device, FIFO or special entry)")
        posix = PurePosixPath(name)
        if posix.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise InputError(source, f"refusing archive member {name!r}: absolute path")
        resolved = (target / name).resolve()
        if resolved != target and target not in resolved.parents:
            raise InputError(source, f"refusing archive member {name!r}: it would be written outside {target}")
    return members


def extract_archive(archive_path, target, force: bool = False) -> Path:
    """Unpack *archive_path* into the folder *target*, safely and atomically.

    Members are checked with :func:`check_members` before anything is written;
    the archive is unpacked into a temporary sibling folder which is then
    renamed to *target*.  An existing *target* is reused (or, with *force*,
    replaced) only if an earlier unpacking made it; anything else is an error.  Returns the folder that holds ``candels_img.npy``
    (*target* itself or its single sub-folder).
    """
    archive_path = Path(archive_path)
    target = Path(target)
    if target.exists():
        made_here = (target / _COMPLETE_MARKER).is_file()
        if made_here and not force:
            return _data_folder(target, archive_path)
        if not made_here and (not target.is_dir() or any(target.iterdir())):
            # Never delete what an earlier unpacking did not create, even with force.
            raise InputError(target, "exists and was not made by fetch-candels; leaving it alone",
                             "move it away or choose another --cache-dir")
    from napari_blendphot.atomic import make_partial_folder, remove_stale_partials

    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target.parent, target.name)  # what killed runs left behind
    legacy = target.with_name(f".{target.name}.partial")  # the fixed staging name of earlier versions
    if legacy.is_symlink() or legacy.is_file():
        # Never follow a link left at a staging path: remove the link itself.
        legacy.unlink()
    elif legacy.exists():
        shutil.rmtree(legacy)
    partial = make_partial_folder(target)  # a unique name: nothing planted there in advance
    try:
        try:
            with tarfile.open(archive_path, "r:*") as archive:
                members = check_members(archive, partial, archive_path)
                if hasattr(tarfile, "data_filter"):
                    # Defence in depth: the standard library's own safety filter.
                    archive.extractall(partial, members=members, filter="data")
                else:  # pragma: no cover - Python without PEP 706
                    archive.extractall(partial, members=members)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InputError(archive_path, f"cannot unpack: {exc}", "the archive is damaged: fetch again with --force") from None
        data = _data_folder(partial, archive_path)
        # The marker: the archive's hash, then every member unpacked (the files a later --force may delete).
        names = sorted(m.name for m in members if m.isfile())
        (partial / _COMPLETE_MARKER).write_text("\n".join([sha256_file(archive_path), *names]) + "\n")
        from napari_blendphot.atomic import install_folder

        # Only an unpacking of ours is replaced (checked above): swap, then delete what it unpacked.
        install_folder(partial, target, replace=True, remove_old=_remove_unpacked)
    finally:
        if partial.exists() and not partial.is_symlink():
            shutil.rmtree(partial, ignore_errors=True)
    return target / data.relative_to(partial)


def _marker_lines(folder: Path) -> list[str]:
    try:
        return [line for line in (Path(folder) / _COMPLETE_MARKER).read_text().splitlines() if line]
    except OSError:
        return []


def _remove_unpacked(folder: Path) -> None:
    """Delete the files an unpacking listed in its marker, then empty folders; keep anything else."""
    folder = Path(folder)
    listed = _marker_lines(folder)[1:]
    for name in listed:
        path = folder / name
        if path.resolve().is_relative_to(folder.resolve()) and path.is_file() and not path.is_symlink():
            path.unlink()
    (folder / _COMPLETE_MARKER).unlink(missing_ok=True)
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
        try:
            sub.rmdir()
        except OSError:
            pass
    try:
        folder.rmdir()
    except OSError:
        kept = folder.with_name(f"{folder.name.lstrip('.').split('.partial-')[0]}.replaced-{os.getpid()}")
        os.rename(folder, kept)
        print(f"{kept}: files not unpacked by fetch-candels were in the replaced folder; kept here",
              file=sys.stderr)


def _data_folder(root: Path, source) -> Path:
    from napari_blendphot.sample.io_candels import IMAGES_FILE

    if (root / IMAGES_FILE).is_file():
        return root
    candidates = sorted(p.parent for p in root.glob(f"*/{IMAGES_FILE}"))
    if len(candidates) == 1:
        return candidates[0]
    raise InputError(source, f"the archive holds no {IMAGES_FILE} (or several)",
                     "is this the Zenodo 2604740 candels-blender-data archive?")


def fetch_candels(cache_dir=None, url: str = DEFAULT_URL, sha256: str | None = KNOWN_SHA256,
                  force: bool = False, progress=True) -> Path:
    """Download (or reuse), verify and unpack the CANDELS archive; return its data folder.

    Parameters
    ----------
    cache_dir : path-like, optional
        Where the archive and the unpacked folder go (see :func:`default_cache_dir`).
    url : str
        Where to download from (default: Zenodo record 2604740).
    sha256 : str, optional
        Expected SHA-256 of the archive; a mismatch is an error and the file is discarded.
    force : bool
        Download and unpack again even if a copy is cached.
    progress : bool or object
        Show a progress bar on stderr (tqdm if installed), or a pooch-style bar object.
    """
    cache = check_cache_dir(cache_dir)
    target = cache / EXTRACTED_NAME
    marker = target / _COMPLETE_MARKER
    if not force and marker.is_file():
        unpacked_from = (_marker_lines(target) or [""])[0]
        if not sha256 or unpacked_from == sha256.lower().removeprefix("sha256:"):
            return _data_folder(target, target)
    # The archive (~120 MB) and what it unpacks to (~0.27 GB): room for both before downloading.
    from napari_blendphot.outputs import check_free_space

    check_free_space(cache, FETCH_BYTES, _cache_source(cache_dir))
    archive = download_archive(cache, url=url, sha256=sha256, force=force, progress=progress)
    return extract_archive(archive, target, force=True)


def fetch_candels_sample(**kwargs):
    """:func:`fetch_candels`, then read the folder into a :class:`GalaxySample`."""
    from napari_blendphot.sample.io_candels import read_candels

    return read_candels(fetch_candels(**kwargs))


def unpacked_archive_sha256(cache_dir=None) -> str | None:
    """SHA-256 of the archive the cached CANDELS folder was unpacked from (None if none)."""
    lines = _marker_lines(default_cache_dir(cache_dir) / EXTRACTED_NAME)
    return lines[0] if lines else None
