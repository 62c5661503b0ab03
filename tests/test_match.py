"""Assignment of detections to the central and companion galaxy (every branch of the rules)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_blendphot.match.assign import (
    DETECTION_BOTH,
    DETECTION_CENTRAL_ONLY,
    DETECTION_COMPANION_ONLY,
    DETECTION_MORE_THAN_TWO,
    DETECTION_NONE,
    Assignment,
    assign_detections,
)

# Companion 12 rows down and 5 columns left of the centre: true position (x=59, y=76).
SHIFT = (12, -5)


def test_no_detection():
    result = assign_detections([], [], [], companion_shift=SHIFT, central_radius=4.0)
    assert result == Assignment(-1, -1, DETECTION_NONE, True)
    assert assign_detections([], [], []).detection == DETECTION_NONE


def test_two_detections_each_to_its_nearest_galaxy():
    # Listed companion first: the order of sep's list must not matter.
    result = assign_detections(x=[59.4, 64.2], y=[75.8, 63.9], flux=[3.0, 10.0], companion_shift=SHIFT)
    assert result == Assignment(central=1, companion=0, detection=DETECTION_BOTH, used_truth=True)


def test_two_detections_both_nearest_to_central_get_distinct_galaxies():
    # Both sources are nearer the centre than the companion; the pairing with the
    # smaller summed distance still gives each galaxy its own source.
    x = [64.0, 63.0]
    y = [66.0, 70.0]
    result = assign_detections(x, y, [5.0, 5.0], companion_shift=SHIFT)
    assert {result.central, result.companion} == {0, 1}
    assert (result.central, result.companion) == (0, 1)
    assert result.detection == DETECTION_BOTH


def test_one_detection_inside_half_radius_is_central():
    result = assign_detections([64.9], [64.0], [7.0], companion_shift=SHIFT, central_radius=2.0)
    assert result == Assignment(0, -1, DETECTION_CENTRAL_ONLY, True)


def test_one_detection_outside_half_radius_is_companion():
    # 1.2 px from the centre, but R_central = 2 px -> limit 1 px: the paper's rule says companion,
    # even though the source is much nearer the central galaxy.
    result = assign_detections([65.2], [64.0], [7.0], companion_shift=SHIFT, central_radius=2.0)
    assert result == Assignment(-1, 0, DETECTION_COMPANION_ONLY, True)


def test_one_detection_without_radius_goes_to_nearer_true_position():
    near_central = assign_detections([66.0], [66.0], [7.0], companion_shift=SHIFT)
    near_companion = assign_detections([60.0], [74.0], [7.0], companion_shift=SHIFT)
    assert near_central.detection == DETECTION_CENTRAL_ONLY and near_central.central == 0
    assert near_companion.detection == DETECTION_COMPANION_ONLY and near_companion.companion == 0
    # A NaN radius behaves like a missing one.
    assert assign_detections([66.0], [66.0], [7.0], SHIFT, central_radius=np.nan) == near_central


def test_more_than_two_keeps_the_two_brightest_then_assigns_by_position():
    # Source 1 is faint and sits right on the centre; it is dropped for the two brightest.
    x = [59.0, 64.0, 66.0, 30.0]
    y = [76.0, 64.0, 65.0, 20.0]
    flux = [8.0, 0.5, 9.0, 1.0]
    result = assign_detections(x, y, flux, companion_shift=SHIFT, central_radius=5.0)
    assert result == Assignment(central=2, companion=0, detection=DETECTION_MORE_THAN_TWO, used_truth=True)


def test_heuristic_without_truth():
    x = [90.0, 64.5, 20.0, 70.0]
    y = [90.0, 63.5, 20.0, 60.0]
    flux = [2.0, 1.0, 9.0, 30.0]
    result = assign_detections(x, y, flux)
    # Central: closest to the centre (index 1); companion: brightest of the rest (index 3).
    assert result == Assignment(1, 3, DETECTION_MORE_THAN_TWO, False)
    assert assign_detections(x[:2], y[:2], flux[:2]) == Assignment(1, 0, DETECTION_BOTH, False)
    assert assign_detections([20.0], [20.0], [1.0]) == Assignment(0, -1, DETECTION_CENTRAL_ONLY, False)


def test_non_finite_shift_selects_heuristic():
    result = assign_detections([64.0, 80.0], [64.0, 80.0], [1.0, 1.0], companion_shift=(np.nan, 3.0))
    assert not result.used_truth


def test_custom_centre():
    result = assign_detections([10.0, 30.0], [10.0, 30.0], [1.0, 1.0], companion_shift=(20, 20), center=(10, 10))
    assert (result.central, result.companion) == (0, 1)


def test_mismatched_lengths_refused():
    with pytest.raises(ValueError):
        assign_detections([1.0, 2.0], [1.0], [1.0, 2.0])
