"""How real the mock looks: morphology statistics (statmorph) of mocks and real galaxies, side by side.

The statistics are those of the galaxy-morphology literature, measured by the
maintained ``statmorph`` package (Rodriguez-Gomez et al. 2019) on each stamp's
central segment (other segments masked): concentration C, asymmetry A,
smoothness S (clumpiness), Gini, M20, the Sersic index of a PSF-convolved fit,
the half-light semi-major axis of elliptical apertures (``rhalf``, px) and the
ellipticity 1 - b/a (about the asymmetry centre).  :func:`compare` gives per
statistic the two-sample KS distance between the real galaxies and each mock
and the share of real galaxies outside the mock's 1-99 % range (and outside its
full range).  Used by ``tests/test_mock_realism.py`` and
``benchmarks/bench_mock_realism.py``; needs ``statmorph`` (the ``mock`` extra).
"""

from __future__ import annotations

import warnings

import numpy as np

from napari_blendphot.constants import CENTER, PIXEL_SCALE

#: Statistic name -> statmorph attribute.
STATISTICS = {
    "concentration": "concentration",
    "asymmetry": "asymmetry",
    "smoothness": "smoothness",
    "gini": "gini",
    "m20": "m20",
    "sersic_n": "sersic_n",
    "rhalf": "rhalf_ellip",
    "ellipticity": "ellipticity_asymmetry",
}


def _psf_image(size: int = 25) -> np.ndarray:
    from napari_blendphot.sample.mock import make_psf

    psf = make_psf().drawImage(nx=size, ny=size, scale=PIXEL_SCALE).array
    return psf / psf.sum()


def measure_morphology(sample, gain: float = 3000.0, psf=True, progress=None):
    """statmorph statistics of every galaxy of *sample* (a GalaxySample) as an astropy Table.

    *gain* converts the stamps' e-/s to electrons (the mock's effective exposure
    time).  *psf*: True for the mock's F160W PSF in the Sersic fit, an array for
    another, None for none.  Columns: ``id``, ``galtype``, the keys of
    :data:`STATISTICS`, ``flag`` (statmorph's: 0 good, 1 suspect, >= 2 bad) and
    ``flag_sersic``.  A galaxy statmorph cannot measure gets NaN and flag 4.
    """
    import statmorph
    from astropy.table import Table

    psf_array = _psf_image() if psf is True else psf
    rows = {name: [] for name in ("id", "galtype", *STATISTICS, "flag", "flag_sersic")}
    for k in range(len(sample)):
        image = np.asarray(sample.images[k], np.float64)
        segmap = sample.segmaps[k]
        label = segmap[CENTER, CENTER]
        central = (segmap == label) & (label != 0)
        others = (segmap != 0) & ~central
        values = dict.fromkeys(STATISTICS, np.nan)
        flag, flag_sersic = 4, 4
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                morph = statmorph.SourceMorphology(image, central.astype(np.int32), 1, mask=others, gain=gain,
                                                   psf=psf_array)
                values = {name: float(getattr(morph, attribute)) for name, attribute in STATISTICS.items()}
                flag, flag_sersic = int(morph.flag), int(morph.flag_sersic)
            except Exception:  # noqa: BLE001 - statmorph raises many kinds on hopeless stamps
                pass
        rows["id"].append(int(sample.catalog["id"][k]))
        rows["galtype"].append(str(sample.catalog["galtype"][k]))
        for name in STATISTICS:
            rows[name].append(values[name])
        rows["flag"].append(flag)
        rows["flag_sersic"].append(flag_sersic)
        if progress is not None:
            progress(k + 1, len(sample))
    return Table(rows)


def usable(table, name: str) -> np.ndarray:
    """Values of statistic *name* that statmorph measured well (flag <= 1; Sersic fit converged)."""
    good = np.asarray(table["flag"]) <= 1
    if name == "sersic_n":
        good &= np.asarray(table["flag_sersic"]) == 0
    values = np.asarray(table[name], float)
    return values[good & np.isfinite(values)]


def compare(real, mocks: dict):
    """Per statistic and mock: KS D and p against *real*, share of real galaxies outside the mock's ranges.

    *real*: a :func:`measure_morphology` table; *mocks*: {name: table}.
    Returns an astropy Table with one row per (statistic, mock).
    """
    from astropy.table import Table
    from scipy.stats import ks_2samp

    rows = []
    for name in STATISTICS:
        real_values = usable(real, name)
        for mock_name, table in mocks.items():
            values = usable(table, name)
            low, high = np.percentile(values, [1.0, 99.0])
            result = ks_2samp(real_values, values)
            rows.append({
                "statistic": name, "mock": mock_name, "n_real": len(real_values), "n_mock": len(values),
                "real_median": float(np.median(real_values)), "mock_median": float(np.median(values)),
                "ks_d": float(result.statistic), "ks_p": float(result.pvalue),
                "outside_1_99": float(np.mean((real_values < low) | (real_values > high))),
                "outside_range": float(np.mean((real_values < values.min()) | (real_values > values.max()))),
            })
    return Table(rows=rows)


def save_realism_figure(real, mocks: dict, path, overwrite: bool = False):
    """Histograms per statistic of *real* and each mock (normalised), written atomically to *path* (PNG)."""
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from napari_blendphot.atomic import atomic_output
    from napari_blendphot.errors import check_output_path

    path = Path(path)
    check_output_path(path, overwrite)
    figure = Figure(figsize=(14, 6.5), dpi=100)
    FigureCanvasAgg(figure)
    colours = ["tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:purple"]
    for k, name in enumerate(STATISTICS):
        axes = figure.add_subplot(2, 4, k + 1)
        real_values = usable(real, name)
        everything = np.concatenate([real_values] + [usable(t, name) for t in mocks.values()])
        low, high = np.percentile(everything, [0.5, 99.5])
        if name in ("rhalf", "sersic_n"):
            bins = np.geomspace(max(low, 1e-2), high, 25)
            axes.set_xscale("log")
            # Plain numbers at a few round values: matplotlib's default labels every minor
            # tick of a short log axis ("3 x 10^0 4 x 10^0 ...") and they overlap.
            from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

            ticks = [t for t in (0.3, 0.5, 1, 2, 3, 5, 10, 20, 30, 50) if bins[0] <= t <= bins[-1]]
            axes.xaxis.set_major_locator(FixedLocator(ticks))
            axes.xaxis.set_major_formatter(ScalarFormatter())
            axes.xaxis.set_minor_locator(NullLocator())
            axes.xaxis.set_minor_formatter(NullFormatter())
        else:
            bins = np.linspace(low, high, 25)
        for colour, (mock_name, table) in zip(colours, mocks.items()):
            values = np.clip(usable(table, name), bins[0], bins[-1])
            axes.hist(values, bins=bins, density=True, histtype="step", color=colour, lw=1.4,
                      label=f"{mock_name} ({len(values)})")
        axes.hist(np.clip(real_values, bins[0], bins[-1]), bins=bins, density=True, color="black", alpha=0.3,
                  label=f"real ({len(real_values)})")
        axes.plot(real_values, np.zeros_like(real_values), "|", color="black", ms=12)
        axes.set_title(name)
        axes.set_yticks([])
        if k == 0:
            axes.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
