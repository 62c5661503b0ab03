"""Assign a detector's sources to the central and the companion galaxy of a blend.

The rules follow Boucaud et al. 2020 (SPEC §5), with the truth known from the
blend catalogue: the central galaxy sits on the stamp centre ``(64, 64)``, the
companion at ``(64 + dy, 64 + dx)``.

* two sources: each goes to a distinct true galaxy, choosing the pairing with
  the smaller summed distance (the Hungarian solution of the 2x2 problem), so
  two sources never claim the same galaxy;
* one source: central if it lies within ``0.5 * R_central`` of the stamp
  centre, companion otherwise (without ``R_central``, the nearer true
  position decides);
* more than two: the two brightest are kept and paired as above;
* none: nothing is assigned.

Without the truth (``companion_shift`` unknown) a heuristic stands in: the
central galaxy is the source closest to the stamp centre, the companion the
brightest of the others.  The result says which of the two rules was used.

Coordinates are sep's: ``x`` is the column, ``y`` the row, pixel centres at
integers.  Everything here is plain numpy so it can be tested on synthetic
detection lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_blendphot.constants import CENTER

#: ``detection`` flag values (the paper's published column, plus -1).
DETECTION_NONE = -1
DETECTION_CENTRAL_ONLY = 0
DETECTION_COMPANION_ONLY = 1
DETECTION_BOTH = 2
DETECTION_MORE_THAN_TWO = 3

#: Fraction of the central galaxy's effective radius within which a single
#: source counts as the central galaxy (paper's rule).
SINGLE_SOURCE_RADIUS_FRACTION = 0.5


@dataclass(frozen=True)
class Assignment:
    """Which detected source is which galaxy, for one blend.

    Attributes
    ----------
    central, companion : int
        Index of the source in the detection list, or -1 when unassigned.
    detection : int
        The paper's flag: -1 none, 0 only central, 1 only companion,
        2 both, 3 more than two sources found (the two brightest assigned).
    used_truth : bool
        True when the true companion position decided; False for the heuristic.
    """

    central: int
    companion: int
    detection: int
    used_truth: bool


def _has_truth(companion_shift) -> bool:
    if companion_shift is None:
        return False
    shift = np.asarray(companion_shift, dtype=np.float64)
    return shift.shape == (2,) and bool(np.isfinite(shift).all())


def assign_detections(x, y, flux, companion_shift=None, central_radius=None,
                      center: tuple[float, float] = (CENTER, CENTER)) -> Assignment:
    """Assign the sources found in one blend to its central and companion galaxy.

    Parameters
    ----------
    x, y : array_like, shape (M,)
        Source centroids (column, row) in pixels.
    flux : array_like, shape (M,)
        Source fluxes; used to keep the two brightest when M > 2 and by the
        heuristic.
    companion_shift : array_like (2,), optional
        True ``[dy, dx]`` of the companion relative to the centre.  None (or
        non-finite) selects the heuristic.
    central_radius : float, optional
        Effective radius of the central galaxy in pixels, for the one-source rule.
    center : (row, column)
        Position of the central galaxy, the stamp centre by default.

    Returns
    -------
    Assignment
    """
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    flux = np.atleast_1d(np.asarray(flux, dtype=np.float64))
    if not (x.shape == y.shape == flux.shape) or x.ndim != 1:
        raise ValueError(f"x, y and flux must be 1-D of one length, got {x.shape}, {y.shape}, {flux.shape}")
    n_found = len(x)
    truth = _has_truth(companion_shift)
    if n_found == 0:
        return Assignment(-1, -1, DETECTION_NONE, truth)
    if not truth:
        return _assign_heuristic(x, y, flux, center)

    cy, cx = float(center[0]), float(center[1])
    dy, dx = (float(v) for v in np.asarray(companion_shift, dtype=np.float64))
    true_y = np.array([cy, cy + dy])
    true_x = np.array([cx, cx + dx])

    if n_found == 1:
        distance_to_centre = np.hypot(x[0] - cx, y[0] - cy)
        radius = np.nan if central_radius is None else float(central_radius)
        if np.isfinite(radius) and radius > 0:
            is_central = distance_to_centre <= SINGLE_SOURCE_RADIUS_FRACTION * radius
        else:
            # No radius: the nearer true position decides (ties go to the central).
            is_central = distance_to_centre <= np.hypot(x[0] - true_x[1], y[0] - true_y[1])
        if is_central:
            return Assignment(0, -1, DETECTION_CENTRAL_ONLY, True)
        return Assignment(-1, 0, DETECTION_COMPANION_ONLY, True)

    if n_found == 2:
        kept = np.array([0, 1])
        flag = DETECTION_BOTH
    else:
        # Two brightest; a stable sort keeps ties in detection order (reproducible).
        kept = np.argsort(-flux, kind="stable")[:2]
        flag = DETECTION_MORE_THAN_TWO
    # distance[i, j]: kept source i to true galaxy j (0 central, 1 companion).
    distance = np.hypot(x[kept, None] - true_x[None, :], y[kept, None] - true_y[None, :])
    if distance[0, 0] + distance[1, 1] <= distance[0, 1] + distance[1, 0]:
        central, companion = kept[0], kept[1]
    else:
        central, companion = kept[1], kept[0]
    return Assignment(int(central), int(companion), flag, True)


def _assign_heuristic(x, y, flux, center) -> Assignment:
    """Central = closest to the centre; companion = brightest of the others."""
    n_found = len(x)
    distance = np.hypot(x - float(center[1]), y - float(center[0]))
    central = int(np.argmin(distance))
    if n_found == 1:
        return Assignment(central, -1, DETECTION_CENTRAL_ONLY, False)
    others = np.delete(np.arange(n_found), central)
    companion = int(others[np.argmax(flux[others])])
    flag = DETECTION_BOTH if n_found == 2 else DETECTION_MORE_THAN_TWO
    return Assignment(central, companion, flag, False)
