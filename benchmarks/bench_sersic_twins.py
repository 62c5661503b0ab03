"""Real galaxies against their smooth Sersic twins: where does the large-galaxy over-estimate come from?

Every flux network over-estimates the real galaxies above 21 px (median predicted /
true ~1.1, docs/results.md) and under-estimates mock galaxies of that size (~0.93).
This draws, for each real galaxy of ../shared/realgal (validation only: measured,
never trained on), a *twin*: a smooth Sersic profile with the galaxy's header
MAG, RADIUS (major-axis half-light radius) and SERSICN, the axis ratio and angle
of its light's second moments, the mock's F160W PSF and the real stamps' noise
(white rms 0.0106 e-/s + Poisson at 3000 s).  Both sets are blended with the
same pairs and shifts (same seed, same galaxy order: the pairing depends on the
catalogue, not on the pixels) and measured by the same networks; per galaxy,
the ratio of the real and twin predictions is compared with the ratio of their
shares of light inside the stamp (header STMPFRAC, and the twin's model sum over
its total flux).  If a network measures the light it sees and extrapolates the
rest alike for both, the two ratios agree.

    python benchmarks/bench_sersic_twins.py --work scratch/twins \
        [--real-results realgal.csv --real-blends realgal_blends]

Without --real-results the real galaxies are blended (seed 12, 2,000 blends,
as in docs/results.md) and predicted too (~2 min each on 2 CPUs).
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

RADIUS_BINS = (0.0, 10.0, 21.0, 35.0, 99.0)
PIXEL_RMS = 0.0106
EXPOSURE_S = 3000.0


def write_twins(real_dir: Path, out_dir: Path, seed: int = 2026) -> dict:
    """One twin FITS per real galaxy in *out_dir*; returns {id: (real share, twin share, radius, n)}."""
    import galsim
    from astropy.io import fits

    from napari_blendphot.sample import mock

    psf = mock.make_psf()
    out_dir.mkdir(parents=True, exist_ok=True)
    shares = {}
    yy, xx = np.mgrid[:128, :128]
    for k, path in enumerate(sorted(real_dir.glob("*.fits"))):
        with fits.open(path) as hdul:
            image = hdul[0].data.astype(np.float64)
            segmap = hdul["SEG"].data
            header = hdul[0].header
        weight = np.where(segmap == segmap[64, 64], np.clip(image, 0.0, None), 0.0)
        total = weight.sum()
        cy, cx = (weight * yy).sum() / total, (weight * xx).sum() / total
        cov = np.cov(np.stack([(xx - cx).ravel(), (yy - cy).ravel()]), aweights=weight.ravel())
        evals, evecs = np.linalg.eigh(cov)
        q = float(np.clip(math.sqrt(evals[0] / evals[1]), 0.1, 1.0))
        beta = math.atan2(evecs[1, 1], evecs[0, 1])
        n = float(np.clip(header["SERSICN"], 0.3, 6.2))  # GalSim's Sersic range
        flux = 10.0 ** (-0.4 * (header["MAG"] - 25.96))
        profile = galsim.Sersic(n=n, half_light_radius=header["RADIUS"] * 0.06 * math.sqrt(q), flux=flux)
        drawn = galsim.ImageF(128, 128, scale=0.06)
        galsim.Convolve(profile.shear(q=q, beta=beta * galsim.radians), psf).drawImage(drawn, offset=(0.5, 0.5))
        model = drawn.array.astype(np.float64)
        rng = np.random.default_rng([seed, k])
        noisy = (model + rng.normal(0.0, PIXEL_RMS, model.shape)
                 + rng.normal(0.0, 1.0, model.shape) * np.sqrt(np.clip(model, 0.0, None) / EXPOSURE_S))
        twin_seg = mock.segment_stamp(noisy, PIXEL_RMS, id_offset=0)
        out = fits.Header()
        for key in ("ID", "MAG", "RADIUS", "Z", "GALTYPE", "SERSICN"):
            out[key] = header[key]
        out["STMPFRAC"] = (float(model.sum() / flux), "twin: model flux inside the stamp / total")
        out["TWIN_Q"] = (q, "axis ratio from the real light's second moments")
        fits.HDUList([fits.PrimaryHDU(noisy.astype(np.float32), out),
                      fits.ImageHDU(twin_seg.astype(np.int32), name="SEG")]).writeto(out_dir / path.name,
                                                                                     overwrite=True)
        shares[int(header["ID"])] = (float(header["STMPFRAC"]), float(model.sum() / flux),
                                     float(header["RADIUS"]), float(header["SERSICN"]))
    return shares


def ratios(table, method):
    """Per galaxy id, the median predicted / true flux of *method* over its blends; and all ratios with radii."""
    ids = np.concatenate([table["g1_id"], table["g2_id"]]).astype(np.int64)
    true = np.concatenate([table["g1_flux"], table["g2_flux"]]).astype(float)
    pred = np.concatenate([table[f"g1_flux_{method}"], table[f"g2_flux_{method}"]]).astype(float)
    radius = np.concatenate([table["g1_rad"], table["g2_rad"]]).astype(float)
    ratio = pred / true
    per_galaxy = {int(i): float(np.nanmedian(ratio[ids == i])) for i in np.unique(ids)}
    return per_galaxy, ratio, radius


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", default=str(REPO.parent / "shared" / "realgal"))
    parser.add_argument("--work", required=True, help="folder for the twins, their blends and tables")
    parser.add_argument("--real-results", default=None, help="predicted table of the real blends (seed 12)")
    parser.add_argument("--real-blends", default=None, help="the real blends folder (checked: same pairs)")
    parser.add_argument("--methods", default="blend2flux,blend2mask2flux")
    parser.add_argument("--weights", action="append", default=[], metavar="METHOD=PATH",
                        help="a network method's weights other than the shipped ones (as blendphot predict's; "
                             "give --real-results predicted with the same weights)")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from napari_blendphot.cli import main as blendphot
    from napari_blendphot.report.results import read_results

    work = Path(args.work)
    shares = write_twins(Path(args.real), work / "twins")
    blend = ["blend", "--test-fraction", "0", "--no-clean", "-n", str(args.n), "--seed", str(args.seed)]
    predict = ["predict", "--split", "all", "--methods", args.methods, "--overwrite"]
    for weights in args.weights:
        predict += ["--weights", weights]
    if blendphot(blend + [str(work / "twins"), "-o", str(work / "twin_blends"), "--overwrite"]) != 0:
        return 1
    if blendphot(predict + [str(work / "twin_blends"), "-o", str(work / "twins_results")]) != 0:
        return 1
    real_results = args.real_results
    if real_results is None:
        if blendphot(blend + [args.real, "-o", str(work / "real_blends"), "--overwrite"]) != 0:
            return 1
        if blendphot(predict + [str(work / "real_blends"), "-o", str(work / "real_results")]) != 0:
            return 1
        real_results = work / "real_results.csv"
    real, twin = read_results(real_results), read_results(work / "twins_results.csv")
    for column in ("g1_id", "g2_id", "g1_flux", "g2_flux"):
        if not np.array_equal(np.asarray(real[column]), np.asarray(twin[column])):
            raise SystemExit(f"{real_results}: not the twins' pairs (column {column} differs); "
                             f"give the real blends made with --seed {args.seed} -n {args.n}")

    for method in args.methods.split(","):
        real_gal, real_ratio, radius = ratios(real, method)
        twin_gal, twin_ratio, _ = ratios(twin, method)
        # Galaxies in at least one blend (all of them with the default 2,000 blends), by radius.
        order = sorted((g for g in shares if g in real_gal and g in twin_gal), key=lambda g: shares[g][2])
        print(f"\n{method}: median predicted / true flux per radius bin (galaxy appearances in blends)")
        print("| radius px | n | real | twin |\n| --- | --- | --- | --- |")
        for low, high in zip(RADIUS_BINS[:-1], RADIUS_BINS[1:]):
            inside = (radius > low) & (radius <= high)
            print(f"| {low:.0f}-{high:.0f} | {inside.sum()} | {np.nanmedian(real_ratio[inside]):.3f} | "
                  f"{np.nanmedian(twin_ratio[inside]):.3f} |")
        mape = {name: 100 * np.nanmean(np.abs(r - 1)) for name, r in (("real", real_ratio), ("twin", twin_ratio))}
        print(f"flux MAPE: real {mape['real']:.2f}%, twins {mape['twin']:.2f}%")
        print("\n| id | radius px | Sersic n | share in stamp real / twin | ratio real / twin | "
              "real / twin ratio | share ratio |\n| --- | --- | --- | --- | --- | --- | --- |")
        for galaxy in order[-10:]:
            share_real, share_twin, rad, n = shares[galaxy]
            print(f"| {galaxy} | {rad:.1f} | {n:.2f} | {share_real:.3f} / {share_twin:.3f} | "
                  f"{real_gal[galaxy]:.3f} / {twin_gal[galaxy]:.3f} | {real_gal[galaxy] / twin_gal[galaxy]:.3f} | "
                  f"{share_real / share_twin:.3f} |")
        x = np.array([shares[g][0] / shares[g][1] for g in order])
        y = np.array([real_gal[g] / twin_gal[g] for g in order])
        print(f"all {len(order)} galaxies: Pearson r(real / twin prediction ratio, share ratio) = "
              f"{np.corrcoef(x, y)[0, 1]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
