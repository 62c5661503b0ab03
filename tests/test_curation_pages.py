"""Pages of thumbnails for curation (Qt-free): layout, tile <-> position, page choice, mosaic, outlines."""

from __future__ import annotations

import numpy as np
import pytest

from napari_blendphot.curation.pages import (
    CURRENT_COLOR,
    DECISION_COLORS,
    HIDDEN_COLOR,
    PageLayout,
    build_mosaic,
    page_of,
    tile_outlines,
)
from napari_blendphot.curation.sidecar import REASONS, Decision
from napari_blendphot.errors import InputError


def _decision(galaxy_id, decision, reason=None):
    return Decision(id=galaxy_id, decision=decision, reason=reason, note="", galtype=None,
                    time="2026-01-01T00:00:00+00:00", reviewer="tester")


def test_layout_geometry_and_tile_round_trip():
    layout = PageLayout(rows=2, columns=3, stamp_size=4, gap=2)
    assert layout.per_page == 6 and layout.step == 6
    assert layout.shape == (2 * 6 - 2, 3 * 6 - 2)
    assert layout.tile_origin(0) == (0, 0)
    assert layout.tile_origin(4) == (6, 6)  # second grid row, second column
    for slot in range(layout.per_page):
        y, x = layout.tile_origin(slot)
        # every pixel of the tile, and the pixel edges half a pixel out, map back to the tile
        for dy in (-0.5, 0, 1.7, 3, 3.49):
            for dx in (-0.5, 0, 2.2, 3.49):
                assert layout.slot_at(y + dy, x + dx) == slot
    assert layout.slot_at(0, 4) is None and layout.slot_at(4, 0) is None  # gaps
    assert layout.slot_at(-0.6, 0) is None and layout.slot_at(0, 100) is None  # outside
    assert layout.slot_at(12, 0) is None  # below the last grid row
    with pytest.raises(IndexError):
        layout.tile_origin(6)


@pytest.mark.parametrize("kwargs", [{"rows": 0}, {"columns": 21}, {"gap": -1}, {"stamp_size": 0}])
def test_layout_rejects_bad_sizes(kwargs):
    with pytest.raises(InputError):
        PageLayout(**kwargs)


def test_page_of_holds_the_current_galaxy():
    rows = [0, 2, 3, 5, 8, 9, 11]  # filtered rows of a sample
    selection = page_of(rows, 8, per_page=3)
    assert selection.rows == (5, 8, 9) and selection.page == 1 and selection.n_pages == 3
    assert selection.current_slot == 1
    last = page_of(rows, 11, per_page=3)
    assert last.rows == (11,) and last.page == 2 and last.current_slot == 0
    # outside the filter: the page where it would sit, without a current tile
    outside = page_of(rows, 4, per_page=3)
    assert outside.rows == (5, 8, 9) and outside.current_slot is None
    beyond = page_of(rows, 40, per_page=3)
    assert beyond.page == 2  # clipped to the last page
    # an explicit page wins and is clipped
    assert page_of(rows, 0, per_page=3, page=1).rows == (5, 8, 9)
    assert page_of(rows, 0, per_page=3, page=99).page == 2
    empty = page_of([], 3, per_page=4)
    assert empty.rows == () and empty.n_pages == 1 and empty.current_slot is None
    with pytest.raises(InputError):
        page_of(rows, 0, per_page=0)


