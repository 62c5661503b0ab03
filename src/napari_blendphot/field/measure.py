"""Field mode: detect (or take) sources, group blends, cut stamps, run the methods, build the catalogue.

The pipeline, per region (the whole image, or tiles with margins for large
images, read one at a time so memory stays bounded):

1. :func:`prepare_region`: read the pixels, subtract the background and
   detect with SEP (:mod:`napari_blendphot.field.detect`); the sources are
   SEP's detections or the positions of a user catalogue
   (:mod:`napari_blendphot.field.catalog_input`, matched to the segment under
   each position); group blends;
2. :func:`measure_sources`: one training-domain stamp per source, the source
   on pixel [64, 64] (:mod:`napari_blendphot.field.stamps`), its companion
   (the nearest other member of its group) given to the methods as the
   :class:`~napari_blendphot.deblend.base.BlendContext`; every method runs
   through :class:`~napari_blendphot.field.run.MethodRunner`; each source's
   flux is the method's *central* flux on its own stamp (the companion's
   flux there is kept as ``companion_flux_<m>``, a cross-check of the
   companion's own row);
3. fluxes go back to the image's units (divided by the calibration's flux
   scale) and magnitudes use the image's zero point;
4. :func:`measure_field` joins the regions into one astropy Table with
   global source and group ids, flags and provenance.

``flux_total`` is the field stage's own photometry for isolated sources (no
companion): the sum of the background-subtracted, neighbour-cleaned stamp
within a circle of radius ``TOTAL_APERTURE_FACTOR`` x the half-light radius
(at least ``TOTAL_APERTURE_MIN`` and at most 64 training pixels).  The
networks were trained on pairs and are biased on lone galaxies; the
isolated-galaxy photometry is what ``flux_total`` is for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from napari_blendphot.constants import CENTER, STAMP_SIZE, ZERO_POINT
from napari_blendphot.field import flags as F
from napari_blendphot.field.calibration import TRAINING_NOISE_RMS
from napari_blendphot.field.detect import MAX_PAIR_SEPARATION, DetectionSettings, detect_region, group_sources

#: Default methods of field mode.
#: Images larger than this (pixels per side) are measured in tiles of this size (plus margins).
DEFAULT_TILE_SIZE = 2048
#: ``flux_total`` aperture radius: this many half-light radii, clipped to [TOTAL_APERTURE_MIN, 64] training pixels.
TOTAL_APERTURE_FACTOR = 10.0
TOTAL_APERTURE_MIN = 20.0
#: Stamps per request to the methods (bounds memory; a cancel is seen between requests).
BATCH = 512
FORMAT_NAME = "blendphot-field-catalog"


@dataclass
class FieldRegion:
    """Detection and sources of one region of an image (positions in image coordinates, 0-based)."""

    origin: tuple
    core: tuple
    detection: object
    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    segment: np.ndarray
    group: np.ndarray
    catalog_index: np.ndarray
    flags: np.ndarray
    measurable: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def in_core(self) -> np.ndarray:
        y0, y1, x0, x1 = self.core
        ry, rx = np.floor(self.y + 0.5), np.floor(self.x + 0.5)
        return (ry >= y0) & (ry < y1) & (rx >= x0) & (rx < x1)

    def members(self, index: int) -> np.ndarray:
        return np.flatnonzero(self.group == self.group[index])

    def companion(self, index: int) -> int:
        """The nearest other member of *index*'s group, or -1."""
        others = self.members(index)
        others = others[others != index]
        if not len(others):
            return -1
        distance = np.hypot(self.x[others] - self.x[index], self.y[others] - self.y[index])
        return int(others[np.argmin(distance)])


def _image_flags(image) -> int:
    value = 0
    calibration = image.calibration
    if calibration.zero_point_assumed:
        value |= F.ZERO_POINT_ASSUMED
    if calibration.pixel_scale_assumed:
        value |= F.PIXEL_SCALE_ASSUMED
    if calibration.needs_resampling:
        value |= F.RESAMPLED
    return value


