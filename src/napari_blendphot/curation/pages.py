"""Pages of thumbnails for the curation widget, without Qt or napari.

A page is a grid of ``rows x columns`` cleaned stamps of the filtered galaxy
list: the page shown is the one that holds the current galaxy.  This module
lays the grid out (:class:`PageLayout`: tile <-> canvas position), picks the
galaxies of a page (:func:`page_of`), builds the mosaic image, each thumbnail
stretched on its own (:func:`build_mosaic`), and the outline, colour and
text of each tile from the decisions (:func:`tile_outlines`).  The widget only
hands the results to a napari Image layer and a Shapes layer.

Decision colours come from the Okabe & Ito (2008) palette, which stays
distinguishable with the common colour-vision deficiencies; the tile text
repeats the decision in words so that the colour is never the only cue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_blendphot.errors import InputError

__all__ = ["DECISION_COLORS", "CURRENT_COLOR", "HIDDEN_COLOR", "PageLayout", "PageSelection", "TileOutlines", "page_of",
           "build_mosaic", "tile_outlines", "decision_tag"]

#: Outline colour of a tile per decision (Okabe-Ito: bluish green, vermillion, yellow, grey).
DECISION_COLORS = {
    "accept": "#009E73",
    "reject": "#D55E00",
    "skip": "#F0E442",
    None: "#8C8C8C",
}
#: Outline of the current galaxy's tile (drawn outside its decision outline).
CURRENT_COLOR = "#FFFFFF"
#: Colour of the current-galaxy frames of the other tiles (present but invisible).
HIDDEN_COLOR = "#00000000"
#: Largest grid side accepted (a 20 x 20 page of 128-pixel stamps is 2,600 pixels wide).
MAX_GRID_SIDE = 20


@dataclass(frozen=True)
class PageLayout:
    """Grid geometry: ``rows x columns`` tiles of ``stamp_size`` pixels, ``gap`` pixels apart.

    Tile ``slot`` (0 .. rows*columns - 1) runs row by row, left to right; its
    upper-left pixel in the mosaic is :meth:`tile_origin`.
    """

    rows: int = 6
    columns: int = 6
    stamp_size: int = 128
    gap: int = 10

    def __post_init__(self):
        for name in ("rows", "columns"):
            value = getattr(self, name)
            if not 1 <= int(value) <= MAX_GRID_SIDE:
                raise InputError("page layout", f"{name} must be 1..{MAX_GRID_SIDE}, got {value!r}")
        if int(self.stamp_size) < 1 or int(self.gap) < 0:
            raise InputError("page layout", f"stamp_size must be >= 1 and gap >= 0, got {self.stamp_size}, "
                                            f"{self.gap}")

    @property
    def per_page(self) -> int:
        return self.rows * self.columns

    @property
    def step(self) -> int:
        """Distance between the upper-left corners of two neighbouring tiles."""
        return self.stamp_size + self.gap

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the mosaic: no gap outside the outer tiles."""
        return (self.rows * self.step - self.gap, self.columns * self.step - self.gap)

    def tile_origin(self, slot: int) -> tuple[int, int]:
        """(y, x) of the upper-left pixel of tile *slot*."""
        if not 0 <= slot < self.per_page:
            raise IndexError(f"tile {slot} outside the {self.rows}x{self.columns} page")
        row, column = divmod(int(slot), self.columns)
        return row * self.step, column * self.step

    def slot_at(self, y: float, x: float) -> int | None:
        """Tile under mosaic pixel coordinates (y, x) (napari's data coordinates: pixel centres
        are integers), or None in a gap or outside the grid."""
        # Pixel i covers [i - 0.5, i + 0.5).
        iy, ix = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
        if iy < 0 or ix < 0:
            return None
        row, in_y = divmod(iy, self.step)
        column, in_x = divmod(ix, self.step)
        if row >= self.rows or column >= self.columns or in_y >= self.stamp_size or in_x >= self.stamp_size:
            return None
        return row * self.columns + column


@dataclass(frozen=True)
class PageSelection:
    """The galaxies of one page: sample ``rows`` (in order of the tiles), ``page`` (0-based) of
    ``n_pages``, and ``current_slot`` (tile of the current galaxy; None if it is not on the page)."""

    rows: tuple
    page: int
    n_pages: int
    current_slot: int | None


