"""Drawing pairs of galaxies and the companion's shift (SPEC §4.2 and §4.4).

Numpy only (no astropy): this module also runs in the training stream on
machines that have nothing but numpy.

Pairs
-----
The central galaxy is a uniform random draw.  The companion is "redrawn until
``|mag_central - mag_companion| < max_dmag`` (2) and it is not the central",
which is the same as a uniform draw among the central's eligible partners;
that is how it is implemented, in one vectorised step (galaxies sorted by
magnitude, partners form a contiguous run).  A galaxy with no eligible
partner at all is never drawn as a central (the paper's loop would never end
on it).

Shift rules
-----------
``"published"`` (default), the rule of the code that made the published data:

* ``min_sep = max(R_c, R_k)``, ``max_sep = min(4 * min(R_c, R_k), 64)`` with
  ``R`` the effective radii in pixels; if ``min_sep >= max_sep`` then
  ``min_sep = 0.8 * max_sep``;
* draw integer ``(dy, dx)`` uniformly in ``[-floor(max_sep), floor(max_sep)]``
  (both ends included) until ``min_sep <= hypot(dy, dx) <= max_sep``;
* after ``shift_tries`` (25) failed tries the whole pair is dropped and a new
  pair (central, companion, shift) is drawn in its place.

``"paper-text"``, the rule the paper's text states ("0.5 R to half the image
size"), implemented as: ``min_sep = 0.5 * max(R_c, R_k)``, ``max_sep = 64``
(half of the 128-pixel stamp), ``min_sep = 0.8 * max_sep`` if the galaxies are
so large that ``min_sep >= max_sep``; same integer draw, same 25 tries.  The
text does not say whose radius; the larger of the two is used, like the
published rule's minimum.

``dy`` is the shift along rows (axis -2, positive = down in array order),
``dx`` along columns (axis -1): the companion's centre lands on pixel
``[64 + dy, 64 + dx]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.errors import InputError

#: Shift rules understood by :func:`separation_bounds`.
RULES = ("published", "paper-text")
#: Largest |mag_central - mag_companion| of a pair (strict inequality).
MAX_DMAG = 2.0
#: Tries at a shift before the pair is dropped and a new one drawn.
SHIFT_TRIES = 25
#: Upper limit of the published rule's maximum separation, in pixels.
PUBLISHED_MAX_SEPARATION = 64.0


@dataclass(frozen=True)
class Pairs:
    """Drawn pairs: row indices into the sample and the companion's shift.

    Attributes
    ----------
    central, companion : (N,) int64
        Row indices of the central and companion galaxies.
    dy, dx : (N,) int64
        Companion shift in pixels along rows and columns.
    """

    central: np.ndarray
    companion: np.ndarray
    dy: np.ndarray
    dx: np.ndarray

    def __len__(self) -> int:
        return len(self.central)

    @property
    def distance(self) -> np.ndarray:
        """Centre-to-centre separation in pixels, ``hypot(dy, dx)``."""
        return np.hypot(self.dy, self.dx)

    def take(self, index) -> "Pairs":
        return Pairs(self.central[index], self.companion[index], self.dy[index], self.dx[index])

    def remap(self, rows: np.ndarray) -> "Pairs":
        """The same pairs with indices mapped through *rows* (sub-sample -> parent sample)."""
        rows = np.asarray(rows)
        return Pairs(rows[self.central], rows[self.companion], self.dy, self.dx)


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise InputError("rule", f"unknown shift rule {rule!r}", f"choose one of {', '.join(RULES)}")
    return rule


def separation_bounds(radius_central, radius_companion, rule: str = "published",
                      stamp_size: int = STAMP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Minimum and maximum centre separation (pixels) of each pair under *rule*."""
    check_rule(rule)
    rc = np.asarray(radius_central, dtype=np.float64)
    rk = np.asarray(radius_companion, dtype=np.float64)
    if rule == "published":
        low = np.maximum(rc, rk)
        high = np.minimum(4.0 * np.minimum(rc, rk), PUBLISHED_MAX_SEPARATION)
    else:
        low = 0.5 * np.maximum(rc, rk)
        high = np.full(np.broadcast(rc, rk).shape, stamp_size / 2.0)
    low = np.where(low >= high, 0.8 * high, low)
    return low, high