def prepare_region(image, bounds=None, core=None, settings: DetectionSettings = DetectionSettings(),
                   positions=None) -> FieldRegion:
    """Read, detect and group one region of *image*.

    Parameters
    ----------
    image : FieldImage
    bounds : (y0, y1, x0, x1), optional
        Pixels read (default the whole image); may reach beyond the image (NaN there).
    core : (y0, y1, x0, x1), optional
        Sources whose centre falls here are this region's to measure (default *bounds*).
    positions : Positions, optional
        A user catalogue; None = SEP's detections.
    """
    ny, nx = image.shape
    bounds = (0, ny, 0, nx) if bounds is None else tuple(int(v) for v in bounds)
    core = bounds if core is None else tuple(int(v) for v in core)
    data = image.read_region(*bounds)
    detection = detect_region(data, settings, source=image.name)
    oy, ox = bounds[0], bounds[2]
    found = detection.sources
    zoom = image.calibration.zoom_yx
    if positions is None:
        x, y = found["x"] + ox, found["y"] + oy
        radius, segment = found["radius"], found["segment"]
        catalog_index = np.full(len(x), -1, np.int64)
        row_flags = np.zeros(len(x), np.int64)
        measurable = np.ones(len(x), bool)
    else:
        y0, y1, x0, x1 = bounds
        inside = positions.on_image & (positions.y >= y0 - 0.5) & (positions.y < y1 - 0.5) \
            & (positions.x >= x0 - 0.5) & (positions.x < x1 - 0.5)
        catalog_index = np.flatnonzero(inside)
        x, y = positions.x[catalog_index], positions.y[catalog_index]
        ry = np.clip(np.floor(y - oy + 0.5).astype(np.int64), 0, data.shape[0] - 1)
        rx = np.clip(np.floor(x - ox + 0.5).astype(np.int64), 0, data.shape[1] - 1)
        segment = detection.segmap[ry, rx].astype(np.int64)
        radius = np.where(segment > 0, found["radius"][np.maximum(segment - 1, 0)] if len(found["radius"])
                          else np.nan, np.nan)
        row_flags = np.where(segment > 0, 0, F.NO_SEGMENT).astype(np.int64)
        no_data = detection.nodata[ry, rx]
        row_flags[no_data] |= F.OFF_IMAGE
        measurable = ~no_data
    max_separation = MAX_PAIR_SEPARATION / min(zoom)
    group, _ = group_sources(x, y, radius, segment, detection.segmap, max_separation)
    if positions is None:
        x, y = _windowed_positions(detection, x, y, radius, group, (oy, ox))
    return FieldRegion(bounds[::2], core, detection, np.asarray(x, np.float64), np.asarray(y, np.float64),
                       np.asarray(radius, np.float64), np.asarray(segment, np.int64), group, catalog_index,
                       row_flags, measurable)


def _windowed_positions(detection, x, y, radius, group, origin):
    """SExtractor's windowed centroids (XWIN) for isolated sources; barycentres for blend members.

    For isolated sources the window gives the light centre without the
    barycentre's sensitivity to the faint outskirts (on the mock field of
    ``bench_field.py`` every isolated galaxy lies within 0.1" of the truth);
    for members of blends the window is pulled by the neighbour, so the
    deblended barycentre is kept there.  A window that fails or wanders
    further than two half-light radii is not used.
    """
    import sep

    x, y = np.array(x, np.float64), np.array(y, np.float64)
    isolated = np.flatnonzero(np.bincount(group, minlength=len(group))[group] == 1)
    if not len(isolated):
        return x, y
    r = np.nan_to_num(radius[isolated], nan=1.0).clip(0.5, 50.0)
    sig = 2.0 * r / 2.3548
    xw, yw, status = sep.winpos(detection.subtracted, x[isolated] - origin[1], y[isolated] - origin[0], sig)
    xw, yw = xw + origin[1], yw + origin[0]
    good = (status == 0) & np.isfinite(xw) & np.isfinite(yw) & \
        (np.hypot(xw - x[isolated], yw - y[isolated]) < np.maximum(2.0 * r, 1.5))
    x[isolated[good]] = xw[good]
    y[isolated[good]] = yw[good]
    return x, y


