"""The Blend Builder's model: a plain Python object, no Qt and no napari.

It holds one (cleaned) sample of isolated galaxies, the chosen central and
companion, the companion's shift ``(dy, dx)`` and magnitude change ``dmag``,
and rebuilds the blend with :func:`napari_blendphot.blend.assemble.make_blend`
on every change (about 0.04 ms).  Built blends can be collected into a set
and written as a blend dataset folder that
:class:`~napari_blendphot.blend.dataset.BlendDataset` reads.

Events (psygnal): ``sample_changed()``, ``pair_changed()`` (central or
companion changed), ``blend_changed(blend)`` after every rebuild,
``set_changed(count)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from psygnal import Signal

from napari_blendphot.constants import CENTER, GALTYPES, PIXEL_SCALE, STAMP_SIZE
from napari_blendphot.errors import InputError, OutputExistsError

#: Companion shifts are clamped so that its centre stays on the stamp.
SHIFT_MIN = -CENTER
SHIFT_MAX = STAMP_SIZE - 1 - CENTER
#: Range of the companion's magnitude change offered by the widget.
DMAG_RANGE = (-3.0, 3.0)
#: Pairs drawn per batch when looking for one that passes the filters.
_RANDOM_BATCH = 256
_RANDOM_BATCHES = 20


@dataclass
class GalaxyFilter:
    """Which galaxies may be picked: a morphological type (None = any) and a magnitude range."""

    galtype: str | None = None
    mag_min: float | None = None
    mag_max: float | None = None

    def mask(self, catalog) -> np.ndarray:
        keep = np.ones(len(catalog), bool)
        if self.galtype:
            keep &= np.char.strip(np.asarray(catalog["galtype"]).astype(str)) == self.galtype
        mag = np.asarray(catalog["mag"], np.float64)
        if self.mag_min is not None:
            keep &= mag >= self.mag_min
        if self.mag_max is not None:
            keep &= mag <= self.mag_max
        return keep


def is_cleaned(sample) -> bool:
    """Whether *sample* already went through neighbour cleaning (its provenance says so)."""
    return isinstance(sample.provenance, dict) and sample.provenance.get("step") == "clean-neighbours"


def clamp_shift(value) -> int:
    """Round *value* to a whole pixel and keep the companion's centre on the stamp."""
    if not np.isfinite(value):
        raise InputError("companion shift", f"must be finite, got {value}")
    return int(min(max(int(round(float(value))), SHIFT_MIN), SHIFT_MAX))


