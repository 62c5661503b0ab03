"""Display choices shared by the napari reader, the widgets and the figures.

Astronomical stamps span a huge dynamic range: a bright bulge is thousands of
times the sky noise while the outskirts of a disk sit at one sigma.  napari
displays linearly between two contrast limits, optionally with a gamma curve.
We keep the data untouched (so the status bar shows real e-/s) and choose:

* lower limit = sky level - 1 sigma of the sky, so the noise is visible but dark;
* upper limit = the 99.8th percentile of the pixels, so bright cores saturate
  only in their very centre;
* gamma = 0.5 (a square-root stretch), a close, cheap stand-in for the asinh
  stretch of Lupton et al. (2004) over this range.

:func:`asinh_stretch` gives the real asinh mapping for static figures
(astropy.visualization's ``AsinhStretch`` over a ``ManualInterval``).
"""

from __future__ import annotations

import numpy as np

#: Per-galaxy label values used for masks in Labels layers, across all methods.
CENTRAL_LABEL = 1
COMPANION_LABEL = 2
OVERLAP_LABEL = 3
#: Consistent colours per galaxy across methods (RGBA).
GALAXY_COLORS = {
    CENTRAL_LABEL: (0.12, 0.63, 1.0, 1.0),    # central: blue
    COMPANION_LABEL: (1.0, 0.55, 0.0, 1.0),   # companion: orange
    OVERLAP_LABEL: (0.85, 0.2, 0.85, 1.0),    # both: magenta
}


