"""Pair drawing (|dmag| < 2, companion != central) and the shift rules."""

import numpy as np
import pytest

from napari_blendphot.blend.pairing import (
    CompanionTable,
    draw_pairs,
    draw_shifts,
    separation_bounds,
)
from napari_blendphot.errors import InputError


@pytest.fixture(scope="module")
def population():
    rng = np.random.default_rng(0)
    mags = rng.uniform(18.0, 23.0, 400)
    radii = np.exp(rng.uniform(np.log(0.8), np.log(40.0), 400))
    return mags, radii


@pytest.mark.parametrize(
    "rc, rk, expected",
    [
        (2.0, 5.0, (5.0, 8.0)),      # max(R) and 4 min(R)
        (10.0, 30.0, (30.0, 40.0)),
        (20.0, 20.0, (20.0, 64.0)),  # max capped at 64
        (1.0, 10.0, (3.2, 4.0)),     # min >= max: min = 0.8 max
    ],
)
def test_published_bounds(rc, rk, expected):
    low, high = separation_bounds(rc, rk, "published")
    assert (float(low), float(high)) == pytest.approx(expected)


def test_paper_text_bounds():
    low, high = separation_bounds(np.array([2.0, 200.0]), np.array([6.0, 1.0]), "paper-text")
    np.testing.assert_allclose(low, [3.0, 0.8 * 64])
    np.testing.assert_allclose(high, [64.0, 64.0])


def test_unknown_rule_is_refused():
    with pytest.raises(InputError, match="rule"):
        separation_bounds(1.0, 2.0, "wide")


@pytest.mark.parametrize("rule", ["published", "paper-text"])
def test_pairs_respect_dmag_distinctness_and_shift_bounds(population, rule):
    mags, radii = population
    pairs = draw_pairs(mags, radii, 5000, seed=1, rule=rule)
    assert len(pairs) == 5000
    assert np.all(pairs.central != pairs.companion)
    assert np.all(np.abs(mags[pairs.central] - mags[pairs.companion]) < 2.0)
    low, high = separation_bounds(radii[pairs.central], radii[pairs.companion], rule)
    distance = pairs.distance
    assert np.all(distance >= low) and np.all(distance <= high)
    assert pairs.dy.dtype.kind == "i" and pairs.dx.dtype.kind == "i"
    # Shifts are signed both ways along both axes.
    assert pairs.dy.min() < 0 < pairs.dy.max() and pairs.dx.min() < 0 < pairs.dx.max()


def test_pairs_are_deterministic(population):
    mags, radii = population
    a = draw_pairs(mags, radii, 1000, seed=42)
    b = draw_pairs(mags, radii, 1000, seed=42)
    c = draw_pairs(mags, radii, 1000, seed=43)
    for name in ("central", "companion", "dy", "dx"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.central, c.central)


def test_exactly_two_magnitudes_apart_is_not_a_pair():
    # 20.0 and 22.0 differ by exactly 2: the condition is strict.  Galaxy 2 has no partner.
    mags = np.array([20.0, 22.0, 21.9, 30.0])
    radii = np.full(4, 3.0)
    pairs = draw_pairs(mags, radii, 2000, seed=3)
    drawn = {tuple(p) for p in np.column_stack([pairs.central, pairs.companion]).tolist()}
    assert drawn == {(0, 2), (2, 0), (1, 2), (2, 1)}


def test_rounding_at_the_dmag_boundary_follows_the_direct_test():
    mags = np.array([21.37, 23.37, 19.37, 21.0])
    table = CompanionTable(mags)
    for i in range(len(mags)):
        expected = sum(1 for j in range(len(mags)) if j != i and abs(mags[i] - mags[j]) < 2.0)
        assert table.count[i] == expected


