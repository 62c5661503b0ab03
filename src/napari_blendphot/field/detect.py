"""Detection of sources in a field region with SEP, and their grouping into blends.

Detection (:func:`detect_region`), per region (the whole image or one tile
with its margin):

1. pixels without data (NaN) are masked; SEP's background map (meshes of
   ``background_box`` pixels, 3x3 median filter) is measured, the sources
   found on the background-subtracted image are masked (their segments and
   ``BACKGROUND_MASK_SCALE`` (10) times their isophotal ellipses), and the background is measured again
   without them, so that galaxy wings do not raise the sky level (on the
   synthetic fields, ``benchmarks/bench_field.py --part detection``, the sky
   under isolated galaxies came out 0.00039 (mock) and 0.00071 (real
   galaxies) e-/s per pixel too high with the segments alone masked, 0.00008
   and 0.00012 with the ellipses: 5.1 and 9.2 against 1.1 and 1.6 e-/s over
   a 64-pixel radius);
   with ``background="auto"`` (the default) the map is subtracted from the
   pixels that are measured only when it departs from zero by more than
   ``SKY_SUBTRACTED_TOLERANCE`` (0.1) times the rms somewhere (1% of the
   pixels): a sky-subtracted image (HST drizzled mosaics, CANDELS) keeps its
   pixels, as the training stamps did, because even a good map of a field
   of galaxies holds some of their faint wings (the 1.1 e-/s above is 0.03
   mag for a 40 e-/s galaxy); ``"map"``
   always subtracts, ``"none"`` never (detection always uses the map);
2. ``sep.extract`` on the background-subtracted image with the per-pixel rms
   map as error: threshold ``threshold`` x rms (default 3) on the image
   convolved with SEP's default 3x3 kernel, ``minarea`` pixels (5),
   multi-threshold deblending with ``deblend_nthresh`` (64) levels and a
   minimum contrast ``deblend_cont`` (0.0005, close to the paper's "hot"
   0.0001: close pairs are split), segmentation map kept.  Chosen on two
   synthetic fields of each sample (``bench_field.py --part detection``): the mock
   galaxies 382/400 found within 0.3" (114/132 members of pairs), 18
   detections matching no galaxy; the real galaxies, clumpier, 400/400 but
   93 extra detections, mostly knots split off irregular galaxies (0.005
   gives 370/400 and 393/400 with 10 and 28 extra);
3. per source: SEP's barycentre (x, y), shape (a, b, theta) and the
   half-light radius ``radius`` (``sep.flux_radius`` within 6 a, the other
   sources' segments masked).

Grouping (:func:`group_sources`): two sources belong to one blend group when

* their segments touch (share an edge; always the case for the children of
  one deblended detection), or
* their centres are closer than ``GROUP_RADIUS_FACTOR`` (2) times the sum of
  their half-light radii: every pair of the paper's blends qualifies (the
  published rule puts companions within 4 min(R1, R2) <= 2 (R1 + R2)),

and in both cases only when the partner's centre lies within
``MAX_PAIR_SEPARATION`` (60) training pixels, so that it falls inside a
128x128 stamp centred on the other source.  Groups are the connected
components of that relation (union-find), so a chain of three touching
galaxies is one group of three.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from napari_blendphot.errors import InputError

#: Group when centres are closer than this many times the sum of the two half-light radii.
GROUP_RADIUS_FACTOR = 2.0
#: Largest centre separation of a blend pair, in training pixels (inside a 128-pixel stamp).
MAX_PAIR_SEPARATION = 60.0
#: ``DetectionSettings.background``: decide from the image, always subtract SEP's map, never subtract.
BACKGROUND_MODES = ("auto", "map", "none")
#: "auto" keeps the pixels as they are when the background map stays within this many rms of zero.
SKY_SUBTRACTED_TOLERANCE = 0.1
#: Sources are masked out of the second background out to this many times their isophotal ellipse.
BACKGROUND_MASK_SCALE = 10.0
#: Smallest sep pixel stack for a field region (sep's own default).
PIXEL_STACK = 300_000
#: Dilation (pixels) of source segments: for the background's source mask and the neighbour cleaning.
DILATE_ITERATIONS = 5


@dataclass(frozen=True)
class DetectionSettings:
    """SEP settings of the field detection (see the module docstring)."""

    threshold: float = 3.0
    minarea: int = 5
    deblend_nthresh: int = 64
    deblend_cont: float = 0.0005
    background_box: int = 128
    background_filter: int = 3
    background: str = "auto"

    def __post_init__(self):
        if self.background not in BACKGROUND_MODES:
            raise InputError("detection settings", f"background {self.background!r} is not one of "
                                                   f"{', '.join(BACKGROUND_MODES)}")
        if not (self.threshold > 0 and self.minarea >= 1 and self.deblend_nthresh >= 1
                and 0 <= self.deblend_cont <= 1 and self.background_box >= 8 and self.background_filter >= 1):
            raise InputError("detection settings", f"invalid values {self}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RegionDetection:
    """What detection found in one region (arrays in region pixel coordinates).

    ``subtracted``: float32 image minus background, 0 where there is no data;
    ``rms``: float32 per-pixel background rms; ``nodata``: bool mask;
    ``background_subtracted``: whether SEP's map was subtracted from the pixels;
    ``segmap``: int32 segment ids (0 = sky); ``sources``: dict of per-source
    arrays ``x, y, a, b, theta, radius, flux, npix, segment``.
    """

    subtracted: np.ndarray
    rms: np.ndarray
    nodata: np.ndarray
    segmap: np.ndarray
    sources: dict
    global_rms: float
    background_subtracted: bool = True


def _background(data, mask, settings: DetectionSettings):
    import sep

    box = int(min(settings.background_box, max(data.shape)))
    return sep.Background(data, mask=mask, bw=box, bh=box, fw=settings.background_filter,
                          fh=settings.background_filter)


def detect_region(data: np.ndarray, settings: DetectionSettings = DetectionSettings(),
                  source: str = "image") -> RegionDetection:
    """Background, detections and segmentation of one region (float32, NaN = no data)."""
    import sep

    data = np.ascontiguousarray(data, dtype=np.float32)
    nodata = ~np.isfinite(data)
    if nodata.all():
        raise InputError(source, "the region holds no valid pixel (all NaN, infinite or zero)")
    filled = np.where(nodata, np.float32(0), data)
    background = _background(filled, nodata, settings)
    subtracted = filled - background.back(dtype=np.float32)
    subtracted[nodata] = 0
    rms = background.rms(dtype=np.float32)
    objects, segmap = _extract(subtracted, rms, nodata, settings)
    # Second background without the sources: galaxy wings otherwise lift the sky and eat flux.
    source_mask = (segmap > 0) | nodata
    if len(objects):
        sep.mask_ellipse(source_mask, objects["x"], objects["y"], objects["a"], objects["b"], objects["theta"],
                         r=BACKGROUND_MASK_SCALE)
    if (~source_mask).sum() > 0.05 * source_mask.size:
        background = _background(filled, source_mask, settings)
        subtracted = filled - background.back(dtype=np.float32)
        subtracted[nodata] = 0
        rms = background.rms(dtype=np.float32)
        objects, segmap = _extract(subtracted, rms, nodata, settings)
    subtract = settings.background == "map"
    if settings.background == "auto":
        level = np.abs(background.back(dtype=np.float32)[~nodata])
        subtract = bool(np.percentile(level, 99) > SKY_SUBTRACTED_TOLERANCE * background.globalrms)
    if not subtract:
        subtracted = filled.copy()
    sources = _measure_sources(subtracted, objects, segmap)
    return RegionDetection(subtracted, rms, nodata, segmap.astype(np.int32, copy=False), sources,
                           float(background.globalrms), subtract)


def _extract(subtracted, rms, nodata, settings: DetectionSettings):
    import sep

    from napari_blendphot.deblend.sep_baseline import stamp_sized_pixel_stack

    # sep's stack bounds the pixels of one detection; the process-wide setting is shared under a lock.
    try:
        with stamp_sized_pixel_stack(max(PIXEL_STACK, subtracted.size // 16)):
            return sep.extract(subtracted, settings.threshold, err=rms, mask=nodata, minarea=settings.minarea,
                               filter_type="conv", deblend_nthresh=settings.deblend_nthresh,
                               deblend_cont=settings.deblend_cont, segmentation_map=True)
    except Exception as exc:  # sep signals every failure with a bare Exception
        raise InputError("detection", f"SEP failed: {exc}",
                         "a very crowded or very noisy region: raise the threshold or the minimum area") from None


def _measure_sources(subtracted, objects, segmap) -> dict:
    import sep

    n = len(objects)
    x = objects["x"].astype(np.float64)
    y = objects["y"].astype(np.float64)
    a = objects["a"].astype(np.float64)
    segment = np.arange(1, n + 1, dtype=np.int32)
    radius = np.full(n, np.nan)
    if n:
        rmax = np.clip(6.0 * a, 2.0, 200.0)
        values, flags = sep.flux_radius(subtracted, x, y, rmax, 0.5, seg_id=segment, segmap=segmap, subpix=5)
        radius = np.where(np.isfinite(values) & (values > 0), values, np.nan)
    return {"x": x, "y": y, "a": a, "b": objects["b"].astype(np.float64),
            "theta": objects["theta"].astype(np.float64), "radius": radius,
            "flux": objects["flux"].astype(np.float64), "npix": objects["npix"].astype(np.int64),
            "segment": segment}


def touching_segments(segmap: np.ndarray) -> np.ndarray:
    """(M, 2) unique pairs of different segment ids that share an edge (4-connectivity), smaller id first."""
    pairs = []
    for first, second in ((segmap[:, :-1], segmap[:, 1:]), (segmap[:-1, :], segmap[1:, :])):
        touching = (first != second) & (first > 0) & (second > 0)
        if touching.any():
            a, b = first[touching].astype(np.int64), second[touching].astype(np.int64)
            pairs.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


def _union_find(n: int, edges) -> np.ndarray:
    parent = np.arange(n)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in edges:
        ri, rj = root(int(i)), root(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([root(i) for i in range(n)], np.int64)


def group_sources(x, y, radius, segment, segmap: np.ndarray | None, max_separation: float,
                  factor: float = GROUP_RADIUS_FACTOR):
    """Blend groups of sources (module docstring).

    Parameters
    ----------
    x, y, radius : (N,) arrays in one pixel frame (radius NaN = unknown, counts as 0)
    segment : (N,) int segment id of each source in *segmap* (0 = none); sources may share one
    segmap : segmentation map of that frame, or None (distance rule only)
    max_separation : largest pair separation in those pixels

    Returns
    -------
    labels : (N,) int, the smallest source index of each source's group
    edges : (M, 2) int, the pairs that were linked
    """
    from scipy.spatial import cKDTree

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = len(x)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, 2), np.int64)
    r = np.nan_to_num(np.asarray(radius, np.float64), nan=0.0)
    segment = np.asarray(segment, np.int64)
    points = np.stack([x, y], axis=1)
    candidates = cKDTree(points).query_pairs(max_separation, output_type="ndarray")
    edges = []
    if len(candidates):
        i, j = candidates[:, 0], candidates[:, 1]
        distance = np.hypot(x[i] - x[j], y[i] - y[j])
        close = distance < factor * (r[i] + r[j])
        same_segment = (segment[i] > 0) & (segment[i] == segment[j])
        linked = close | same_segment
        if segmap is not None and segment.max(initial=0) > 0:
            pairs = touching_segments(segmap)
            if len(pairs):
                keys = set(map(tuple, pairs.tolist()))
                lo, hi = np.minimum(segment[i], segment[j]), np.maximum(segment[i], segment[j])
                touch = np.array([(a, b) in keys for a, b in zip(lo.tolist(), hi.tolist())], bool)
                linked |= touch
        edges = candidates[linked]
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    return _union_find(n, edges), edges