def total_flux(stamp: np.ndarray, centre_yx, radius_train: float, noise_rms: float):
    """``flux_total`` on a training-domain stamp: the sum within the aperture, and its noise error."""
    r = TOTAL_APERTURE_FACTOR * radius_train if np.isfinite(radius_train) else TOTAL_APERTURE_MIN
    r = float(np.clip(r, TOTAL_APERTURE_MIN, CENTER))
    yy, xx = np.ogrid[:STAMP_SIZE, :STAMP_SIZE]
    inside = (yy - centre_yx[0]) ** 2 + (xx - centre_yx[1]) ** 2 <= r * r
    return float(stamp[inside].sum(dtype=np.float64)), float(noise_rms * math.sqrt(inside.sum())), r


@dataclass
class SourceMeasurements:
    """What :func:`measure_sources` gives for some sources of a region."""

    indices: np.ndarray
    columns: dict
    outputs: dict
    companions: np.ndarray = None
    stamps: list = field(default_factory=list)
    placements: list = field(default_factory=list)


def _noise_in_training_units(region: FieldRegion, image) -> float:
    from napari_blendphot.field.resample import noise_factor

    zoom = image.calibration.zoom_yx
    factor = 1.0 if zoom == (1.0, 1.0) else noise_factor(zoom)
    return region.detection.global_rms * image.calibration.flux_scale * factor


def _run_methods(runner, stamps, context, paired, networks_on_isolated, progress, cancel) -> dict:
    """Every method on every stamp, except pair-trained networks on isolated sources (NaN rows there)."""
    from napari_blendphot.deblend.base import DeblendOutput
    from napari_blendphot.field.run import pair_trained

    n = len(stamps)
    pair_methods = [] if networks_on_isolated else [m for m in runner.methods if pair_trained(m)]
    if not pair_methods or paired.all():
        return runner.run(stamps, context, progress=progress, cancel=cancel)
    others = [m for m in runner.methods if m not in pair_methods]
    share = paired.sum() / n if n else 0.0

    def scaled(weight, offset):
        if progress is None:
            return None
        return lambda done, total: progress(int(offset + weight * done * n / max(total, 1)), n)

    outputs = runner.run(stamps, context, progress=scaled(1 - share, 0), cancel=cancel, methods=others) \
        if others else {}
    rows = np.flatnonzero(paired)
    partial = runner.run(stamps[rows], context.subset(rows), progress=scaled(share, (1 - share) * n),
                         cancel=cancel, methods=pair_methods) if len(rows) else {}
    for name in pair_methods:
        fluxes = np.full((n, 2), np.nan)
        masks = extra = errors = None
        result = partial.get(name)
        metadata = {}
        if result is not None:
            fluxes[rows] = result.fluxes
            metadata = dict(result.metadata or {})
            if result.masks is not None:
                masks = np.zeros((n, *result.masks.shape[1:]), np.float32)
                masks[rows] = result.masks
            if result.flux_errors is not None:
                errors = np.full((n, 2), np.nan)
                errors[rows] = result.flux_errors
            extra = {}
            for key, values in (result.extra or {}).items():
                values = np.asarray(values)
                if values.ndim == 1 and values.dtype.kind == "f":
                    full = np.full(n, np.nan)
                    full[rows] = values
                    extra[key] = full
        outputs[name] = DeblendOutput(name, fluxes, masks, extra or {}, metadata, errors)
    return {name: outputs[name] for name in runner.methods}


