"""The curation sidecar: every screening decision, saved the moment it is made.

A curation session walks through a sample of isolated galaxies and decides,
galaxy by galaxy, whether each is clean enough to blend (the CANDELS visual
screening of Boucaud et al. 2020).  Decisions live in a *sidecar* file next to
the sample, never in the sample itself.

Format (JSON lines, UTF-8; ``docs/curation.md``)
------------------------------------------------
Line 1 is the header::

    {"format": "blendphot-curation", "version": 1,
     "sample": {"source": "...", "n_galaxies": N, "ids_sha256": "...", "images_sha256": "..."}}

Every further line is one decision record::

    {"id": 1234, "decision": "reject", "reason": "artefacts", "note": "",
     "galtype": null, "time": "2026-11-24T01:30:00+00:00", "reviewer": "ada"}

``decision`` is ``accept``, ``reject`` or ``skip``; ``reason`` is one of
:data:`REASONS` or free text (rejections), ``galtype`` the corrected
morphological type or null.  Records are in the order they were made; the
*last* record of a galaxy is its current decision.  Undo removes the last
record (so a changed decision falls back to the previous one).

Durability: each change rewrites the whole file into a temporary file in the
same folder, ``fsync``-s it and ``os.replace``-s it over the sidecar (then
syncs the folder), so after a crash or ``SIGKILL`` the sidecar is either the
state before or after the change, never a mix.  A sidecar is a few hundred
kB for 2,000 decisions, so rewriting it costs about a millisecond.

Two sessions on one sidecar: a store remembers the file it last read or
wrote (inode, size, modification time) and refuses to save over a sidecar
another session replaced meanwhile, instead of silently dropping the other
session's decisions.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from napari_blendphot.constants import GALTYPES
from napari_blendphot.errors import InputError

__all__ = [
    "DECISIONS",
    "FORMAT_NAME",
    "REASONS",
    "CorruptSidecarError",
    "Decision",
    "DecisionStore",
    "default_sidecar_path",
    "sample_fingerprint",
]

FORMAT_NAME = "blendphot-curation"
FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".curation.jsonl"
#: Decisions a reviewer can make.
DECISIONS = ("accept", "reject", "skip")
#: Rejection reasons of the CANDELS visual screening (keys 1-4 in the widget).
REASONS = (
    "possibly blended central galaxy",
    "neighbours too close or too diffuse",
    "segmentation not covering the source",
    "artefacts",
)


class CorruptSidecarError(InputError):
    """The sidecar exists but some of it cannot be read; ``DecisionStore(..., repair=True)`` fixes it."""

    def __init__(self, source, problem: str, readable: int, unreadable: int):
        self.readable = readable
        self.unreadable = unreadable
        super().__init__(source, problem,
                         f"{readable} decision(s) are readable; open it with repair=True (the GUI asks) to "
                         "keep them, after a timestamped backup of the damaged file")


@dataclass(frozen=True)
class Decision:
    """One screening decision about one galaxy."""

    id: int
    decision: str
    reason: str | None = None
    note: str = ""
    galtype: str | None = None
    time: str = ""
    reviewer: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(", ", ": "))

    @classmethod
    def from_dict(cls, record: dict) -> "Decision":
        """Build and check a record read from a sidecar line (raises ValueError if malformed)."""
        if not isinstance(record, dict):
            raise ValueError("record is not a JSON object")
        galaxy_id = record.get("id")
        if isinstance(galaxy_id, bool) or not isinstance(galaxy_id, int):
            raise ValueError(f"id {galaxy_id!r} is not an integer")
        decision = record.get("decision")
        if decision not in DECISIONS:
            raise ValueError(f"decision {decision!r} is not one of {DECISIONS}")
        reason = record.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ValueError(f"reason {reason!r} is not text")
        galtype = record.get("galtype")
        if galtype is not None and galtype not in GALTYPES:
            raise ValueError(f"galtype {galtype!r} is not one of {GALTYPES}")
        note = record.get("note") or ""
        time = record.get("time") or ""
        reviewer = record.get("reviewer") or ""
        if not all(isinstance(v, str) for v in (note, time, reviewer)):
            raise ValueError("note, time and reviewer must be text")
        return cls(galaxy_id, decision, reason, note, galtype, time, reviewer)


def sample_fingerprint(sample) -> dict:
    """What identifies a sample in a sidecar header: its ids and its pixels (SHA-256)."""
    from napari_blendphot.provenance import sha256_array

    ids = np.ascontiguousarray(np.asarray(sample.ids, dtype="<i8"))
    return {
        "source": str(sample.source),
        "n_galaxies": int(len(sample)),
        "ids_sha256": hashlib.sha256(ids.tobytes()).hexdigest(),
        "images_sha256": sha256_array(np.asarray(sample.images, dtype=np.float32)),
    }


def default_sidecar_path(sample_path) -> Path:
    """Where the decisions about a sample go by default.

    * a sample file: ``<file>.curation.jsonl`` beside it;
    * a sample folder (CANDELS, cutouts): ``<folder>/curation.jsonl``;
    * the embedded mock sample (``"embedded"``, or its file, which lives inside
      the installed package): ``embedded-sample.curation.jsonl`` in the current folder;
    * anything else (the name of an in-memory sample): ``<name>.curation.jsonl``
      in the current folder, the name made file-safe.
    """
    import re

    from napari_blendphot.sample.embedded import embedded_sample_path
    from napari_blendphot.sample.io import EMBEDDED_NAMES

    embedded = Path.cwd() / f"embedded-sample{SIDECAR_SUFFIX}"
    text = str(sample_path)
    if text.strip().lower() in EMBEDDED_NAMES and not Path(text).exists():
        return embedded
    path = Path(text).expanduser()
    if path.is_file():
        try:
            if path.resolve() == embedded_sample_path(must_exist=False).resolve():
                return embedded
        except InputError:  # package data not installed: cannot be that file
            pass
        return path.with_name(path.name + SIDECAR_SUFFIX)
    if path.is_dir():
        return path / SIDECAR_SUFFIX.lstrip(".")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "sample"
    return Path.cwd() / f"{name}{SIDECAR_SUFFIX}"


def _default_reviewer() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): getuser raises various errors
        return "unknown"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_atomically(path: Path, text: str) -> None:
    """Replace *path* by *text*: a unique temporary in the same folder, fsync, rename, fsync the folder.

    :func:`napari_blendphot.atomic.atomic_output` does exactly that (it syncs
    the file before the rename and the folder after it).
    """
    from napari_blendphot.atomic import atomic_output

    with atomic_output(path, fsync=True) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)


@dataclass
class _Parsed:
    header: dict | None
    records: list = field(default_factory=list)
    problems: list = field(default_factory=list)


def _parse(path: Path) -> _Parsed:
    raw = path.read_bytes()
    parsed = _Parsed(header=None)
    lines = raw.split(b"\n")
    # A last line without its line end is what a write cut short would leave;
    # it is kept if it still parses as a whole record.
    truncated = bool(lines) and lines[-1] != b""
    if not truncated and lines:
        lines.pop()
    for number, line in enumerate(lines, start=1):
        try:
            value = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            what = "line 1 (header)" if number == 1 else f"line {number}"
            if truncated and number == len(lines):
                what += " (the last, cut short)"
            parsed.problems.append(f"{what} is not valid JSON: {exc}")
            continue
        if number == 1:
            if isinstance(value, dict) and value.get("format") == FORMAT_NAME:
                parsed.header = value
            else:
                parsed.problems.append(f"line 1 is not a {FORMAT_NAME} header")
                if isinstance(value, dict) and "decision" in value:
                    _add_record(parsed, value, number)
            continue
        _add_record(parsed, value, number)
    if not lines:
        parsed.problems.append("the file is empty")
    return parsed


def _add_record(parsed: _Parsed, value, number: int) -> None:
    try:
        parsed.records.append(Decision.from_dict(value))
    except ValueError as exc:
        parsed.problems.append(f"line {number}: {exc}")


class DecisionStore:
    """The decisions of one curation session, kept on disk after every change.

    Parameters
    ----------
    path : path-like
        The sidecar file (see :func:`default_sidecar_path`); created if absent.
    sample : GalaxySample
        The sample being curated; the sidecar's header must match it.
    reviewer : str, optional
        Name recorded with each decision (default: the login name).
    repair : bool
        If the sidecar is damaged, copy it to ``<sidecar>.damaged-<UTC time>.bak``
        and rewrite it with every readable decision.  Without it a damaged
        sidecar raises :class:`CorruptSidecarError` and nothing is touched.

    Raises
    ------
    InputError
        The sidecar belongs to another sample (ids or pixels differ), or is
        not a curation sidecar at all; the file is left unchanged.
    CorruptSidecarError
        The sidecar is damaged and *repair* is false.

    Attributes
    ----------
    records : list of Decision
        Every decision in the order made (the undo stack).
    backup_path : pathlib.Path or None
        Where the damaged file was copied when it was repaired.
    repair_problems : list of str
        What was wrong with it.
    """

    def __init__(self, path, sample, reviewer: str | None = None, repair: bool = False):
        self.path = Path(path).expanduser()
        self.sample = sample
        self.reviewer = reviewer or _default_reviewer()
        self.fingerprint = sample_fingerprint(sample)
        self._ids = {int(i) for i in sample.ids}
        self.records: list[Decision] = []
        self.backup_path: Path | None = None
        self.repair_problems: list[str] = []
        self._seen = None  # (inode, size, mtime) of the file as last read or written here
        if self.path.is_dir():
            raise InputError(self.path, "is a folder, expected a sidecar file path")
        if self.path.exists():
            self._open_existing(repair)
        else:
            if not self.path.parent.is_dir():
                raise InputError(self.path.parent, "folder of the curation sidecar does not exist")
            self._save(check=False)

    # -- opening ----------------------------------------------------------------------------
    def _open_existing(self, repair: bool) -> None:
        self._seen = self._stat()
        try:
            parsed = _parse(self.path)
        except OSError as exc:
            raise InputError(self.path, f"cannot read the curation sidecar: {exc}") from None
        if parsed.header is not None:
            self._check_header(parsed.header)
        elif not parsed.records:
            raise InputError(self.path, f"is not a curation sidecar (no {FORMAT_NAME} header, no decisions)",
                             "choose another sidecar file; this one is left untouched")
        unknown = sorted({r.id for r in parsed.records} - self._ids)
        if unknown:
            raise InputError(self.path, f"holds decisions about {len(unknown)} galaxy id(s) not in the sample "
                                        f"{self.sample.source!r} (first: {unknown[:5]})",
                             "it belongs to another sample; the file is left untouched")
        if parsed.problems:
            if not repair:
                raise CorruptSidecarError(self.path, "damaged curation sidecar: " + "; ".join(parsed.problems[:3])
                                          + (f" (+{len(parsed.problems) - 3} more)" if len(parsed.problems) > 3
                                             else ""), len(parsed.records), len(parsed.problems))
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            self.backup_path = self.path.with_name(f"{self.path.name}.damaged-{stamp}.bak")
            from napari_blendphot.atomic import atomic_output

            with atomic_output(self.backup_path, replace=False) as tmp:
                shutil.copy2(self.path, tmp)
            self.repair_problems = list(parsed.problems)
            self.records = list(parsed.records)
            self._save()
            return
        self.records = list(parsed.records)

    def _check_header(self, header: dict) -> None:
        version = header.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InputError(self.path, f"curation sidecar version {version!r} is newer than this reader "
                                        f"({FORMAT_VERSION})", "update napari-blendphot")
        theirs = header.get("sample") or {}
        ours = self.fingerprint
        if theirs.get("ids_sha256") != ours["ids_sha256"] or theirs.get("n_galaxies") != ours["n_galaxies"]:
            raise InputError(self.path, f"belongs to another sample ({theirs.get('n_galaxies')} galaxies from "
                                        f"{theirs.get('source')!r}; this sample has {ours['n_galaxies']} from "
                                        f"{ours['source']!r}, and the galaxy ids differ)",
                             "open the sample it was made for, or choose another sidecar; nothing was changed")
        if theirs.get("images_sha256") != ours["images_sha256"]:
            raise InputError(self.path, "was made for a sample with the same galaxy ids but different pixels",
                             "the sample file changed since the curation; nothing was changed")

    # -- state --------------------------------------------------------------------------------
    def _header(self) -> dict:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "sample": self.fingerprint}

    def _stat(self):
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def _check_unchanged(self) -> None:
        """Refuse to write over decisions another session saved since we read the file."""
        if self._stat() != self._seen:
            raise InputError(self.path, "was changed by another curation session (or by hand) since it was "
                                        "opened here; this change was not saved",
                             "reopen the sidecar to continue from both sessions' decisions")

    def _save(self, check: bool = True) -> None:
        if check:
            self._check_unchanged()
        lines = [json.dumps(self._header(), sort_keys=True, ensure_ascii=False)]
        lines.extend(record.to_json() for record in self.records)
        _write_atomically(self.path, "\n".join(lines) + "\n")
        self._seen = self._stat()

    @property
    def current(self) -> dict[int, Decision]:
        """``{galaxy id: its current (latest) decision}``."""
        return {record.id: record for record in self.records}

    def decision_of(self, galaxy_id) -> Decision | None:
        """The current decision about *galaxy_id*, or None."""
        galaxy_id = int(galaxy_id)
        for record in reversed(self.records):
            if record.id == galaxy_id:
                return record
        return None

    def counts(self) -> dict[str, int]:
        """Galaxies per current decision, plus ``undecided`` (never decided)."""
        current = self.current
        counts = {name: 0 for name in DECISIONS}
        for record in current.values():
            counts[record.decision] += 1
        counts["undecided"] = len(self._ids) - len(current)
        return counts

    def reviewers(self) -> list[str]:
        """Reviewers of the current decisions, sorted."""
        return sorted({r.reviewer for r in self.current.values() if r.reviewer})

    def resume_index(self) -> int:
        """Row of the first galaxy never decided (else the first skipped one, else 0)."""
        current = self.current
        ids = [int(i) for i in self.sample.ids]
        for row, galaxy_id in enumerate(ids):
            if galaxy_id not in current:
                return row
        for row, galaxy_id in enumerate(ids):
            if current[galaxy_id].decision == "skip":
                return row
        return 0

    def sha256(self) -> str:
        """SHA-256 of the sidecar file as it is on disk."""
        from napari_blendphot.provenance import sha256_file

        return sha256_file(self.path)

    # -- changes (each one saved before returning) -------------------------------------------------
    def decide(self, galaxy_id, decision: str, reason: str | None = None, note: str = "",
               galtype: str | None = None) -> Decision:
        """Record a decision about *galaxy_id* and save the sidecar; returns the record.

        A rejection needs a *reason* (one of :data:`REASONS` or free text).
        *galtype* is the corrected morphological type (None: unchanged).
        """
        galaxy_id = int(galaxy_id)
        if galaxy_id not in self._ids:
            raise InputError("decision", f"galaxy id {galaxy_id} is not in the sample {self.sample.source!r}")
        if decision not in DECISIONS:
            raise InputError("decision", f"unknown decision {decision!r}", f"use one of {', '.join(DECISIONS)}")
        if decision == "reject" and not (reason and str(reason).strip()):
            raise InputError("decision", "a rejection needs a reason", f"e.g. one of {list(REASONS)}")
        if galtype is not None and galtype not in GALTYPES:
            raise InputError("decision", f"unknown galtype {galtype!r}", f"use one of {', '.join(GALTYPES)}")
        record = Decision(galaxy_id, decision, str(reason).strip() if reason else None, str(note or ""),
                          galtype, _now(), self.reviewer)
        self.records.append(record)
        try:
            self._save()
        except BaseException:
            self.records.pop()
            raise
        return record

    def undo(self) -> Decision | None:
        """Remove the last decision (saved at once); returns it, or None if there was none."""
        if not self.records:
            return None
        record = self.records.pop()
        try:
            self._save()
        except BaseException:
            self.records.append(record)
            raise
        return record
