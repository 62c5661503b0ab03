"""Step 1 of the pipeline: samples of isolated galaxies (real CANDELS, native files, mocks)."""

from napari_blendphot.sample.galaxy_sample import Galaxy, GalaxySample, flux_to_mag, mag_to_flux

__all__ = ["Galaxy", "GalaxySample", "flux_to_mag", "mag_to_flux"]