def measure_sources(region: FieldRegion, image, indices, runner, seed: int = 0, progress=None, cancel=None,
                    keep_stamps: bool = False, networks_on_isolated: bool = False) -> SourceMeasurements:
    """Stamps, methods and per-source columns for sources *indices* of *region* (module docstring).

    Pair-trained networks (:func:`napari_blendphot.field.run.pair_trained`) run on sources
    with a companion only, unless *networks_on_isolated*: on lone galaxies they are biased (their
    columns are NaN there, the row flagged ``ISOLATED``; ``flux_total`` measures them).
    """
    from napari_blendphot.deblend.base import BlendContext
    from napari_blendphot.field.stamps import cut_stamp

    calibration = image.calibration
    zoom = calibration.zoom_yx
    flux_scale = calibration.flux_scale
    indices = np.asarray(indices, np.int64)
    n = len(indices)
    noise_train = _noise_in_training_units(region, image)
    base_flags = _image_flags(image)
    noise_ratio = noise_train / TRAINING_NOISE_RMS
    if not F.NOISE_RANGE[0] <= noise_ratio <= F.NOISE_RANGE[1]:
        base_flags |= F.NOISE
    stamps = np.zeros((n, STAMP_SIZE, STAMP_SIZE), np.float32)
    shifts = np.full((n, 2), np.nan)
    radii_train = region.radius[indices] * math.sqrt(zoom[0] * zoom[1])
    row_flags = np.zeros(n, np.int64)
    companions = np.full(n, -1, np.int64)
    group_size = np.zeros(n, np.int64)
    flux_total = np.full(n, np.nan)
    flux_total_err = np.full(n, np.nan)
    aperture = np.full(n, np.nan)
    placements = []
    for k, i in enumerate(indices):
        members = region.members(i)
        group_size[k] = len(members)
        keep = region.segment[members]
        stamp = cut_stamp(region.detection, region.origin, image.shape, region.y[i], region.x[i], keep[keep > 0],
                          zoom, flux_scale, seed)
        stamps[k] = stamp.pixels
        placements.append((stamp.origin_yx, stamp.step_yx))
        flags_k = base_flags | stamp.flags | int(region.flags[i])
        j = region.companion(i)
        companions[k] = j
        if j >= 0:
            cy, cx = stamp.to_stamp(region.y[j], region.x[j])
            shifts[k] = (float(cy) - CENTER, float(cx) - CENTER)
        else:
            flags_k |= F.ISOLATED
            centre = stamp.to_stamp(region.y[i], region.x[i])
            flux_total[k], flux_total_err[k], aperture[k] = total_flux(stamp.pixels, centre, radii_train[k],
                                                                       noise_train)
        if len(members) > 2:
            flags_k |= F.CROWDED
        if np.isfinite(radii_train[k]) and not F.SIZE_RANGE[0] <= radii_train[k] <= F.SIZE_RANGE[1]:
            flags_k |= F.SIZE
        row_flags[k] = flags_k
    outputs = {}
    if n:
        context = BlendContext(companion_shift=shifts, central_radius=np.where(np.isfinite(radii_train),
                                                                                radii_train, np.nan))
        outputs = _run_methods(runner, stamps, context, companions >= 0, networks_on_isolated, progress, cancel)
    ra, dec = image.pixel_to_world(region.x[indices], region.y[indices])
    columns = {
        "x": region.x[indices], "y": region.y[indices], "ra": ra, "dec": dec,
        "radius": region.radius[indices], "group_size": group_size, "flags": row_flags,
        "flux_total": flux_total / flux_scale, "flux_total_err": flux_total_err / flux_scale,
        "mag_total": _mag(flux_total), "aperture_radius": aperture / math.sqrt(zoom[0] * zoom[1]),
    }
    for name, output in outputs.items():
        fluxes = np.asarray(output.fluxes, np.float64)
        errors = (np.asarray(output.flux_errors, np.float64)[:, 0] if output.flux_errors is not None
                  else np.full(n, np.nan))
        columns[f"flux_{name}"] = fluxes[:, 0] / flux_scale
        columns[f"flux_err_{name}"] = errors / flux_scale
        columns[f"mag_{name}"] = _mag(fluxes[:, 0])
        columns[f"companion_flux_{name}"] = np.where(companions >= 0, fluxes[:, 1], np.nan) / flux_scale
        for key, values in sorted((output.extra or {}).items()):
            values = np.asarray(values)
            if values.shape == (n,):
                columns[f"{key}_{name}"] = values
    return SourceMeasurements(indices, columns, outputs, companions, list(stamps) if keep_stamps else [],
                              placements)