def draw_shifts(low, high, rng: np.random.Generator, tries: int = SHIFT_TRIES):
    """Draw integer shifts with ``low <= hypot(dy, dx) <= high`` by rejection.

    All tries of all pairs are drawn in one call (shape ``(N, tries, 2)``) and
    the first valid try of each pair is kept, which is what a loop of
    ``tries`` attempts per pair would return.

    Returns
    -------
    dy, dx : (N,) int64
        The shifts (0 where no try succeeded).
    found : (N,) bool
        Whether a valid shift was found within *tries*.
    """
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    half_width = np.floor(high).astype(np.int64)[:, None, None]
    draws = rng.integers(-half_width, half_width, size=(len(high), tries, 2), endpoint=True)
    separation = np.hypot(draws[..., 0], draws[..., 1])
    valid = (separation >= low[:, None]) & (separation <= high[:, None])
    found = valid.any(axis=1)
    first = np.argmax(valid, axis=1)
    chosen = draws[np.arange(len(high)), first]
    chosen[~found] = 0
    return chosen[:, 0].copy(), chosen[:, 1].copy(), found


class CompanionTable:
    """For each galaxy, the run of eligible companions in magnitude order.

    Eligible: ``|mag_i - mag_j| < max_dmag`` and ``j != i``.  Built once per
    sample (a sort and two searches), then any number of companions is drawn
    in one vectorised call.
    """

    def __init__(self, mags, max_dmag: float = MAX_DMAG):
        mags = np.asarray(mags, dtype=np.float64)
        if mags.ndim != 1 or len(mags) < 2:
            raise InputError("sample", f"need at least 2 galaxies to make pairs, got {mags.size}")
        if not np.all(np.isfinite(mags)):
            raise InputError("sample", "magnitudes contain NaN or infinite values")
        self.mags = mags
        self.max_dmag = float(max_dmag)
        self.order = np.argsort(mags, kind="stable")
        self.sorted_mags = mags[self.order]
        self.rank = np.empty_like(self.order)
        self.rank[self.order] = np.arange(len(mags))
        n = len(mags)
        lo = np.searchsorted(self.sorted_mags, mags - max_dmag, side="right")
        hi = np.searchsorted(self.sorted_mags, mags + max_dmag, side="left")
        # Settle the run ends with the exact test used to define eligibility,
        # |m_i - m_j| < max_dmag, so that rounding in m +- max_dmag cannot
        # include or exclude a boundary galaxy (the run is contiguous because
        # the rounded difference is monotonic in m_j).
        for _ in range(4):
            grow = (lo > 0) & (np.abs(mags - self.sorted_mags[np.maximum(lo - 1, 0)]) < max_dmag)
            shrink = (lo < n) & ~(np.abs(mags - self.sorted_mags[np.minimum(lo, n - 1)]) < max_dmag)
            lo = lo - grow + shrink
            grow = (hi < n) & (np.abs(mags - self.sorted_mags[np.minimum(hi, n - 1)]) < max_dmag)
            shrink = (hi > 0) & ~(np.abs(mags - self.sorted_mags[np.maximum(hi - 1, 0)]) < max_dmag)
            hi = hi + grow - shrink
        self.first = lo
        # The run always contains the galaxy itself (|0| < max_dmag): exclude it.
        self.count = hi - lo - 1
        self.eligible_centrals = np.flatnonzero(self.count > 0)
        if self.eligible_centrals.size == 0:
            raise InputError("sample", f"no two galaxies are within {max_dmag} mag of each other: "
                                       "no pair can be drawn")

    def draw(self, central: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniformly drawn eligible companion (row index) per central."""
        central = np.asarray(central)
        offset = rng.integers(0, self.count[central])
        position = self.first[central] + offset
        position += position >= self.rank[central]  # skip the central itself
        return self.order[position]


def draw_pairs(mags, radii, n: int, seed, rule: str = "published", max_dmag: float = MAX_DMAG,
               shift_tries: int = SHIFT_TRIES, max_rounds: int = 200,
               companions: CompanionTable | None = None, central_weights=None) -> Pairs:
    """Draw *n* blend pairs and shifts from galaxies with magnitudes *mags* and radii *radii*.

    Parameters
    ----------
    mags, radii : (N,) arrays
        Magnitudes and effective radii (pixels) of the galaxies.
    n : int
        Number of pairs.
    seed : int or numpy.random.Generator
        Source of randomness; the same seed gives the same pairs.
    rule : {"published", "paper-text"}
        Shift rule (module docstring).
    max_dmag : float
        Pairs satisfy ``|mag_c - mag_k| < max_dmag``.
    shift_tries : int
        Tries at a shift before the pair is replaced by a new one.
    max_rounds : int
        Safety limit on rounds of replacing pairs whose shifts all failed.
    companions : CompanionTable, optional
        Pre-built table for *mags* (saves a sort when drawing repeatedly).
    central_weights : (N,) array, optional
        Draw each central with probability proportional to its weight
        (among the galaxies that have an eligible companion) instead of
        uniformly; training uses it to see more of the rare large galaxies.
        Without it the draws, and so the bytes, are those of earlier versions.

    Returns
    -------
    Pairs
    """
    from napari_blendphot.blend.split import as_generator

    check_rule(rule)
    rng = as_generator(seed)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError("n", f"number of blends must be a non-negative integer, got {n!r}")
    radii = np.asarray(radii, dtype=np.float64)
    table = companions if companions is not None else CompanionTable(mags, max_dmag)
    if radii.shape != table.mags.shape:
        raise InputError("radii", f"{radii.shape[0] if radii.ndim else 0} radii for {len(table.mags)} magnitudes")
    if not np.all(np.isfinite(radii)) or np.any(radii <= 0):
        raise InputError("radii", "radii must be finite and positive")

    probabilities = None
    if central_weights is not None:
        weights = np.asarray(central_weights, dtype=np.float64)
        if weights.shape != table.mags.shape or not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise InputError("central_weights", f"need {len(table.mags)} finite non-negative weights, "
                                                f"got shape {weights.shape}")
        weights = weights[table.eligible_centrals]
        if weights.sum() <= 0:
            raise InputError("central_weights", "every galaxy that has a companion has weight 0")
        probabilities = weights / weights.sum()
    central = np.zeros(n, np.int64)
    companion = np.zeros(n, np.int64)
    dy = np.zeros(n, np.int64)
    dx = np.zeros(n, np.int64)
    pending = np.arange(n)
    for _ in range(max_rounds):
        if pending.size == 0:
            break
        if probabilities is None:
            c = table.eligible_centrals[rng.integers(0, table.eligible_centrals.size, size=pending.size)]
        else:
            c = table.eligible_centrals[rng.choice(table.eligible_centrals.size, size=pending.size, p=probabilities)]
        k = table.draw(c, rng)
        low, high = separation_bounds(radii[c], radii[k], rule)
        sy, sx, found = draw_shifts(low, high, rng, shift_tries)
        done = pending[found]
        central[done], companion[done], dy[done], dx[done] = c[found], k[found], sy[found], sx[found]
        pending = pending[~found]
    if pending.size:
        raise InputError("sample", f"{pending.size} pair(s) found no valid shift after {max_rounds} rounds "
                                   f"of {shift_tries} tries", "check the radii of the sample")
    return Pairs(central, companion, dy, dx)
