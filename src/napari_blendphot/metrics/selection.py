"""The galaxy selections of the paper's statistics (SPEC §7, paper Figure 5).

The paper compares every method on the galaxies its SExtractor baseline found:

- "central" statistics use the blends whose detection case is 0 (only the
  central found) or 2 (both found);
- "companion" statistics use the cases 1 (only the companion) or 2.

Case 3 (more than two sources) is left out of both.  The detection case is
read from a *reference detection column* of the results table:
``detection_sextractor`` (the paper's catalogue) or ``detection_sep`` (our SEP
baseline), whichever is present.  The ``"all"`` selection takes every blend.
"""

from __future__ import annotations

import numpy as np

from napari_blendphot.errors import InputError

__all__ = [
    "DETECTION_CASES",
    "GALAXIES",
    "GALAXY_PREFIX",
    "SELECTIONS",
    "available_selections",
    "detection_case_name",
    "detection_counts",
    "reference_detection_column",
    "select",
]

#: Galaxy roles and the column prefix of each in the results table.
GALAXIES = ("central", "companion")
GALAXY_PREFIX = {"central": "g1", "companion": "g2"}
#: ``"detected"``: the paper's Figure-5 selection; ``"all"``: every blend.
SELECTIONS = ("detected", "all")
#: Meaning of the detection flag.
DETECTION_CASES = {0: "only central", 1: "only companion", 2: "both", 3: "more than two"}
#: Our SEP baseline's flag for a blend where nothing could be assigned (not in the paper's catalogue).
DETECTION_NONE = -1
_CASE_NAMES = {DETECTION_NONE: "nothing assigned", **DETECTION_CASES}
#: Detection cases kept for each galaxy in the ``"detected"`` selection.
_KEPT_CASES = {"central": (0, 2), "companion": (1, 2)}
#: Reference detection columns, in order of preference.
_REFERENCE_COLUMNS = ("detection_sextractor", "detection_sep")


def reference_detection_column(table, preferred: str | None = None) -> str | None:
    """Name of the detection column that drives the ``"detected"`` selection, or None.

    *preferred* (a column name) wins when given; it must exist.  Otherwise the
    first of ``detection_sextractor``, ``detection_sep`` present, then any
    other ``detection_<method>`` column.
    """
    names = list(table.colnames)
    if preferred is not None:
        if preferred not in names:
            raise InputError("results table", f"no detection column {preferred!r}",
                             f"available: {[n for n in names if n.startswith('detection')] or 'none'}")
        return preferred
    for name in _REFERENCE_COLUMNS:
        if name in names:
            return name
    others = sorted(n for n in names if n.startswith("detection_"))
    return others[0] if others else None


def available_selections(table, detection_column: str | None = None) -> tuple[str, ...]:
    """Selections that can be computed on *table* (``"detected"`` needs a detection column)."""
    if reference_detection_column(table, detection_column) is None:
        return ("all",)
    return SELECTIONS


def select(table, galaxy: str, selection: str = "detected", detection_column: str | None = None) -> np.ndarray:
    """Boolean row mask of the blends whose *galaxy* enters the statistics.

    Parameters
    ----------
    table : astropy.table.Table
        A results table.
    galaxy : {"central", "companion"}
    selection : {"detected", "all"}
        ``"detected"`` is the paper's selection (detection in {0, 2} for the
        central galaxy, {1, 2} for the companion); ``"all"`` keeps every row.
    detection_column : str, optional
        Detection column to use instead of the default reference.
    """
    if galaxy not in GALAXIES:
        raise InputError("argument galaxy", f"unknown galaxy {galaxy!r}", f"use one of {GALAXIES}")
    if selection == "all":
        return np.ones(len(table), bool)
    if selection != "detected":
        raise InputError("argument selection", f"unknown selection {selection!r}", f"use one of {SELECTIONS}")
    column = reference_detection_column(table, detection_column)
    if column is None:
        raise InputError("results table", "the 'detected' selection needs a detection column "
                         "(detection_sextractor or detection_sep)", "use selection='all'")
    flags = _detection_flags(table, column)
    return np.isin(flags, _KEPT_CASES[galaxy])


def detection_counts(table, detection_column: str | None = None) -> dict[int, int]:
    """Number of blends in each detection case 0-3 (empty dict without a detection column).

    Case -1 (SEP: nothing assigned) is listed first when it occurs; other
    values are an error.
    """
    column = reference_detection_column(table, detection_column)
    if column is None:
        return {}
    flags = _detection_flags(table, column)
    unknown = sorted(set(np.unique(flags).tolist()) - set(_CASE_NAMES))
    if unknown:
        raise InputError("results table", f"column {column!r} has unknown detection case(s) {unknown}",
                         "cases are -1 (nothing assigned), 0, 1, 2, 3")
    cases = ([DETECTION_NONE] if np.any(flags == DETECTION_NONE) else []) + list(DETECTION_CASES)
    return {case: int(np.count_nonzero(flags == case)) for case in cases}


def detection_case_name(case: int) -> str:
    """Meaning of a detection flag value."""
    return _CASE_NAMES.get(int(case), f"unknown ({case})")


def _detection_flags(table, column: str) -> np.ndarray:
    values = table[column]
    if hasattr(values, "mask") and np.any(values.mask):
        raise InputError("results table", f"column {column!r} has {int(np.sum(values.mask))} empty value(s)")
    flags = np.asarray(values)
    if flags.dtype.kind not in "iuf" or (flags.dtype.kind == "f" and not np.all(np.isfinite(flags))):
        raise InputError("results table", f"column {column!r} must hold integer detection cases 0-3")
    return flags.astype(np.int64)
