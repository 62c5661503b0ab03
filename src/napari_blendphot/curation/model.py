"""The curation session as a plain model (no Qt): the widget is a thin view over it.

:class:`CurationModel` walks a :class:`~napari_blendphot.sample.galaxy_sample.GalaxySample`
with a :class:`~napari_blendphot.curation.sidecar.DecisionStore`, keeps the
current galaxy, the filters and the progress, and emits psygnal events the
view listens to.  Every decision goes through the store, which saves it before
the call returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from psygnal import Signal

from napari_blendphot.constants import GALTYPES
from napari_blendphot.curation.sidecar import REASONS, Decision, DecisionStore
from napari_blendphot.errors import InputError

__all__ = ["CurationFilter", "CurationModel", "REASONS"]


@dataclass(frozen=True)
class CurationFilter:
    """Which galaxies the reviewer walks through (all conditions combined with AND).

    status : ``"all"``, ``"undecided"`` (not accepted or rejected: never seen or
        skipped), ``"accepted"``, ``"rejected"`` or ``"skipped"``.
    galtypes : morphological types kept (the galaxy's type after any correction);
        None keeps all.
    mag_min, mag_max : F160W magnitude range (None = open).
    """

    status: str = "all"
    galtypes: tuple | None = None
    mag_min: float | None = None
    mag_max: float | None = None


_STATUSES = ("all", "undecided", "accepted", "rejected", "skipped")


class CurationModel:
    """Current galaxy, filters, progress and decisions of one curation session.

    Parameters
    ----------
    sample : GalaxySample
    store : DecisionStore
        Where decisions are saved (its sample must be *sample*).
    clean_seed : int
        Seed of the neighbour cleaning shown next to each stamp
        (:func:`napari_blendphot.clean.neighbours.galaxy_rng`), so the same
        galaxy always shows the same cleaned stamp.

    Events
    ------
    current_changed(int) : the current row (index in the sample) changed.
    decisions_changed() : a decision was made or undone (progress changed).
    filter_changed() : the filter changed.
    pending_changed() : the type/note waiting for the next decision changed.

    Type changes and notes made before the galaxy is decided wait in
    :attr:`pending_galtype` / :attr:`pending_note` and are saved with the
    decision; on a galaxy already decided they are saved at once (the decision
    is recorded again with the new type or note).
    """

    current_changed = Signal(int)
    decisions_changed = Signal()
    filter_changed = Signal()
    pending_changed = Signal()

    def __init__(self, sample, store: DecisionStore, clean_seed: int = 0, start: int | None = None):
        if store.sample is not sample and not np.array_equal(np.asarray(store.sample.ids), np.asarray(sample.ids)):
            raise InputError("curation", "the decision store was opened for another sample")
        self.sample = sample
        self.store = store
        self.clean_seed = int(clean_seed)
        self._filter = CurationFilter()
        self._types = np.asarray(sample.catalog["galtype"]).astype(str)
        self._mags = np.asarray(sample.catalog["mag"], dtype=np.float64)
        self._ids = np.asarray(sample.ids, dtype=np.int64)
        self.pending_galtype: str | None = None
        self.pending_note: str = ""
        self._index = int(store.resume_index() if start is None else start)
        self._check_index(self._index)

    # -- basic state ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sample)

    @property
    def index(self) -> int:
        """Row of the current galaxy in the sample."""
        return self._index

    @index.setter
    def index(self, row: int) -> None:
        self.go_to(row)

    def _check_index(self, row) -> None:
        if not 0 <= int(row) < len(self.sample):
            raise InputError("curation", f"galaxy row {row} out of range 0..{len(self.sample) - 1}")

    def go_to(self, row: int) -> None:
        """Make row *row* the current galaxy (pending type/note are dropped)."""
        row = int(row)
        self._check_index(row)
        if row != self._index:
            self._index = row
            self._clear_pending()
            self.current_changed.emit(row)

    def go_to_id(self, galaxy_id) -> None:
        self.go_to(self.sample.index_of(galaxy_id))

    @property
    def galaxy(self):
        """The current :class:`~napari_blendphot.sample.galaxy_sample.Galaxy`."""
        return self.sample[self._index]

    @property
    def galaxy_id(self) -> int:
        return int(self._ids[self._index])

    @property
    def decision(self) -> Decision | None:
        """Current decision about the current galaxy."""
        return self.store.decision_of(self.galaxy_id)

    def galtype_of(self, row: int) -> str:
        """Type of the galaxy at *row*, after any saved correction."""
        record = self.store.decision_of(int(self._ids[row]))
        if record is not None and record.galtype is not None:
            return record.galtype
        return str(self._types[row])

    @property
    def galtype(self) -> str:
        """Type shown for the current galaxy: pending change, else saved correction, else catalogue."""
        return self.pending_galtype or self.galtype_of(self._index)

    def cleaned_stamp(self, row: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(cleaned image, central mask) of *row* (default: current), with the session's fixed seed."""
        from napari_blendphot.clean.neighbours import clean_stamp, galaxy_rng

        row = self._index if row is None else int(row)
        galaxy = self.sample[row]
        return clean_stamp(galaxy.image, galaxy.segmap, galaxy_rng(self.clean_seed, galaxy.id))

    # -- filters -------------------------------------------------------------------------------
    @property
    def filter(self) -> CurationFilter:
        return self._filter

    def set_filter(self, status: str = "all", galtypes=None, mag_min=None, mag_max=None) -> None:
        """Change the filter; the current galaxy stays (it may lie outside the filter)."""
        if status not in _STATUSES:
            raise InputError("curation filter", f"unknown status {status!r}", f"use one of {', '.join(_STATUSES)}")
        if galtypes is not None:
            galtypes = (galtypes,) if isinstance(galtypes, str) else tuple(galtypes)
            unknown = sorted(set(galtypes) - set(GALTYPES))
            if unknown:
                raise InputError("curation filter", f"unknown galtype(s) {unknown}", f"use {', '.join(GALTYPES)}")
        for name, value in (("mag_min", mag_min), ("mag_max", mag_max)):
            if value is not None and not np.isfinite(value):
                raise InputError("curation filter", f"{name} must be a finite number, got {value!r}")
        self._filter = CurationFilter(status, galtypes, mag_min, mag_max)
        self.filter_changed.emit()

    def _status_mask(self) -> np.ndarray:
        status = self._filter.status
        if status == "all":
            return np.ones(len(self.sample), bool)
        current = self.store.current
        decisions = np.array([current[i].decision if i in current else "" for i in self._ids.tolist()])
        if status == "undecided":
            return ~np.isin(decisions, ("accept", "reject"))
        return decisions == {"accepted": "accept", "rejected": "reject", "skipped": "skip"}[status]

    def filtered_mask(self) -> np.ndarray:
        """Boolean mask of the sample rows in the filter."""
        keep = self._status_mask()
        f = self._filter
        if f.galtypes is not None:
            types = np.array([self.galtype_of(r) for r in range(len(self.sample))])
            keep &= np.isin(types, f.galtypes)
        if f.mag_min is not None:
            keep &= self._mags >= f.mag_min
        if f.mag_max is not None:
            keep &= self._mags <= f.mag_max
        return keep

    def filtered_rows(self) -> np.ndarray:
        """Rows in the filter, in sample order."""
        return np.flatnonzero(self.filtered_mask())

    def in_filter(self, row: int | None = None) -> bool:
        return bool(self.filtered_mask()[self._index if row is None else row])

    def next(self) -> bool:
        """Go to the next galaxy in the filter after the current one; False if there is none."""
        rows = self.filtered_rows()
        after = rows[rows > self._index]
        if after.size == 0:
            return False
        self.go_to(int(after[0]))
        return True

    def previous(self) -> bool:
        """Go to the previous galaxy in the filter; False if there is none."""
        rows = self.filtered_rows()
        before = rows[rows < self._index]
        if before.size == 0:
            return False
        self.go_to(int(before[-1]))
        return True

    def first(self) -> bool:
        """Go to the first galaxy in the filter; False if the filter is empty."""
        rows = self.filtered_rows()
        if rows.size == 0:
            return False
        self.go_to(int(rows[0]))
        return True

    # -- progress ------------------------------------------------------------------------------
    def progress(self) -> dict:
        """``reviewed`` (accepted + rejected), ``total``, ``in_filter`` and the counts per decision."""
        counts = self.store.counts()
        return {"reviewed": counts["accept"] + counts["reject"], "total": len(self.sample),
                "in_filter": int(self.filtered_mask().sum()), **counts}

    # -- decisions -----------------------------------------------------------------------------
    def _decide(self, decision: str, reason: str | None = None, advance: bool = True) -> Decision:
        previous = self.decision
        galtype = self.pending_galtype
        if galtype is None and previous is not None:
            galtype = previous.galtype  # re-deciding keeps an earlier type correction
        if galtype == str(self._types[self._index]):
            galtype = None
        note = self.pending_note or (previous.note if previous is not None else "")
        record = self.store.decide(self.galaxy_id, decision, reason=reason, note=note, galtype=galtype)
        self._clear_pending()
        self.decisions_changed.emit()
        if advance:
            self.next()
        return record

    def accept(self, advance: bool = True) -> Decision:
        """Accept the current galaxy (saved), then move to the next one in the filter."""
        return self._decide("accept", advance=advance)

    def reject(self, reason, advance: bool = True) -> Decision:
        """Reject the current galaxy; *reason* is 1-4 (:data:`REASONS`) or free text."""
        if isinstance(reason, (int, np.integer)) and not isinstance(reason, bool):
            if not 1 <= reason <= len(REASONS):
                raise InputError("reject", f"reason number {reason} out of range 1..{len(REASONS)}")
            reason = REASONS[reason - 1]
        return self._decide("reject", reason=reason, advance=advance)

    def skip(self, advance: bool = True) -> Decision:
        """Record that the galaxy was seen but left for later."""
        return self._decide("skip", advance=advance)

    def undo(self) -> Decision | None:
        """Undo the last decision (saved) and go back to that galaxy; returns the undone record."""
        record = self.store.undo()
        if record is None:
            return None
        self._clear_pending()
        self.decisions_changed.emit()
        self.go_to_id(record.id)
        return record

    def set_type(self, galtype: str | None) -> None:
        """Correct the morphological type of the current galaxy (None: back to the catalogue's)."""
        if galtype is not None and galtype not in GALTYPES:
            raise InputError("set_type", f"unknown galtype {galtype!r}", f"use one of {', '.join(GALTYPES)}")
        original = str(self._types[self._index])
        previous = self.decision
        if previous is None:
            self.pending_galtype = None if galtype in (None, original) else galtype
            self.pending_changed.emit()
            return
        new = None if galtype in (None, original) else galtype
        if new != previous.galtype:
            self.store.decide(previous.id, previous.decision, previous.reason, previous.note, new)
            self.decisions_changed.emit()

    def cycle_type(self) -> str:
        """Set the type to the next one of sph, disk, sphd, irr; returns it."""
        following = GALTYPES[(GALTYPES.index(self.galtype) + 1) % len(GALTYPES)]
        self.set_type(following)
        return following

    def set_note(self, note: str) -> None:
        """Attach a note to the current galaxy (saved at once if it is decided)."""
        note = str(note or "")
        previous = self.decision
        if previous is None:
            self.pending_note = note
            self.pending_changed.emit()
            return
        if note != previous.note:
            self.store.decide(previous.id, previous.decision, previous.reason, note, previous.galtype)
            self.decisions_changed.emit()

    @property
    def note(self) -> str:
        previous = self.decision
        return self.pending_note or (previous.note if previous is not None else "")

    def _clear_pending(self) -> None:
        if self.pending_galtype is not None or self.pending_note:
            self.pending_galtype = None
            self.pending_note = ""
            self.pending_changed.emit()
