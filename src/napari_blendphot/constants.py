"""Numbers that define the CANDELS F160W setting of Boucaud et al. 2020 (SPEC §2)."""

#: F160W AB zero point used for every flux <-> magnitude conversion of the networks.
ZERO_POINT = 25.96
#: Zero point the paper's code used for its SExtractor magnitudes (published catalogue).
PAPER_SEXTRACTOR_ZERO_POINT = 25.67
#: Stamp side in pixels; the central galaxy sits on pixel [CENTER, CENTER].
STAMP_SIZE = 128
CENTER = 64
#: HST WFC3/IR drizzled pixel scale of the CANDELS stamps, arcsec per pixel.
PIXEL_SCALE = 0.06
#: Morphological classes of the CANDELS visual classification used by the paper.
GALTYPES = ("sph", "disk", "sphd", "irr")
#: |dmag| above which a measurement is a catastrophic outlier (a factor 2 in flux).
OUTLIER_DMAG = 0.75
