"""Field mode (``blendphot measure``): accuracy on synthetic fields, speed, and memory on a huge image.

Run (from the repository root, with the project's environment):

    python benchmarks/bench_field.py                      # all three parts (about 10-15 minutes here)
    python benchmarks/bench_field.py --part accuracy      # 2048x2048 fields of the mock and the real galaxies
    python benchmarks/bench_field.py --part detection     # the figures behind the detection defaults
    python benchmarks/bench_field.py --part speed         # 4096x4096, ~1,000 sources, SEP + blend2flux, < 60 s?
    python benchmarks/bench_field.py --part memory        # 20,000x20,000 image on disk, measured in tiles
    python benchmarks/bench_field.py --quick              # seconds, tiny inputs, SEP only (figures mean nothing)

Parts:

* **accuracy**: for the embedded mock sample and the 51 real galaxies of
  ``../shared/realgal`` (validation only), a 2048x2048 field with 200
  galaxies, a third of them in pairs (paper's rules), a TAN WCS, in counts
  with ``EXPTIME`` 1000 s and ``MAGZERO`` 30.2
  (:func:`napari_blendphot.field.simulate.make_field`), measured by
  :func:`~napari_blendphot.field.measure.measure_field`.  Printed:
  completeness (one-to-one matches within 0.3"), the RA/Dec offsets of the
  matches (median, 90th percentile, share within 0.1", isolated galaxies and
  pair members apart), the magnitude bias of isolated galaxies
  (``mag_total`` against the light in the image and against the total flux,
  and each method), and for pair members each method's flux MAPE and
  median dmag in the field, beside the same methods on exactly the same
  pairs as training-domain blends (:func:`~napari_blendphot.field.simulate.pair_stamps`):
  the stamp-level accuracy the field stage should keep.  A third case bins
  the mock field 2x2 (0.12"/px, 1024x1024): the stamps are resampled.
* **detection**: the figures behind the detection defaults: galaxies found,
  pair members found and extra detections for two deblending contrasts on
  two fields per sample; the background level under isolated galaxies
  (truth 0) with the sources masked by their segments alone or also by 10
  times their isophotal ellipses.
* **speed**: a 4096x4096 field with 1,000 galaxies measured by the CLI
  (``blendphot measure --methods sep,blend2flux``) in a child process; wall
  time, the load average before and after, peak RSS of the CLI process and
  of the inference worker.
* **memory**: a 20,000x20,000 float32 image (1.6 GB) written strip by strip
  (never whole in memory) with 4,000 galaxies, measured by the CLI in tiles
  (SEP only by default; ``--memory-methods sep,blend2flux`` adds the
  network); peak RSS of the CLI process (and of the worker) polled every
  0.2 s and the process's own ``VmHWM``.  The file is deleted afterwards
  unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REALGAL = REPO.parent / "shared" / "realgal"
ARCSEC_PER_PX = 0.06


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# ----------------------------------------------------------------------------- accuracy
def accuracy(samples, n_galaxies: int, size: int, methods, seed: int) -> None:
    """*samples*: (label, GalaxySample, pixel scale); a coarser scale bins the field (size is then smaller)."""
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    from napari_blendphot.field.measure import measure_field
    from napari_blendphot.field.run import MethodRunner
    from napari_blendphot.field.simulate import make_field, match_truth, pair_stamps

    print(f"## accuracy: {size}x{size} fields, {n_galaxies} galaxies, a third in pairs, counts, EXPTIME 1000, "
          f"MAGZERO 30.2, methods {', '.join(methods)} (load {load_average()})")
    with MethodRunner(methods) as runner:
        for name, sample, pixel_scale in samples:
            rebin = int(round(pixel_scale / ARCSEC_PER_PX))
            field = make_field(sample, n_galaxies, shape=(size // rebin, size // rebin), seed=seed, zero_point=30.2,
                               exptime=1000.0, pixel_scale=pixel_scale)
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "field.fits"
                field.write(path)
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    # Networks on isolated galaxies too: their bias there is one of the figures.
                    catalog = measure_field(path, methods, runner=runner, seed=0, networks_on_isolated=True)
                elapsed = time.perf_counter() - start
            truth = field.truth
            index, distance = match_truth(truth, catalog["x"], catalog["y"], 0.3 / pixel_scale)
            found = index >= 0
            pair = np.asarray(truth["pair_id"]) >= 0
            print(f"\n### {name}: {len(truth)} galaxies ({int(pair.sum())} in {int(pair.sum()) // 2} pairs), "
                  f"{len(catalog)} sources catalogued, {elapsed:.1f} s")
            print(f"completeness (match within 0.3\"): {found.sum()}/{len(truth)} = {found.mean():.1%}; "
                  f"isolated {found[~pair].sum()}/{(~pair).sum()}, pair members {found[pair].sum()}/{pair.sum()}; "
                  f"brighter than 23: {found[truth['mag'] < 23].mean():.1%}; "
                  f"catalogue rows matching no galaxy: {len(catalog) - found.sum()}")
            rows = index[found]
            offsets = SkyCoord(truth["ra"][found] * u.deg, truth["dec"][found] * u.deg).separation(
                SkyCoord(np.asarray(catalog["ra"])[rows] * u.deg, np.asarray(catalog["dec"])[rows] * u.deg)).arcsec
            for label, keep in (("all", np.ones(found.sum(), bool)), ("isolated", ~pair[found]),
                                ("pair members", pair[found])):
                part = offsets[keep]
                print(f"RA/Dec offset, {label}: median {np.median(part):.3f}\", 90th percentile "
                      f"{np.percentile(part, 90):.3f}\", within 0.1\": {np.mean(part < 0.1):.1%} (n={len(part)})")
            isolated = found & ~pair
            single = np.asarray(catalog["group_size"])[index[isolated]] == 1
            print(f"isolated galaxies found: {isolated.sum()}, measured as isolated (group of 1): {single.sum()}")
            references = (("mag_total", "mag_in_image", "light in the image"), ("mag_total", "mag", "total flux"))
            references += tuple((f"mag_{m}", "mag", "total flux") for m in methods)
            for column, truth_column, what in references:
                dmag = np.asarray(catalog[column])[index[isolated]] - np.asarray(truth[truth_column])[isolated]
                dmag = dmag[single & np.isfinite(dmag)]
                error = np.std(dmag) / np.sqrt(len(dmag))
                print(f"  isolated {column} vs {what}: median dmag {np.median(dmag):+.4f}, "
                      f"mean {np.mean(dmag):+.4f}, sigma {np.std(dmag):.4f}, standard error {error:.4f} "
                      f"(n={len(dmag)})")
            members, blends, context, true_fluxes = pair_stamps(sample, truth)
            stamp_outputs = runner.run(blends, context)
            report_pairs(catalog, truth, index, members, stamp_outputs, true_fluxes, methods)


def report_pairs(catalog, truth, index, members, stamp_outputs, true_fluxes, methods) -> None:
    """Pair members: each method's flux MAPE in the field beside the same pairs as training-domain stamps.

    Two selections: every member found in the field, and the *resolved* ones
    (the member and its partner both found, and the partner given to the
    methods as the companion), where the field stage should keep the stamp
    accuracy; members whose partner went undetected are measured as single
    sources that hold both galaxies' light.
    """
    partner = np.asarray(truth["partner"]) - 1
    source_id = np.asarray(catalog["source_id"])
    companion_id = np.asarray(catalog["companion_id"])
    found = index[members] >= 0
    resolved = found & (index[partner[members]] >= 0)
    resolved[resolved] = companion_id[index[members[resolved]]] == source_id[index[partner[members[resolved]]]]
    print(f"pair members: {len(members)}, found in the field: {found.sum()}, resolved (partner found and used "
          f"as the companion): {resolved.sum()}")
    for label, keep in (("found", found), ("resolved", resolved)):
        for method in methods:
            field_flux = np.asarray(catalog[f"flux_{method}"], np.float64)[index[members[keep]]]
            truth_flux = np.asarray(truth["flux_image"])[members[keep]]
            ok = np.isfinite(field_flux) & (field_flux > 0)
            ape = np.abs(field_flux[ok] / truth_flux[ok] - 1)
            dmag = -2.5 * np.log10(field_flux[ok] / truth_flux[ok])
            stamp_flux = np.asarray(stamp_outputs[method].fluxes, np.float64)[keep, 0]
            good = np.isfinite(stamp_flux) & (stamp_flux > 0)
            stamp_ape = np.abs(stamp_flux[good] / true_fluxes[keep][good, 0] - 1)
            stamp_dmag = -2.5 * np.log10(stamp_flux[good] / true_fluxes[keep][good, 0])
            print(f"  {label:8s} {method:16s} field: MAPE {100 * ape.mean():6.2f}%  median dmag "
                  f"{np.median(dmag):+.3f}  measured {ok.sum()}/{keep.sum()}   | same pairs as stamps: MAPE "
                  f"{100 * stamp_ape.mean():6.2f}%  median dmag {np.median(stamp_dmag):+.3f}  measured "
                  f"{good.sum()}/{keep.sum()}")


# ----------------------------------------------------------------------------- detection settings
def detection(samples, seeds=(1, 2), contrasts=(0.0005, 0.005)) -> None:
    """The figures behind the detection defaults: deblending contrast, and the background's source mask."""
    import sep

    from napari_blendphot.field import detect as D
    from napari_blendphot.field.simulate import make_field, match_truth

    print(f"\n## detection settings: 2048x2048 fields of 200 galaxies, seeds {list(seeds)} (load {load_average()})")
    for name, sample, _ in samples:
        fields = [make_field(sample, 200, shape=(2048, 2048), seed=seed) for seed in seeds]
        for contrast in contrasts:
            found = members = extra = total = n_members = 0
            for field in fields:
                result = D.detect_region(field.image, D.DetectionSettings(deblend_cont=contrast))
                index, _ = match_truth(field.truth, result.sources["x"], result.sources["y"], 0.3 / ARCSEC_PER_PX)
                pair = np.asarray(field.truth["pair_id"]) >= 0
                found += int((index >= 0).sum())
                members += int((index[pair] >= 0).sum())
                n_members += int(pair.sum())
                extra += len(result.sources["x"]) - int((index >= 0).sum())
                total += len(field.truth)
            print(f"{name}, deblend_cont {contrast}: found {found}/{total}, pair members {members}/{n_members}, "
                  f"detections matching no galaxy {extra}")
        # Sky level under the galaxies (the truth is 0): sources masked by their segments, or by 10x ellipses.
        field = fields[0]
        image = np.ascontiguousarray(field.image, np.float32)
        nodata = np.zeros(image.shape, bool)
        settings = D.DetectionSettings()
        first = D._background(image, nodata, settings)
        objects, segmap = D._extract(image - first.back(), first.rms(), nodata, settings)
        for label, use_ellipses in (("segments only", False), ("segments and 10x ellipses", True)):
            mask = segmap > 0
            if use_ellipses:
                sep.mask_ellipse(mask, objects["x"], objects["y"], objects["a"], objects["b"], objects["theta"],
                                 r=D.BACKGROUND_MASK_SCALE)
            back = D._background(image, mask, settings).back()
            levels = [back[int(y) - 32:int(y) + 33, int(x) - 32:int(x) + 33].mean()
                      for x, y, pair in zip(field.truth["x"], field.truth["y"], field.truth["pair_id"]) if pair < 0]
            level = float(np.mean(levels))
            print(f"{name}: background under isolated galaxies with {label} masked: {level:+.6f} e-/s per pixel "
                  f"(true 0; {level * np.pi * 64**2:.2f} e-/s over a 64-pixel radius)")


