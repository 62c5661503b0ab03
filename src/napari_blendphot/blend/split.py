"""Split a sample of isolated galaxies into train and test sets, by galaxy.

The split happens *before* pairing (SPEC §4.1) so that a blend takes both of
its galaxies from the same side: no test galaxy is ever seen in training, as
a central or as a companion.  (The paper's code split the centrals only; 18.8%
of its published test blends have a companion from the training side.)
"""

from __future__ import annotations

import numpy as np

from napari_blendphot.errors import InputError


def as_generator(seed, source: str = "seed") -> np.random.Generator:
    """A numpy Generator from an int seed or a Generator; ``None`` is refused.

    Every random step of the package takes an explicit seed so that the same
    inputs and seed give byte-identical outputs.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        raise InputError(source, "no seed given", "pass an integer seed or a numpy Generator")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise InputError(source, f"seed must be an integer or a numpy Generator, got {type(seed).__name__}")
    if seed < 0:
        raise InputError(source, f"seed must be non-negative, got {seed}")
    return np.random.default_rng(int(seed))


def split_indices(n_galaxies: int, test_fraction: float = 0.2, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the train and test galaxies (each sorted ascending).

    ``round(test_fraction * n_galaxies)`` galaxies go to the test side, chosen
    uniformly at random without replacement; both sides keep at least two
    galaxies so that each can form blends of two distinct galaxies.
    """
    if not isinstance(test_fraction, (int, float, np.floating)) or not 0.0 < float(test_fraction) < 1.0:
        raise InputError("test_fraction", f"must be strictly between 0 and 1, got {test_fraction!r}")
    n_test = int(round(float(test_fraction) * n_galaxies))
    n_train = n_galaxies - n_test
    if n_test < 2 or n_train < 2:
        raise InputError(
            "test_fraction",
            f"a test fraction of {test_fraction} of {n_galaxies} galaxies leaves {n_train} train and "
            f"{n_test} test galaxies; each side needs at least 2",
            "use a larger sample or a different fraction",
        )
    rng = as_generator(seed)
    permutation = rng.permutation(n_galaxies)
    test = np.sort(permutation[:n_test])
    train = np.sort(permutation[n_test:])
    return train, test


def split_sample(sample, test_fraction: float = 0.2, seed=0):
    """Split a :class:`~napari_blendphot.sample.GalaxySample` into (train, test) by galaxy.

    Parameters
    ----------
    sample : GalaxySample
        The (already cleaned) isolated galaxies.
    test_fraction : float
        Share of galaxies that go to the test side (paper: 0.2).
    seed : int or numpy.random.Generator
        Seed of the random split; the same seed gives the same split.

    Returns
    -------
    train, test : GalaxySample
        Disjoint sub-samples, each in the original row order.
    """
    train, test = split_indices(len(sample), test_fraction, seed)
    return sample[train], sample[test]