def _mag(flux_training) -> np.ndarray:
    """AB magnitudes of fluxes at the training zero point (= the image's magnitudes: flux scale cancels)."""
    flux = np.asarray(flux_training, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, ZERO_POINT - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)


# ----------------------------------------------------------------------------- the whole image
def plan_tiles(shape, zoom_yx, tile_size: int = DEFAULT_TILE_SIZE):
    """[(bounds, core)] covering an image; one region when it fits in *tile_size*."""
    ny, nx = shape
    if ny <= tile_size and nx <= tile_size:
        return [((0, ny, 0, nx), (0, ny, 0, nx))]
    # Margin: a stamp (64 training pixels) plus the partner range and the cleaning dilation.
    margin = int(math.ceil((CENTER + MAX_PAIR_SEPARATION) / min(zoom_yx))) + 16
    tiles = []
    for y0 in range(0, ny, tile_size):
        for x0 in range(0, nx, tile_size):
            core = (y0, min(y0 + tile_size, ny), x0, min(x0 + tile_size, nx))
            bounds = (max(core[0] - margin, 0), min(core[1] + margin, ny),
                      max(core[2] - margin, 0), min(core[3] + margin, nx))
            tiles.append((bounds, core))
    return tiles


def measure_field(image, methods=None, catalog=None, *, settings: DetectionSettings = DetectionSettings(),
                  method_options: dict | None = None, seed: int = 0, tile_size: int = DEFAULT_TILE_SIZE,
                  runner=None, progress=None, cancel=None, backend: str | None = None, zero_point=None,
                  pixel_scale=None, plane=None, hdu=None, networks_on_isolated: bool = False):
    """Measure the sources of a field image; returns the catalogue (astropy Table).

    Parameters
    ----------
    image : FieldImage or path
        Opened with :func:`~napari_blendphot.field.image.open_field` (*zero_point*,
        *pixel_scale*, *plane*, *hdu* passed on) when a path.
    methods : sequence of str
        Deblending methods (default: the registry's default set, as for ``blendphot predict``).
    catalog : path or astropy Table, optional
        Positions to measure instead of SEP's detections.
    runner : MethodRunner, optional
        Reuse a running one (its methods are used); otherwise one is made and closed here.
    networks_on_isolated : bool
        Also run the pair-trained networks on isolated sources (biased there: see ``docs/field.md``).
    progress : callable(done, total, text), optional
        Sources measured so far and the (estimated, for tiles) total.
    cancel : Event or callable, optional
        Stops between batches (raises ``napari_blendphot.deblend.engine.Cancelled``).
    """
    from napari_blendphot.field.image import FieldImage, open_field

    opened = not isinstance(image, FieldImage)
    if opened:
        image = open_field(image, hdu=hdu, plane=plane, zero_point=zero_point, pixel_scale=pixel_scale)
    try:
        return _measure_open_field(image, methods, catalog, settings, method_options, seed, tile_size, runner,
                                   progress, cancel, backend, networks_on_isolated)
    finally:
        if opened:
            image.close()