def robust_sky(data) -> tuple[float, float]:
    """Sky level and sky sigma: median and NMAD of the pixels below the median + 3 NMAD (one clipping pass)."""
    from astropy.stats import mad_std, sigma_clip

    values = np.asarray(data, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    if values.size > 200_000:
        values = values[:: values.size // 200_000 + 1]
    kept = values
    if mad_std(values) > 0:  # (a constant image has no sky noise to clip with)
        kept = sigma_clip(values, sigma_lower=np.inf, sigma_upper=3.0, maxiters=1, cenfunc="median",
                          stdfunc="mad_std", masked=False)
    median, nmad = float(np.median(kept)), float(mad_std(kept))
    return median, (nmad if nmad > 0 else max(float(np.std(values)), 1e-12))


def astro_contrast(data) -> dict:
    """``contrast_limits`` and ``gamma`` for an image layer of stamps (see module doc)."""
    values = np.asarray(data, dtype=np.float64)
    sky, sigma = robust_sky(values)
    finite = values[np.isfinite(values)]
    if finite.size > 500_000:
        finite = finite.ravel()[:: finite.size // 500_000 + 1]
    upper = float(np.percentile(finite, 99.8)) if finite.size else 1.0
    lower = sky - sigma
    if not upper > lower:
        upper = lower + max(abs(lower), 1.0)
    return {"contrast_limits": (lower, upper), "gamma": 0.5}


def asinh_stretch(image, softening: float | None = None, upper: float | None = None) -> np.ndarray:
    """Map *image* to [0, 1] with an asinh stretch (softening defaults to 3 sky sigma).

    ``asinh((x - sky) / softening) / asinh((top - sky) / softening)``, clipped:
    astropy's ``AsinhStretch(a)`` on the interval [sky, top] with
    ``a = softening / (top - sky)`` (the top at least one softening above the sky).
    """
    from astropy.visualization import AsinhStretch, ManualInterval

    image = np.asarray(image, dtype=np.float64)
    sky, sigma = robust_sky(image)
    softening = 3 * sigma if softening is None else softening
    top = float(np.percentile(image, 99.9)) if upper is None else upper
    span = max(top - sky, softening)
    unit = ManualInterval(sky, sky + span)(image, clip=True)
    return AsinhStretch(a=softening / span)(unit, clip=True)


def masks_to_labels(masks) -> np.ndarray:
    """(..., 2, H, W) [central, companion] masks -> (..., H, W) labels 1/2/3 (3 = both)."""
    masks = np.asarray(masks) > 0.5
    central = masks[..., 0, :, :]
    companion = masks[..., 1, :, :]
    labels = np.zeros(central.shape, np.uint8)
    labels[central] = CENTRAL_LABEL
    labels[companion] = COMPANION_LABEL
    labels[central & companion] = OVERLAP_LABEL
    return labels


# --------------------------------------------------------------------------- methods on the canvas
# Every view draws a method the same way: its colour (the registry's, else one by position), its
# line style, its short label.  The two galaxies of one method differ by strength: the central in
# the full colour, the companion paler; the truth is white (central) and grey (companion), solid.
#: Colours for methods the registry gives none (third-party methods), by position; none is white or grey.
FALLBACK_COLORS = ("#e08a1e", "#3a9fb0", "#c2b02a", "#b05fa0", "#6b8e23", "#cd5c5c")
#: Line styles (matplotlib's names) of methods the registry gives none, by position.
FALLBACK_LINE_STYLES = ("dashed", "dotted", "dashdot", "solid")
#: Dash patterns along an outline, in pixels of arc: (period, ((on from, on to), ...)).
DASH_PATTERNS = {
    "solid": None,
    "dashed": (6.0, ((0.0, 3.5),)),
    "dotted": (3.0, ((0.0, 1.2),)),
    "dashdot": (9.0, ((0.0, 4.0), (5.5, 6.6))),
}
#: Share of white mixed into a method's colour for its companion outline.
COMPANION_PALENESS = 0.5
TRUTH_NAME = "truth"


def _rgba(color) -> tuple:
    from matplotlib.colors import to_rgba

    return tuple(float(c) for c in to_rgba(color))


class MethodStyle:
    """How one method (or the truth) is drawn: ``name``, ``label``, ``color`` (hex), ``line_style``."""

    __slots__ = ("name", "label", "color", "line_style")

    def __init__(self, name: str, label: str, color: str, line_style: str):
        self.name, self.label, self.color, self.line_style = name, label, color, line_style

    def __repr__(self) -> str:
        return f"MethodStyle({self.name!r}, {self.label!r}, {self.color!r}, {self.line_style!r})"

    @property
    def central_rgba(self) -> tuple:
        return _rgba(self.color)

    @property
    def companion_rgba(self) -> tuple:
        if self.name == TRUTH_NAME:
            return (0.62, 0.62, 0.62, 1.0)
        red, green, blue, alpha = self.central_rgba
        mix = COMPANION_PALENESS
        return (red + (1 - red) * mix, green + (1 - green) * mix, blue + (1 - blue) * mix, alpha)

    def galaxy_hex(self, galaxy: str) -> str:
        """The colour of *galaxy* ("central" or "companion") as ``#rrggbb``."""
        from matplotlib.colors import to_hex

        return to_hex(self.central_rgba if galaxy == "central" else self.companion_rgba)

    def label_colors(self) -> dict:
        """``{label value: RGBA}`` of a Labels layer of :func:`styled_outlines` (0 transparent)."""
        transparent = (0.0, 0.0, 0.0, 0.0)
        return {None: transparent, 0: transparent, CENTRAL_LABEL: self.central_rgba,
                COMPANION_LABEL: self.companion_rgba, OVERLAP_LABEL: self.central_rgba}


#: The truth's style (white central, grey companion, solid), in every view.
TRUTH_STYLE = MethodStyle(TRUTH_NAME, "truth", "#ffffff", "solid")


def method_style(name: str) -> MethodStyle:
    """The :class:`MethodStyle` of method *name* (``"truth"`` gives :data:`TRUTH_STYLE`).

    Colour, short label and line style come from the registry's capabilities
    (:class:`~napari_blendphot.deblend.registry.MethodInfo`); a method that has
    none gets them by its position among the methods without them, so two
    views of one session always agree.
    """
    if name == TRUTH_NAME:
        return TRUTH_STYLE
    from napari_blendphot.deblend.registry import available_methods, method_info
    from napari_blendphot.errors import InputError

    try:
        info = method_info(name)
        label, color, line_style = info.short_label or info.label, info.color, info.line_style
    except InputError:  # a method of a results table that is not registered here
        label, color, line_style = name, "", ""
    if not color or not line_style:
        names = list(available_methods())
        position = names.index(name) if name in names else len(names)
        if not color:
            uncoloured = [m for m in names[:position] if not _registered_color(m)]
            color = FALLBACK_COLORS[len(uncoloured) % len(FALLBACK_COLORS)]
        if not line_style:
            line_style = FALLBACK_LINE_STYLES[position % len(FALLBACK_LINE_STYLES)]
    return MethodStyle(name, label, color, line_style)


def _registered_color(name: str) -> str:
    from napari_blendphot.deblend.registry import display_of

    return display_of(name)[1]


def _edges(masks: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary of each boolean mask (..., H, W); outside the stamp counts as outside."""
    inner = masks.copy()
    inner[..., 1:, :] &= masks[..., :-1, :]
    inner[..., :-1, :] &= masks[..., 1:, :]
    inner[..., :, 1:] &= masks[..., :, :-1]
    inner[..., :, :-1] &= masks[..., :, 1:]
    inner[..., 0, :] = inner[..., -1, :] = False
    inner[..., :, 0] = inner[..., :, -1] = False
    return masks & ~inner


def _dash(edge: np.ndarray, mask: np.ndarray, line_style: str) -> np.ndarray:
    """Keep the pixels of one (H, W) outline that fall on the dashes of *line_style*.

    The position along the outline is the arc length around the mask's
    centroid (angle times distance), which needs no tracing of the contour
    and gives dashes of about the same length in every direction.
    """
    pattern = DASH_PATTERNS.get(line_style)
    if pattern is None or not edge.any():
        return edge
    period, on = pattern
    rows, columns = np.nonzero(edge)
    centre_y, centre_x = np.argwhere(mask).mean(axis=0)
    dy, dx = rows - centre_y, columns - centre_x
    arc = (np.arctan2(dy, dx) + np.pi) * np.hypot(dy, dx)
    phase = np.mod(arc, period)
    keep = np.zeros(len(rows), bool)
    for start, stop in on:
        keep |= (phase >= start) & (phase < stop)
    out = np.zeros_like(edge)
    out[rows[keep], columns[keep]] = True
    return out


def styled_outlines(masks, line_style: str = "solid") -> np.ndarray:
    """(..., 2, H, W) [central, companion] masks -> (..., H, W) outline labels in *line_style*.

    1 = central, 2 = companion, 3 = both outlines on one pixel; 0 elsewhere.
    Each galaxy's full outline is drawn (its extent stays visible through the
    overlap); *line_style* (``"solid"``, ``"dashed"``, ``"dotted"``,
    ``"dashdot"``) thins it into dashes.
    """
    masks = np.asarray(masks) > 0.5
    if masks.ndim < 3 or masks.shape[-3] != 2:
        from napari_blendphot.errors import InputError

        raise InputError("masks", f"expected shape (..., 2, H, W), got {masks.shape}")
    edges = _edges(masks)
    if DASH_PATTERNS.get(line_style) is not None:
        flat_edges = edges.reshape(-1, *edges.shape[-2:])
        flat_masks = masks.reshape(-1, *masks.shape[-2:])
        edges = np.stack([_dash(e, m, line_style) for e, m in zip(flat_edges, flat_masks)]).reshape(edges.shape)
    central, companion = edges[..., 0, :, :], edges[..., 1, :, :]
    labels = np.zeros(central.shape, np.uint8)
    labels[central] = CENTRAL_LABEL
    labels[companion] = COMPANION_LABEL
    labels[central & companion] = OVERLAP_LABEL
    return labels


def outline_layer_kwargs(name: str, style: MethodStyle, metadata: dict | None = None) -> dict:
    """Keyword arguments of a Labels layer drawing :func:`styled_outlines` in *style* (napari's ``add_labels``)."""
    return {
        "name": name,
        "opacity": 1.0,
        "colormap": style.label_colors(),
        "features": {"index": [0, CENTRAL_LABEL, COMPANION_LABEL, OVERLAP_LABEL],
                     "galaxy": ["background", "central", "companion", "both"]},
        "metadata": {**(metadata or {}), "style": style.name},
    }