class BlendBuilderModel:
    """Interactive construction of one blend from a sample of isolated galaxies.

    Parameters
    ----------
    sample : GalaxySample, optional
        The galaxies; cleaned of neighbours unless already cleaned (see
        :meth:`set_sample`).
    clean_seed : int
        Seed of the neighbour cleaning.
    pair_seed : int
        Seed of the "random pair" draws; the n-th draw after a reset uses
        ``default_rng([pair_seed, n])``, so a session is reproducible.
    """

    sample_changed = Signal()
    pair_changed = Signal()
    blend_changed = Signal(object)
    set_changed = Signal(int)

    def __init__(self, sample=None, clean_seed: int = 0, pair_seed: int = 0, sample_name: str = "sample"):
        self.clean_seed = int(clean_seed)
        self.pair_seed = int(pair_seed)
        self.sample = None
        self.sample_name = sample_name
        self.central_filter = GalaxyFilter()
        self.companion_filter = GalaxyFilter()
        self.central_index = 0
        self.companion_index = 1
        self.dy = 0
        self.dx = 0
        self.dmag = 0.0
        self.blend = None
        self.interactive = False
        self.built: list = []
        self._draws = 0
        self._companions = None
        if sample is not None:
            self.set_sample(sample, sample_name)

    # -- sample ----------------------------------------------------------------------------
    def set_sample(self, sample, name: str | None = None, clean: bool = True) -> None:
        """Use *sample*; its neighbours are cleaned first (paper's protocol) unless *clean* is False
        or it is already cleaned.  Picks a first pair by the paper's rules."""
        if len(sample) < 2:
            raise InputError(name or sample.source, f"a blend needs 2 galaxies, the sample has {len(sample)}")
        if clean and not is_cleaned(sample):
            from napari_blendphot.clean.neighbours import clean_sample

            sample = clean_sample(sample, self.clean_seed)
        self.sample = sample
        self.sample_name = name or str(sample.source)
        self._companions = None
        self._draws = 0
        self.built = []
        self.sample_changed.emit()
        self.set_changed.emit(0)
        self.random_pair()

    def _require_sample(self):
        if self.sample is None:
            raise InputError("Blend Builder", "no sample loaded", "load the embedded sample or open a sample file")
        return self.sample

    @property
    def catalog(self):
        return self._require_sample().catalog

    def candidates(self, which: str) -> np.ndarray:
        """Row indices of the galaxies passing the central's or the companion's filter."""
        flt = self.central_filter if which == "central" else self.companion_filter
        return np.flatnonzero(flt.mask(self.catalog))

    def set_filter(self, which: str, galtype: str | None = None, mag_min=None, mag_max=None) -> None:
        if which not in ("central", "companion"):
            raise InputError("filter", f"unknown galaxy role {which!r}", "central or companion")
        if galtype is not None and galtype not in GALTYPES:
            raise InputError("filter", f"unknown galtype {galtype!r}", f"one of {', '.join(GALTYPES)}")
        setattr(self, f"{which}_filter", GalaxyFilter(galtype or None, mag_min, mag_max))

    # -- pair ------------------------------------------------------------------------------
    def galaxy_id(self, index: int) -> int:
        return int(self.catalog["id"][index])

    @property
    def central_id(self) -> int:
        return self.galaxy_id(self.central_index)

    @property
    def companion_id(self) -> int:
        return self.galaxy_id(self.companion_index)

    def set_pair(self, central: int, companion: int, dy=None, dx=None, dmag=None, interactive: bool = False) -> None:
        """Choose galaxies by row index (and optionally the shift and dmag), then rebuild."""
        sample = self._require_sample()
        for role, index in (("central", central), ("companion", companion)):
            if not 0 <= int(index) < len(sample):
                raise InputError(f"{role} galaxy", f"row {index} is outside the sample of {len(sample)}")
        if int(central) == int(companion):
            raise InputError("companion galaxy", f"galaxy {self.galaxy_id(int(central))} cannot be blended with itself",
                             "choose two different galaxies")
        changed = (int(central), int(companion)) != (self.central_index, self.companion_index)
        self.central_index, self.companion_index = int(central), int(companion)
        if dy is not None:
            self.dy = clamp_shift(dy)
        if dx is not None:
            self.dx = clamp_shift(dx)
        if dmag is not None:
            self.dmag = self._check_dmag(dmag)
        if changed:
            self.pair_changed.emit()
        self.rebuild(interactive)

    def set_central_id(self, galaxy_id) -> None:
        self.set_pair(self._require_sample().index_of(galaxy_id), self.companion_index)

    def set_companion_id(self, galaxy_id) -> None:
        self.set_pair(self.central_index, self._require_sample().index_of(galaxy_id))

    def set_shift(self, dy, dx, interactive: bool = False) -> None:
        """Move the companion to ``(dy, dx)`` (rounded to whole pixels, clamped to the stamp)."""
        self.dy, self.dx = clamp_shift(dy), clamp_shift(dx)
        self.rebuild(interactive)

    def set_companion_position(self, row, column, interactive: bool = False) -> None:
        """Move the companion's centre to pixel ``[row, column]`` (e.g. a dragged point)."""
        self.set_shift(float(row) - CENTER, float(column) - CENTER, interactive)

    @staticmethod
    def _check_dmag(dmag) -> float:
        dmag = float(dmag)
        if not np.isfinite(dmag):
            raise InputError("dmag", f"must be finite, got {dmag}")
        return dmag

    def set_dmag(self, dmag, interactive: bool = False) -> None:
        """Change the companion's magnitude by *dmag* (its flux scales by 10**(-0.4 dmag))."""
        self.dmag = self._check_dmag(dmag)
        self.rebuild(interactive)

    def random_pair(self) -> None:
        """A pair and shift by the paper's rules (|dmag| < 2, published shift rule) passing the filters.

        Pairs are drawn with :func:`~napari_blendphot.blend.pairing.draw_pairs`
        in batches; the first that passes both filters is kept.  ``dmag`` is
        reset to 0.
        """
        from napari_blendphot.blend.pairing import CompanionTable, draw_pairs

        catalog = self.catalog
        if self._companions is None:
            self._companions = CompanionTable(np.asarray(catalog["mag"], np.float64))
        central_ok = self.central_filter.mask(catalog)
        companion_ok = self.companion_filter.mask(catalog)
        if not central_ok.any() or not companion_ok.any():
            raise InputError("filters", "no galaxy passes the central or the companion filter",
                             "widen the type or magnitude filters")
        rng = np.random.default_rng([self.pair_seed, self._draws])
        self._draws += 1
        radii = np.asarray(catalog["radius"], np.float64)
        for _ in range(_RANDOM_BATCHES):
            pairs = draw_pairs(self._companions.mags, radii, _RANDOM_BATCH, rng, companions=self._companions)
            good = np.flatnonzero(central_ok[pairs.central] & companion_ok[pairs.companion])
            if good.size:
                i = good[0]
                self.set_pair(int(pairs.central[i]), int(pairs.companion[i]), int(pairs.dy[i]),
                              int(pairs.dx[i]), 0.0)
                return
        raise InputError("filters", "no pair by the paper's rules (|dmag| < 2) passes the filters",
                         "widen the type or magnitude filters")

    # -- the blend -------------------------------------------------------------------------
    def rebuild(self, interactive: bool = False):
        """Make the blend of the current choice and emit ``blend_changed``."""
        from napari_blendphot.blend.assemble import make_blend

        sample = self._require_sample()
        self.blend = make_blend(sample[self.central_index], sample[self.companion_index], self.dy, self.dx,
                                self.dmag)
        self.blend.row["g2_dmag"] = self.dmag
        self.interactive = interactive
        self.blend_changed.emit(self.blend)
        return self.blend

    @property
    def name(self) -> str:
        """Short name of the current blend, used in layer names: ``"blend <central>+<companion>"``."""
        return f"blend {self.central_id}+{self.companion_id}"

    def measurements(self) -> dict:
        """Distance (px, arcsec), pair dmag (companion - central, after dmag) and distance / R_central."""
        blend = self.blend
        if blend is None:
            return {}
        row = blend.row
        radius = float(row["g1_rad"])
        return {
            "distance_px": blend.distance,
            "distance_arcsec": blend.distance * PIXEL_SCALE,
            "pair_dmag": float(row["g2_mag"]) - float(row["g1_mag"]),
            "distance_over_radius": blend.distance / radius if radius > 0 else float("nan"),
            "central_mag": float(row["g1_mag"]),
            "companion_mag": float(row["g2_mag"]),
        }

    def describe_galaxy(self, index: int) -> str:
        row = self.catalog[index]
        return (f"id {int(row['id'])}  {str(row['galtype']).strip()}  mag {float(row['mag']):.2f}  "
                f"R {float(row['radius']):.1f} px  z {float(row['z']):.2f}")

    # -- sets ------------------------------------------------------------------------------
    def add_to_set(self) -> int:
        """Keep the current blend in the set to save; returns the set's size."""
        if self.blend is None:
            raise InputError("Blend Builder", "no blend built yet")
        self.built.append(self.blend)
        self.set_changed.emit(len(self.built))
        return len(self.built)

    def clear_set(self) -> None:
        self.built = []
        self.set_changed.emit(0)

    def save_current(self, path, overwrite: bool = False) -> Path:
        """Write the current blend alone as a blend dataset folder."""
        if self.blend is None:
            raise InputError("Blend Builder", "no blend built yet")
        return write_built_blends([self.blend], path, self._provenance(1), overwrite)

    def save_set(self, path, overwrite: bool = False) -> Path:
        """Write the collected blends as a blend dataset folder."""
        if not self.built:
            raise InputError("Blend Builder", "the set is empty", "build blends and press 'Add to set' first")
        return write_built_blends(self.built, path, self._provenance(len(self.built)), overwrite)

    def _provenance(self, count: int) -> dict:
        from napari_blendphot.provenance import make_provenance

        sample = self._require_sample()
        return make_provenance("blend-builder", None, inputs={"sample": self.sample_name},
                               n_blends=count, clean_seed=self.clean_seed, pair_seed=self.pair_seed,
                               sample_provenance=sample.provenance,
                               how="blends placed by hand in the napari Blend Builder")