def _measure_open_field(image, methods, catalog, settings, method_options, seed, tile_size, runner, progress,
                        cancel, backend, networks_on_isolated):
    from napari_blendphot.field.catalog_input import read_positions
    from napari_blendphot.field.run import MethodRunner

    positions = read_positions(catalog, image) if catalog is not None else None
    if positions is not None:
        import warnings

        from napari_blendphot.field.image import FieldWarning

        for note in positions.notes:
            warnings.warn(f"{positions.source}: {note}", FieldWarning, stacklevel=2)
    own_runner = runner is None
    if own_runner:
        if methods is None:
            from napari_blendphot.deblend.registry import default_methods

            methods = default_methods()
        runner = MethodRunner(methods, method_options, backend=backend)
    methods = list(runner.methods)
    runner.warm_up_in_background()
    tiles = plan_tiles(image.shape, image.calibration.zoom_yx, tile_size)
    parts = []
    done = 0
    try:
        for t, (bounds, core) in enumerate(tiles):
            _check_cancel(cancel, done)
            region = prepare_region(image, bounds, core, settings, positions)
            chosen = np.flatnonzero(region.in_core() & region.measurable)
            estimate = done + len(chosen) if t == len(tiles) - 1 else \
                int(round((done + len(chosen)) * len(tiles) / (t + 1)))
            text = f"tile {t + 1}/{len(tiles)}" if len(tiles) > 1 else ""
            if progress is not None:
                progress(done, max(estimate, done), text)
            for start in range(0, len(chosen), BATCH):
                _check_cancel(cancel, done)
                batch = chosen[start:start + BATCH]
                offset = done

                def batch_progress(finished, _total, offset=offset, estimate=estimate, text=text):
                    if progress is not None:
                        progress(offset + finished, max(estimate, offset + finished), text)

                measured = measure_sources(region, image, batch, runner, seed, progress=batch_progress,
                                           cancel=cancel, networks_on_isolated=networks_on_isolated)
                parts.append(_part_rows(region, measured))
                done += len(batch)
            if positions is not None:
                # Catalogue rows on the image but on pixels without data: kept, flagged, not measured.
                skipped = np.flatnonzero(region.in_core() & ~region.measurable)
                if len(skipped):
                    parts.append(_unmeasured_rows(region.catalog_index[skipped], positions, image,
                                                  region.flags[skipped]))
        if progress is not None:
            progress(done, done, "")
    finally:
        if own_runner:
            backend_used = runner.backend_used
            runner.close()
        else:
            backend_used = runner.backend_used
    if positions is not None:
        off = np.flatnonzero(~positions.on_image)
        if len(off):
            parts.append(_unmeasured_rows(off, positions, image, np.zeros(len(off), np.int64)))
    table = _assemble(parts, methods, positions)
    table.meta.update(_catalog_meta(image, methods, runner, settings, seed, positions, backend_used,
                                    catalog if positions is not None else None, networks_on_isolated))
    return table


def _check_cancel(cancel, done):
    from napari_blendphot.deblend.engine import Cancelled
    from napari_blendphot.field.run import _cancel_requested

    if _cancel_requested(cancel):
        raise Cancelled(f"cancelled after {done} sources", done=done)


def _part_rows(region: FieldRegion, measured: SourceMeasurements, source_ids=None) -> dict:
    """A region's measured rows, with the positions of each source's group members and companion.

    *source_ids*: the rows' ids when the caller numbers sources itself (the Field widget's model).
    """
    indices = measured.indices
    members = [np.stack([region.x[region.members(i)], region.y[region.members(i)]], axis=1) for i in indices]
    companion = measured.companions
    companion_xy = np.where(companion[:, None] >= 0,
                            np.stack([region.x[np.maximum(companion, 0)], region.y[np.maximum(companion, 0)]], 1),
                            np.nan)
    return {"columns": measured.columns, "catalog_index": region.catalog_index[indices], "members": members,
            "companion_xy": companion_xy, "source_id": None if source_ids is None else np.asarray(source_ids)}


def _unmeasured_rows(catalog_rows, positions, image, row_flags) -> dict:
    x, y = positions.x[catalog_rows], positions.y[catalog_rows]
    ra, dec = image.pixel_to_world(x, y)
    n = len(catalog_rows)
    columns = {"x": x, "y": y, "ra": ra, "dec": dec, "radius": np.full(n, np.nan),
               "group_size": np.zeros(n, np.int64),
               "flags": (np.asarray(row_flags, np.int64) | F.OFF_IMAGE | _image_flags(image))}
    return {"columns": columns, "catalog_index": np.asarray(catalog_rows, np.int64),
            "members": [np.zeros((0, 2))] * n, "companion_xy": np.full((n, 2), np.nan)}