def test_mosaic_stretches_each_tile_on_its_own():
    layout = PageLayout(rows=2, columns=2, stamp_size=16, gap=3)
    rng = np.random.default_rng(5)
    faint = rng.normal(0.0, 0.01, (16, 16))
    faint[8, 8] += 0.5
    bright = rng.normal(10.0, 1.0, (16, 16)) * 1000
    bright[4, 4] += 1e6
    mosaic = build_mosaic([faint, bright, faint], layout)
    assert mosaic.shape == layout.shape and mosaic.dtype == np.float32
    assert mosaic.min() >= 0 and mosaic.max() <= 1
    tile = lambda slot: mosaic[layout.tile_origin(slot)[0]:][:16, layout.tile_origin(slot)[1]:][:, :16]  # noqa: E731
    # each tile reaches the top of the stretch at its own peak, whatever the other tiles hold
    assert tile(0)[8, 8] == pytest.approx(1.0) and tile(1)[4, 4] == pytest.approx(1.0)
    np.testing.assert_array_equal(tile(0), tile(2))
    assert not tile(3).any()  # empty slot
    assert not mosaic[16:19, :].any() and not mosaic[:, 16:19].any()  # gaps
    # a custom stretch is used as given
    ones = build_mosaic([faint], layout, stretch=lambda s: np.ones_like(s))
    assert ones[:16, :16].min() == 1.0 and ones.sum() == 256


def test_mosaic_rejects_bad_stamps():
    layout = PageLayout(rows=1, columns=2, stamp_size=8, gap=1)
    with pytest.raises(InputError, match="shape"):
        build_mosaic([np.zeros((8, 9))], layout)
    with pytest.raises(InputError, match="do not fit"):
        build_mosaic([np.zeros((8, 8))] * 3, layout)


def test_outlines_show_decisions_and_the_current_galaxy():
    layout = PageLayout(rows=2, columns=2, stamp_size=10, gap=10)
    ids = np.array([100, 101, 102, 103, 104])
    selection = page_of([0, 1, 2, 4], 2, per_page=4)
    decisions = {100: _decision(100, "accept"), 101: _decision(101, "reject", REASONS[2]),
                 104: _decision(104, "reject", "cosmic ray")}
    outlines = tile_outlines(selection, ids, decisions, layout)
    assert outlines.kinds == ["tile"] * 4 + ["current"] * 4
    assert outlines.rows == [0, 1, 2, 4] * 2
    assert outlines.edge_colors == [DECISION_COLORS["accept"], DECISION_COLORS["reject"], DECISION_COLORS[None],
                                    DECISION_COLORS["reject"], HIDDEN_COLOR, HIDDEN_COLOR, CURRENT_COLOR,
                                    HIDDEN_COLOR]
    assert outlines.labels == ["100 ok", "101 rej 3", "102", "104 rej", "", "", "", ""]
    assert outlines.corners.shape == (8, 2, 2)
    # every outline lies in the gaps: it encloses its own tile and no pixel of another one
    for corners, row, width in zip(outlines.corners, outlines.rows, outlines.edge_widths):
        slot = selection.rows.index(row)
        y, x = layout.tile_origin(slot)
        (y0, x0), (y1, x1) = corners
        assert y0 + width / 2 < y - 0.5 and x0 + width / 2 < x - 0.5
        assert y1 - width / 2 > y + 9.5 and x1 - width / 2 > x + 9.5
        assert y1 + width / 2 < y + layout.step - 0.5 and x1 + width / 2 < x + layout.step - 0.5
    # the current frame is outside its decision outline
    tile, current = outlines.corners[2], outlines.corners[6]
    assert (current[0] < tile[0]).all() and (current[1] > tile[1]).all()
    # another current galaxy on the same page: the same rectangles, other colours
    moved = tile_outlines(page_of([0, 1, 2, 4], 4, per_page=4), ids, decisions, layout)
    np.testing.assert_array_equal(moved.corners, outlines.corners)
    assert moved.edge_colors[4:] == [HIDDEN_COLOR] * 3 + [CURRENT_COLOR]
    # off the page (outside the filter): no visible frame
    away = tile_outlines(page_of([0, 1, 2, 4], 3, per_page=4), ids, decisions, layout)
    assert CURRENT_COLOR not in away.edge_colors


def test_decision_colours_are_distinct():
    colours = [DECISION_COLORS[k] for k in ("accept", "reject", "skip", None)] + [CURRENT_COLOR]
    assert len(set(c.lower() for c in colours)) == 5
