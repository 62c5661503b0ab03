"""Bit flags of the field catalogue's ``flags`` column (0 = nothing to report).

A row's ``flags`` is the sum (bitwise OR) of the values below.  Flags mark
what lies outside the training domain of the networks or what was worked
around; they never remove a row.
"""

from __future__ import annotations

#: The stamp reaches beyond the image: the missing pixels were filled with noise.
EDGE = 1
#: The stamp holds pixels without data (NaN, infinite, zero-filled borders): filled with noise.
NO_DATA = 2
#: The image's pixel scale differs from 0.06" by more than 5%: the stamp was resampled.
RESAMPLED = 4
#: The background rms, in training units, is outside 0.5-2 times the training rms (0.0106 e-/s).
NOISE = 8
#: The half-light radius, in training pixels, is outside 0.8-20 (the training galaxies' range, roughly).
SIZE = 16
#: The blend group has more than two members: the networks, trained on pairs, see the others too.
CROWDED = 32
#: No companion: the pair-trained networks are biased on lone galaxies, so they are not run (their columns
#: are empty unless ``--isolated-networks``); ``flux_total`` measures the source.
ISOLATED = 64
#: No photometric zero point in the header or the options: 25.96 assumed (``docs/field.md``).
ZERO_POINT_ASSUMED = 128
#: No pixel scale in the header (no WCS) or the options: 0.06" assumed.
PIXEL_SCALE_ASSUMED = 256
#: Catalogue position on no detected segment: radius unknown, grouping by distance only.
NO_SEGMENT = 512
#: Catalogue position off the image or on pixels without data: not measured.
OFF_IMAGE = 1024

#: ``{name: value}`` in bit order (written into the catalogue's metadata).
FLAGS = {name: value for name, value in sorted(
    ((name, value) for name, value in globals().items() if name.isupper() and isinstance(value, int)),
    key=lambda item: item[1])}

#: Half-light radius range (training pixels) outside which SIZE is set.
SIZE_RANGE = (0.8, 20.0)
#: Background rms range (times the training rms) outside which NOISE is set.
NOISE_RANGE = (0.5, 2.0)


def describe(flags: int) -> list[str]:
    """Names of the bits set in *flags*."""
    return [name for name, value in FLAGS.items() if int(flags) & value]