# ----------------------------------------------------------------------------- child-process runs
class RssWatch:
    """Poll the peak RSS (MiB) of a process and its descendants (by pid) every *interval* seconds."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.peaks: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                processes = [self.process] + self.process.children(recursive=True)
            except psutil.Error:
                break
            for proc in processes:
                try:
                    rss = proc.memory_info().rss / 2**20
                    key = "cli" if proc.pid == self.process.pid else f"child {proc.pid} ({proc.name()})"
                    self.peaks[key] = max(self.peaks.get(key, 0.0), rss)
                except psutil.Error:
                    continue
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peaks


def run_cli(args, label: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "napari_blendphot.cli", *args]
    before = load_average()
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = RssWatch(process.pid)
    out, err = process.communicate()
    elapsed = time.perf_counter() - start
    peaks = watch.stop()
    if process.returncode:
        print(err[-3000:])
        raise SystemExit(f"{label}: blendphot exited with {process.returncode}")
    summary = [line for line in out.splitlines() if line.strip()]
    print(f"{label}: {elapsed:.1f} s wall (load average before {before}, after {load_average()})")
    for line in summary:
        print(f"  {line}")
    for key, value in sorted(peaks.items()):
        print(f"  peak RSS {key}: {value:.0f} MiB")
    return {"seconds": elapsed, "peaks": peaks}


def speed(size: int, n_galaxies: int, methods, seed: int, extra_args=()) -> None:
    from napari_blendphot.field.simulate import make_field
    from napari_blendphot.sample.embedded import load_embedded_sample

    print(f"\n## speed: {size}x{size} field, {n_galaxies} galaxies (a third in pairs), "
          f"methods {', '.join(methods)}, CLI in a child process, {os.cpu_count()} cores")
    field = make_field(load_embedded_sample(), n_galaxies, shape=(size, size), seed=seed, zero_point=30.2,
                       exptime=1000.0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "field.fits"
        field.write(path)
        del field
        run_cli(["measure", str(path), "--methods", ",".join(methods), "-o", str(Path(folder) / "catalog"),
                 "--no-progress", *extra_args], f"blendphot measure {size}x{size} {' '.join(extra_args)}".strip())


# ----------------------------------------------------------------------------- memory
def write_large_field(path: Path, size: int, n_galaxies: int, seed: int, strip: int = 1024) -> None:
    """A size x size float32 FITS image with isolated mock galaxies and white noise, written strip by strip."""
    from astropy.io import fits

    from napari_blendphot.clean.neighbours import clean_sample
    from napari_blendphot.field.simulate import tan_header
    from napari_blendphot.sample.embedded import load_embedded_sample

    sample = clean_sample(load_embedded_sample(), 0)
    images = np.asarray(sample.images, np.float32)
    rms = float(np.nanmedian(np.asarray(sample.catalog["noise_rms"])))
    rng = np.random.default_rng(seed)
    grid = int(np.ceil(np.sqrt(n_galaxies)))
    step = (size - 256) / grid
    cells = rng.permutation(grid * grid)[:n_galaxies]
    cy = (128 + (cells // grid + 0.5) * step + rng.uniform(-0.2, 0.2, n_galaxies) * step).astype(np.int64)
    cx = (128 + (cells % grid + 0.5) * step + rng.uniform(-0.2, 0.2, n_galaxies) * step).astype(np.int64)
    which = rng.integers(0, len(images), n_galaxies)
    order = np.argsort(cy)
    header = tan_header((size, size))
    header["BITPIX"] = -32
    header["BUNIT"] = "ELECTRONS/S"
    header["MAGZERO"] = 25.96
    primary = fits.PrimaryHDU(np.zeros((1, 1), np.float32))
    primary.header.update(header)
    primary.header["NAXIS1"] = size
    primary.header["NAXIS2"] = size
    text = primary.header.tostring()
    data_bytes = size * size * 4
    with open(path, "wb") as handle:
        handle.write(text.encode("ascii"))
        handle.seek(len(text) + data_bytes + (-data_bytes) % 2880 - 1)
        handle.write(b"\0")
    data = np.memmap(path, dtype=">f4", mode="r+", offset=len(text), shape=(size, size))
    for y0 in range(0, size, strip):
        y1 = min(y0 + strip, size)
        block = rng.normal(0.0, rms, (y1 - y0, size)).astype(np.float32)
        near = order[(cy[order] + 64 > y0) & (cy[order] - 64 < y1)]
        for g in near:
            sy0, sx0 = cy[g] - 64, cx[g] - 64
            a, b = max(sy0, y0), min(sy0 + 128, y1)
            stamp = images[which[g]][a - sy0:b - sy0]
            # Stamp pixels replace the noise (they carry their own), as in make_field.
            block[a - y0:b - y0, sx0:sx0 + 128] = stamp
        data[y0:y1] = block
        data.flush()
    del data


def memory(size: int, n_galaxies: int, methods, seed: int, keep: bool, folder: str | None, extra_args=()) -> None:
    print(f"\n## memory: {size}x{size} float32 image ({size * size * 4 / 2**30:.2f} GiB on disk), {n_galaxies} "
          f"galaxies, methods {', '.join(methods)}, tiles of 2048 (load {load_average()})")
    base = Path(folder or tempfile.mkdtemp(prefix="bench_field_"))
    path = base / f"field_{size}.fits"
    start = time.perf_counter()
    write_large_field(path, size, n_galaxies, seed)
    print(f"wrote {path} in {time.perf_counter() - start:.0f} s")
    try:
        result = run_cli(["measure", str(path), "--methods", ",".join(methods), "-o", str(base / "catalog"),
                          "--no-progress", "--overwrite", *extra_args], f"blendphot measure {size}x{size}")
        cli_peak = result["peaks"].get("cli", float("nan"))
        verdict = "under" if cli_peak < 2048 else "OVER"
        print(f"peak RSS of the measuring process: {cli_peak:.0f} MiB ({verdict} 2 GiB)")
    finally:
        if not keep:
            for item in base.glob("*"):
                item.unlink()
            if folder is None:
                base.rmdir()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("accuracy", "detection", "speed", "memory", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="tiny inputs, SEP only: checks the script runs")
    parser.add_argument("--methods", default="sep,blend2flux,blend2mask2flux", help="methods of the accuracy part")
    parser.add_argument("--memory-methods", default="sep", help="methods of the memory part")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-resampled", dest="resampled", action="store_false",
                        help="skip the accuracy case of a field binned to 0.12\"/px")
    parser.add_argument("--keep", action="store_true", help="keep the 20,000x20,000 image")
    parser.add_argument("--cli-args", default="", help="extra arguments of the measured command in the speed and "
                                                       "memory parts, e.g. '--isolated-networks' or '--tile-size 4096'")
    parser.add_argument("--folder", default=None, help="where to write the big image (default a temporary folder)")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if args.quick:
        methods = ["sep"]
    print(f"# bench_field ({'quick' if args.quick else 'full'}), {os.cpu_count()} cores, load {load_average()}")
    if args.part in ("accuracy", "all"):
        from napari_blendphot.sample.embedded import load_embedded_sample

        mock = load_embedded_sample()
        samples = [("mock (embedded sample)", mock, ARCSEC_PER_PX)]
        if REALGAL.is_dir() and not args.quick:
            from napari_blendphot.sample.io import load_sample

            samples.append(("real galaxies (../shared/realgal, validation only)", load_sample(REALGAL),
                            ARCSEC_PER_PX))
        if args.resampled and not args.quick:
            samples.append(("mock, binned 2x2 to 0.12\"/px (stamps resampled)", mock, 2 * ARCSEC_PER_PX))
        if args.quick:
            accuracy(samples, 20, 512, methods, args.seed)
        else:
            accuracy(samples, 200, 2048, methods, args.seed)
    if args.part == "detection" or (args.part == "all" and not args.quick):
        from napari_blendphot.sample.embedded import load_embedded_sample
        from napari_blendphot.sample.io import load_sample

        detection([("mock", load_embedded_sample(), ARCSEC_PER_PX),
                   ("real", load_sample(REALGAL), ARCSEC_PER_PX)])
    if args.part in ("speed", "all"):
        if args.quick:
            speed(768, 30, ["sep"], args.seed)
        else:
            speed(4096, 1000, ["sep", "blend2flux"], args.seed, args.cli_args.split())
    if args.part in ("memory", "all"):
        memory_methods = [m for m in args.memory_methods.split(",") if m]
        if args.quick:
            memory(1536, 40, ["sep"], args.seed, args.keep, args.folder)
        else:
            memory(20000, 4000, memory_methods, args.seed, args.keep, args.folder, args.cli_args.split())
    print(f"# done, load {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