def _assemble(parts, methods, positions):
    from astropy.table import Table
    from scipy.spatial import cKDTree

    from napari_blendphot.field.detect import _union_find

    names = list(dict.fromkeys(name for part in parts for name in part["columns"]))
    n = sum(len(part["catalog_index"]) for part in parts)
    columns = {}
    for name in names:
        pieces = []
        for part in parts:
            count = len(part["catalog_index"])
            values = part["columns"].get(name)
            if values is None:
                kind = next(p["columns"][name] for p in parts if name in p["columns"])
                values = np.full(count, -1 if np.asarray(kind).dtype.kind in "iu" else np.nan,
                                 dtype=np.asarray(kind).dtype if np.asarray(kind).dtype.kind in "iuf" else float)
            pieces.append(np.asarray(values))
        columns[name] = np.concatenate(pieces) if pieces else np.zeros(0)
    catalog_index = np.concatenate([p["catalog_index"] for p in parts]) if parts else np.zeros(0, np.int64)
    if parts and all(part.get("source_id") is not None for part in parts):
        source_id = np.concatenate([part["source_id"] for part in parts]).astype(np.int64)
    elif positions is None:
        source_id = np.arange(1, n + 1, dtype=np.int64)
    else:
        source_id = positions.ids[catalog_index]
    x = columns.get("x", np.zeros(0))
    y = columns.get("y", np.zeros(0))
    members = [m for p in parts for m in p["members"]]
    companion_xy = np.concatenate([p["companion_xy"] for p in parts]) if parts else np.zeros((0, 2))
    measured = np.isfinite(x) & (columns.get("group_size", np.zeros(n)) > 0)
    # Global groups: members and companions are found by position among the measured rows
    # (a tile's margin sources are other tiles' core sources).
    group_id = np.full(n, -1, np.int64)
    companion_id = np.full(n, -1, np.int64)
    rows = np.flatnonzero(measured)
    if len(rows):
        tree = cKDTree(np.stack([x[rows], y[rows]], axis=1))
        edges = []
        for k, row in enumerate(rows):
            if len(members[row]) > 1:
                distance, found = tree.query(members[row], distance_upper_bound=1.5)
                for d, f in zip(distance, found):
                    if np.isfinite(d):
                        edges.append((k, int(f)))
            if np.isfinite(companion_xy[row]).all():
                d, f = tree.query(companion_xy[row], distance_upper_bound=1.5)
                if np.isfinite(d):
                    companion_id[row] = source_id[rows[int(f)]]
        labels = _union_find(len(rows), edges)
        smallest = {}
        for k, label in enumerate(labels):
            smallest[label] = min(smallest.get(label, np.iinfo(np.int64).max), int(source_id[rows[k]]))
        group_id[rows] = [smallest[label] for label in labels]
    table = Table()
    table["source_id"] = source_id
    table["group_id"] = group_id
    table["group_size"] = columns.pop("group_size").astype(np.int64) if n else np.zeros(0, np.int64)
    table["companion_id"] = companion_id
    if positions is not None:
        table["input_row"] = catalog_index
    for name in ("x", "y", "ra", "dec", "radius", "flux_total", "flux_total_err", "mag_total", "aperture_radius"):
        table[name] = columns.pop(name, np.full(n, np.nan))
    for method in methods:
        for prefix in ("flux_", "flux_err_", "mag_", "companion_flux_"):
            table[f"{prefix}{method}"] = columns.pop(f"{prefix}{method}", np.full(n, np.nan))
    flags_column = columns.pop("flags", np.zeros(n, np.int64)).astype(np.int64)
    for name, values in columns.items():  # method extras (detection_sep...)
        table[name] = values
    table["flags"] = flags_column
    order = np.argsort(table["input_row"], kind="stable") if positions is not None else np.arange(n)
    table = table[order]
    _describe_columns(table, methods)
    return table