def test_companions_are_uniform_among_eligible_partners():
    mags = np.array([20.0, 20.5, 21.0, 25.0, 21.5])
    table = CompanionTable(mags)
    rng = np.random.default_rng(0)
    companions = table.draw(np.zeros(30000, np.int64), rng)
    share = np.bincount(companions, minlength=5) / companions.size
    np.testing.assert_allclose(share, [0, 1 / 3, 1 / 3, 0, 1 / 3], atol=0.015)


def test_a_sample_without_any_pair_is_refused():
    with pytest.raises(InputError, match="no pair"):
        draw_pairs(np.array([18.0, 21.0, 24.0]), np.ones(3), 10, seed=0)


def test_impossible_shifts_raise_instead_of_looping():
    # R = 0.1 px: separations must lie in [0.1, 0.4], no non-zero integer shift does.
    with pytest.raises(InputError, match="no valid shift"):
        draw_pairs(np.array([20.0, 20.5]), np.array([0.1, 0.1]), 5, seed=0, max_rounds=5)


def test_draw_shifts_reports_failures():
    rng = np.random.default_rng(1)
    dy, dx, found = draw_shifts(np.array([3.0, 0.5]), np.array([5.0, 0.9]), rng, tries=25)
    assert found.tolist() == [True, False]
    assert 3.0 <= np.hypot(dy[0], dx[0]) <= 5.0
    assert (dy[1], dx[1]) == (0, 0)


@pytest.mark.parametrize("n", [-1, 2.5, None])
def test_bad_number_of_pairs_is_refused(population, n):
    with pytest.raises(InputError):
        draw_pairs(*population, n, seed=0)


def test_mismatched_radii_are_refused(population):
    mags, radii = population
    with pytest.raises(InputError, match="radii"):
        draw_pairs(mags, radii[:-1], 10, seed=0)


def test_pairs_without_a_valid_shift_are_replaced_by_new_pairs():
    # Any pair with galaxy 2 (R = 0.1 px) needs a separation in [0.32, 0.4]: no integer shift has
    # one, so after 25 tries such a pair is dropped and redrawn; only 0 and 1 can end up paired.
    mags = np.array([20.0, 20.1, 20.2])
    radii = np.array([3.0, 3.0, 0.1])
    pairs = draw_pairs(mags, radii, 300, seed=4)
    assert set(pairs.central.tolist()) == {0, 1} and set(pairs.companion.tolist()) == {0, 1}
    assert np.all((pairs.distance >= 3.0) & (pairs.distance <= 12.0))


def test_central_weights_draw_centrals_in_proportion_and_leave_the_default_draws_alone(population):
    mags, radii = population
    plain = draw_pairs(mags, radii, 4000, seed=7)
    weighted = draw_pairs(mags, radii, 4000, seed=7, central_weights=radii ** 1.5)
    assert np.median(radii[weighted.central]) > 1.5 * np.median(radii[plain.central])
    again = draw_pairs(mags, radii, 4000, seed=7, central_weights=radii ** 1.5)
    np.testing.assert_array_equal(weighted.central, again.central)  # seeded
    # A galaxy of weight 0 is never a central; the pairs still obey the rules (companion != central).
    zero = np.where(radii > np.median(radii), 1.0, 0.0)
    only_big = draw_pairs(mags, radii, 2000, seed=1, central_weights=zero)
    assert (radii[only_big.central] > np.median(radii)).all()
    assert (only_big.central != only_big.companion).all()


@pytest.mark.parametrize("weights, problem", [(lambda n: np.ones(n - 1), "finite non-negative weights"),
                                              (lambda n: -np.ones(n), "finite non-negative weights"),
                                              (lambda n: np.full(n, np.nan), "finite non-negative weights"),
                                              (lambda n: np.zeros(n), "weight 0")])
def test_bad_central_weights_are_refused_in_one_line(population, weights, problem):
    mags, radii = population
    with pytest.raises(InputError, match=problem) as info:
        draw_pairs(mags, radii, 10, seed=0, central_weights=weights(len(mags)))
    assert "central_weights" in str(info.value) and "\n" not in str(info.value)
