"""Helpers for testing napari-blendphot and methods written for it (like ``numpy.testing``).

Modules
-------
stand_ins
    Stand-in deblending methods (:class:`~napari_blendphot.testing.stand_ins.SlowDeblender`...),
    toy blends, tiny versions of the networks built in an inference worker,
    a toy results table.
corpus
    The bad-input corpus: small valid inputs written at run time and the
    named edits that break them (used by the reliability tests and the fuzzer).

Nothing here is imported by the rest of the package.
"""