COLUMN_DESCRIPTIONS = {
    "source_id": "source number (from 1), or the input catalogue's id",
    "group_id": "blend group: the smallest source_id of the group",
    "group_size": "members of the blend group (1 = isolated; 0 = not measured)",
    "companion_id": "source_id of the companion given to the methods (nearest group member), -1 none",
    "input_row": "row of the input catalogue (0-based)",
    "x": "column, 0-based pixels (SEP barycentre, or the input position)",
    "y": "row, 0-based pixels",
    "ra": "right ascension, degrees (image WCS; empty without one)",
    "dec": "declination, degrees",
    "radius": "half-light radius, image pixels (sep.flux_radius, neighbours masked)",
    "flux_total": "isolated sources: sum within aperture_radius on the cleaned stamp, image units",
    "flux_total_err": "background-noise error of flux_total, image units",
    "mag_total": "AB magnitude of flux_total with the image's zero point",
    "aperture_radius": "radius of the flux_total aperture, image pixels",
    "flags": "bit flags (napari_blendphot.field.flags; legend in the metadata)",
}


def _describe_columns(table, methods) -> None:
    for name, text in COLUMN_DESCRIPTIONS.items():
        if name in table.colnames:
            table[name].description = text
    for method in methods:
        table[f"flux_{method}"].description = f"{method}: flux of the source (central of its own stamp), image units"
        table[f"flux_err_{method}"].description = f"{method}: 1-sigma flux error where the method gives one"
        table[f"mag_{method}"].description = f"{method}: AB magnitude with the image's zero point"
        table[f"companion_flux_{method}"].description = (f"{method}: flux of the companion on this source's stamp "
                                                         "(cross-check of the companion's own row)")


def _catalog_meta(image, methods, runner, settings, seed, positions, backend, catalog,
                  networks_on_isolated: bool = False) -> dict:
    from napari_blendphot.provenance import make_provenance, sha256_file

    inputs = {"image": {"path": image.path.name, "sha256": sha256_file(image.path)}}
    if catalog is not None and not hasattr(catalog, "colnames"):
        from pathlib import Path

        inputs["catalog"] = {"path": Path(catalog).name, "sha256": sha256_file(catalog)}
    method_metadata = {}
    for name, meta in (runner.metadata or {}).items():
        kept = {}
        for key, value in meta.items():
            if key == "weights":
                from pathlib import Path

                kept["weights_file"] = Path(str(value)).name
            elif key in ("label", "method", "sha256", "model_name", "keras_backend", "keras", "sep_version",
                         "flux_rule", "precision", "shared_members"):
                kept[key] = value
        method_metadata[name] = kept
    description = image.describe()
    provenance = make_provenance(
        "measure", seed, inputs=inputs, image=description, methods=list(methods),
        method_metadata=method_metadata, keras_backend=backend, detection=settings.as_dict(),
        positions=None if positions is None else positions.columns,
        grouping={"radius_factor": 2.0, "max_pair_separation_training_px": MAX_PAIR_SEPARATION},
        total_aperture={"factor": TOTAL_APERTURE_FACTOR, "min_training_px": TOTAL_APERTURE_MIN},
        networks_on_isolated=bool(networks_on_isolated),
    )
    notes = list(image.notes) + ([] if positions is None else [f"{positions.source}: {n}" for n in positions.notes])
    return {
        "format": FORMAT_NAME,
        "image": image.name,
        "zero_point": image.calibration.zero_point,
        "zero_point_source": image.calibration.zero_point_source,
        "pixel_scale": image.calibration.pixel_scale,
        "pixel_scale_source": image.calibration.pixel_scale_source,
        "methods": list(methods),
        "flags": dict(F.FLAGS),
        "notes": notes,
        "provenance": provenance,
    }