def write_built_blends(blends, out_dir, provenance: dict | None = None, overwrite: bool = False,
                       split: str = "all") -> Path:
    """Write hand-built :class:`~napari_blendphot.blend.assemble.Blend` objects as a blend dataset folder.

    The catalogue has the standard columns plus ``g2_dmag`` (the magnitude
    change applied to the companion); the folder is written by
    :func:`napari_blendphot.blend.dataset.write_blend_set` (the layout of
    every blend dataset).  An existing non-empty folder is replaced only with
    ``overwrite=True``, and only when it is a blend dataset holding nothing
    else.
    """
    from astropy.table import Table

    from napari_blendphot.blend.assemble import CATALOG_COLUMNS, BlendBatch
    from napari_blendphot.blend.dataset import check_dataset_output, write_blend_set

    from napari_blendphot.provenance import make_provenance

    out_dir = Path(out_dir)
    blends = list(blends)
    if not blends:
        raise InputError(out_dir, "no blends to write")
    # The folder's mark of origin: what lets a later overwrite recognise it as a dataset.
    provenance = provenance or make_provenance("blend-builder", None, n_blends=len(blends))
    try:
        check_dataset_output(out_dir, overwrite, len(blends))
    except OutputExistsError:
        raise OutputExistsError(out_dir, "overwrite=True") from None
    from napari_blendphot.sample.galaxy_sample import MAX_PIXEL

    for number, blend in enumerate(blends):
        if not np.all(np.abs(blend.blend) <= MAX_PIXEL):
            raise InputError(f"blend {number}", f"holds pixel values beyond +-{MAX_PIXEL:g} (or not finite)",
                             "no flux can be measured on it in 32-bit floats")
    rows = []
    for number, blend in enumerate(blends):
        row = {"id": number, "split": split, **{k: blend.row[k] for k in CATALOG_COLUMNS if k in blend.row}}
        row["g2_dmag"] = float(blend.row.get("g2_dmag", 0.0))
        rows.append(row)
    columns = [*CATALOG_COLUMNS, "g2_dmag"]
    catalog = Table(rows=[[r[c] for c in columns] for r in rows], names=columns)
    for column in ("g1_type", "g2_type"):
        catalog[column] = np.asarray(catalog[column]).astype(str)
    catalog.meta["zero_point"] = 25.96
    batch = BlendBatch(np.stack([b.blend for b in blends]), np.stack([b.galaxy1 for b in blends]),
                       np.stack([b.galaxy2 for b in blends]), np.stack([b.masks for b in blends]), catalog)
    return write_blend_set(batch, out_dir, provenance, overwrite)
