"""``blendphot measure``: measure the blended galaxies of a field image (field mode).

Detects the sources (SEP) or takes a catalogue, groups blends, cuts a
training-domain stamp per source, runs the methods and writes the catalogue
(FITS + CSV + JSON, or ECSV).  See ``docs/field.md``.
"""

from __future__ import annotations

import sys



def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "measure",
        help="measure the galaxies of a field image (FITS): detect or take a catalogue, deblend, write a catalogue",
        description="Field mode: read a FITS image (any size: large images are read in tiles) with its WCS and "
                    "photometric calibration, detect sources with SEP (or take a catalogue), group blends, cut a "
                    "128x128 stamp centred on each source, bring it to the networks' training domain (units, "
                    "zero point 25.96, 0.06\"/px), run the methods and write a catalogue with positions, fluxes, "
                    "magnitudes (at the image's zero point) and flags. See docs/field.md.",
    )
    parser.add_argument("image", metavar="IMAGE.fits", help="FITS image (2-D, or a 3-D cube with --plane)")
    parser.add_argument("-o", "--output", required=True, metavar="CATALOG",
                        help="CATALOG[.fits|.csv]: writes CATALOG.fits, CATALOG.csv and CATALOG.json "
                             "(the CSV's metadata); CATALOG.ecsv: one ECSV file")
    parser.add_argument("--catalog", metavar="CAT", default=None,
                        help="measure these positions instead of SEP's detections: FITS, CSV or ECSV table with "
                             "ra/dec (degrees) or x/y (0-based pixels) or x_image/y_image (1-based)")
    from napari_blendphot.deblend.registry import default_methods

    defaults = ",".join(default_methods())
    parser.add_argument("--methods", default=defaults,
                        help=f"comma-separated deblending methods (default {defaults}, as for predict)")
    parser.add_argument("--zeropoint", type=float, default=None, metavar="ZP",
                        help="AB zero point of the pixel values as stored (overrides the header)")
    parser.add_argument("--pixel-scale", type=float, default=None, metavar="ARCSEC",
                        help="arcsec per pixel (overrides the WCS)")
    parser.add_argument("--plane", type=int, default=None, metavar="K",
                        help="plane of a 3-D cube, 0-based (default 0)")
    parser.add_argument("--hdu", type=int, default=None, metavar="N",
                        help="HDU of the image (default the first 2-D or 3-D image)")
    parser.add_argument("--weights", action="append", default=[], metavar="METHOD=PATH",
                        help="weights of a network (repeatable; default the shipped model)")
    parser.add_argument("--precision", choices=("float32", "bfloat16", "auto"), default="float32",
                        help="compute precision of the networks (default float32)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="SEP detection threshold in background rms (default 3)")
    parser.add_argument("--deblend-cont", type=float, default=None,
                        help="SEP deblending contrast (default 0.0005; larger splits fewer blends and fewer knots)")
    parser.add_argument("--background", choices=("auto", "map", "none"), default="auto",
                        help="subtract SEP's background map from the measured pixels: auto (only when the sky "
                             "is not already subtracted), map (always) or none")
    parser.add_argument("--tile-size", type=int, default=None,
                        help="images larger than this are measured in tiles of this many pixels (default 2048)")
    parser.add_argument("--isolated-networks", action="store_true",
                        help="also run the pair-trained networks on isolated sources (they are biased there, "
                             "+0.26 to +0.32 mag for blend2flux on the synthetic fields; flux_total measures "
                             "isolated sources)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise that fills cleaned/padded pixels")
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"), default=None,
                        help="Keras backend of the worker (default $KERAS_BACKEND or tensorflow)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (never done without this option)")
    parser.set_defaults(func=run)


def _progress_bar(disable: bool):
    from tqdm import tqdm

    bar = tqdm(total=0, unit="src", desc="measure", disable=disable, file=sys.stderr, dynamic_ncols=True)

    def progress(done, total, text=""):
        if total != bar.total:
            bar.total = total
        bar.set_postfix_str(text, refresh=False)
        bar.update(done - bar.n)

    return bar, progress


def run(args) -> int:
    import dataclasses
    import time
    import warnings

    from napari_blendphot.cli._predict import parse_weights
    from napari_blendphot.deblend.registry import parse_method_list
    from napari_blendphot.errors import InputError
    from napari_blendphot.field.detect import DetectionSettings
    from napari_blendphot.field.image import FieldWarning, open_field
    from napari_blendphot.field.measure import DEFAULT_TILE_SIZE, measure_field
    from napari_blendphot.field.output import check_outputs, write_catalog
    from napari_blendphot.prediction import method_options_for

    methods = parse_method_list(args.methods)
    weights = parse_weights(args.weights)
    check_outputs(args.output, args.overwrite)  # before any work
    settings = DetectionSettings(background=args.background)
    changes = {k: v for k, v in (("threshold", args.threshold), ("deblend_cont", args.deblend_cont)) if v is not None}
    if changes:
        settings = dataclasses.replace(settings, **changes)
    tile_size = DEFAULT_TILE_SIZE if args.tile_size is None else args.tile_size
    if tile_size < 512:
        raise InputError("argument --tile-size", f"{tile_size} is too small (at least 512 pixels)")
    # The options of `blendphot predict`: weights checked now, precision for the methods that take one.
    options = method_options_for(methods, weights, args.precision)

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FieldWarning)
        image = open_field(args.image, hdu=args.hdu, plane=args.plane, zero_point=args.zeropoint,
                           pixel_scale=args.pixel_scale)
    _print_warnings(caught)
    calibration = image.calibration
    print(f"measure: {image.name} {image.shape[1]}x{image.shape[0]}"
          f"{'' if image.plane is None else f' plane {image.plane}'}, zero point {calibration.zero_point:.4f} "
          f"({calibration.zero_point_source}), {calibration.pixel_scale:.4g}\"/px ({calibration.pixel_scale_source}), "
          f"methods {', '.join(methods)}", file=sys.stderr)
    bar, progress = _progress_bar(args.no_progress)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FieldWarning)
            table = measure_field(image, methods, args.catalog, settings=settings, method_options=options,
                                  seed=args.seed, tile_size=tile_size, progress=progress, backend=args.backend,
                                  networks_on_isolated=args.isolated_networks)
    finally:
        bar.close()
        image.close()
    _print_warnings(caught)
    written = write_catalog(table, args.output, overwrite=args.overwrite)
    _print_summary(table, methods, time.perf_counter() - start)
    print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def _print_warnings(caught) -> None:
    from napari_blendphot.field.image import FieldWarning

    seen = set()
    for item in caught:
        if issubclass(item.category, FieldWarning):
            text = str(item.message)
            if text not in seen:
                seen.add(text)
                print(f"blendphot measure: note: {text}", file=sys.stderr)


def _print_summary(table, methods, elapsed: float) -> None:
    import numpy as np

    n = len(table)
    measured = np.asarray(table["group_size"]) > 0
    blended = np.asarray(table["group_size"]) > 1
    print(f"{n} sources ({int(measured.sum())} measured, {int(blended.sum())} in blend groups) in {elapsed:.1f} s")
    for name in methods:
        flux = np.asarray(table[f"flux_{name}"], np.float64)
        print(f"  {name}: flux for {int(np.isfinite(flux).sum())}/{int(measured.sum())}")