def page_of(filtered_rows, current_row: int, per_page: int, page: int | None = None) -> PageSelection:
    """The page of *filtered_rows* (sample rows in the filter, ascending) to show.

    Parameters
    ----------
    filtered_rows : sequence of int
    current_row : int
        The current galaxy's sample row.  Outside the filter, the page shown is
        the one where it would sit (the page of the next galaxy of the filter).
    per_page : int
    page : int, optional
        Show this page instead (clipped to the pages there are).
    """
    if per_page < 1:
        raise InputError("page", f"per_page must be >= 1, got {per_page}")
    rows = np.asarray(filtered_rows, dtype=np.int64)
    n_pages = max(1, -(-rows.size // per_page))
    if page is None:
        position = int(np.searchsorted(rows, current_row))
        page = position // per_page
    page = int(np.clip(page, 0, n_pages - 1))
    on_page = rows[page * per_page:(page + 1) * per_page]
    hits = np.flatnonzero(on_page == current_row)
    return PageSelection(tuple(int(r) for r in on_page), page, n_pages, int(hits[0]) if hits.size else None)


def build_mosaic(stamps, layout: PageLayout, stretch=None) -> np.ndarray:
    """Mosaic (float32, ``layout.shape``) of up to ``layout.per_page`` stamps, each mapped to [0, 1]
    on its own by *stretch* (default: :func:`napari_blendphot.display.asinh_stretch`).

    Empty tiles and the gaps are 0 (the sky level of a stretched stamp): show the
    mosaic with contrast limits (0, 1).
    """
    if stretch is None:
        from napari_blendphot.display import asinh_stretch as stretch
    stamps = list(stamps)
    if len(stamps) > layout.per_page:
        raise InputError("page", f"{len(stamps)} stamps do not fit a page of {layout.per_page}")
    mosaic = np.zeros(layout.shape, np.float32)
    size = layout.stamp_size
    for slot, stamp in enumerate(stamps):
        stamp = np.asarray(stamp)
        if stamp.shape != (size, size):
            raise InputError("page", f"stamp {slot} has shape {stamp.shape}, expected ({size}, {size})")
        y, x = layout.tile_origin(slot)
        mosaic[y:y + size, x:x + size] = np.nan_to_num(stretch(stamp), nan=0.0)
    return mosaic


def decision_tag(record) -> str:
    """Short word for a tile: ``ok``, ``rej N`` (reason number, or ``rej`` for a free reason),
    ``skip``, or ``""`` when undecided."""
    from napari_blendphot.curation.sidecar import REASONS

    if record is None:
        return ""
    if record.decision == "accept":
        return "ok"
    if record.decision == "skip":
        return "skip"
    if record.reason in REASONS:
        return f"rej {REASONS.index(record.reason) + 1}"
    return "rej"


@dataclass(frozen=True)
class TileOutlines:
    """Rectangles for a napari Shapes layer: ``corners`` (n, 2, 2) [[y0, x0], [y1, x1]] in mosaic
    pixels, ``edge_colors`` (hex), ``edge_widths``, ``labels`` (text), ``kinds``
    (``"tile"`` or ``"current"``) and ``rows`` (sample row of each rectangle).

    Every tile has both rectangles (all the ``"tile"`` ones first, then the
    ``"current"`` frames, in tile order); only the current galaxy's frame is
    visible.  The rectangles thus depend on the page alone: a decision or a
    move within the page changes colours and text, never the shapes, which
    napari updates much faster.
    """

    corners: np.ndarray
    edge_colors: list
    edge_widths: list
    labels: list
    kinds: list
    rows: list


def tile_outlines(selection: PageSelection, ids, decisions, layout: PageLayout) -> TileOutlines:
    """Outline, colour and text of every tile of *selection*, and a white frame around the current one.

    Parameters
    ----------
    selection : PageSelection
    ids : sequence of int
        Galaxy id per sample row (indexed by the rows of *selection*).
    decisions : mapping
        Galaxy id -> decision record (with ``.decision`` and ``.reason``); absent = undecided.
    layout : PageLayout
    """
    gap = float(layout.gap)
    size = layout.stamp_size
    # Both outlines sit in the gap, so they never hide pixels: the decision outline in the
    # inner part (0.05-0.3 gap from the stamp), the current galaxy's frame in the middle
    # (0.35-0.65 gap), clear of the neighbouring tile's outline (from 0.7 gap).
    tile_offset, tile_width = 0.175 * gap, max(0.25 * gap, 0.5)
    current_offset, current_width = 0.5 * gap, max(0.3 * gap, 0.5)
    corners, colours, widths, labels, kinds, rows = [], [], [], [], [], []

    def frame(slot, offset):
        y, x = layout.tile_origin(slot)
        low, high = -0.5 - offset, size - 0.5 + offset
        return [[y + low, x + low], [y + high, x + high]]

    for slot, row in enumerate(selection.rows):
        galaxy_id = int(ids[row])
        record = decisions.get(galaxy_id)
        corners.append(frame(slot, tile_offset))
        colours.append(DECISION_COLORS[None if record is None else record.decision])
        widths.append(tile_width)
        labels.append(f"{galaxy_id} {decision_tag(record)}".strip())
        kinds.append("tile")
        rows.append(int(row))
    for slot, row in enumerate(selection.rows):
        corners.append(frame(slot, current_offset))
        colours.append(CURRENT_COLOR if slot == selection.current_slot else HIDDEN_COLOR)
        widths.append(current_width)
        labels.append("")
        kinds.append("current")
        rows.append(int(row))
    return TileOutlines(np.asarray(corners, dtype=np.float64).reshape(-1, 2, 2), colours, widths, labels,
                        kinds, rows)
