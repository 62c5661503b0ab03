"""``blendphot make-sample``: draw a CANDELS-like mock sample with GalSim and write it to FITS."""

from __future__ import annotations

import sys

from napari_blendphot.cli._common import add_overwrite, progress_printer


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-sample",
        help="draw a CANDELS-like mock sample of isolated galaxies (GalSim) into a native FITS file",
        description="Draw N CANDELS-like F160W stamps (128x128, 0.06\"/px) with GalSim: magnitudes, radii "
                    "and morphological mix of the paper's sample, HST PSF, CANDELS-depth noise, faint "
                    "neighbours and SExtractor-like segmentation maps; write them as a native sample file. "
                    "The same seed gives byte-identical files.",
    )
    parser.add_argument("-n", "--n-galaxies", type=int, default=2000, dest="n_galaxies",
                        help="number of galaxies (default 2000)")
    parser.add_argument("--seed", type=int, required=True, help="random seed (non-negative integer)")
    parser.add_argument("-o", "--output", required=True, help="output FITS file")
    parser.add_argument("--quantize", type=float, default=None, metavar="Q",
                        help="store images RICE-compressed, quantised to (noise rms)/Q (e.g. 16); "
                             "default lossless")
    parser.add_argument("--neighbour-fraction", type=float, default=0.35,
                        help="share of stamps with faint neighbours (default 0.35)")
    parser.add_argument("--noise-rms", type=float, default=None,
                        help="background rms per pixel in e-/s (default: CANDELS depth, 0.0106)")
    parser.add_argument("--no-source-noise", action="store_true",
                        help="leave out the Poisson noise of the galaxies (background noise only)")
    parser.add_argument("--mock-version", type=int, choices=(1, 2), default=2,
                        help="2 (default): structured galaxies (arms, bars, clumps, dust lanes, tidal features), "
                             "PSF variations and correlated noise; 1: the earlier smooth model, byte-identical "
                             "for the same seed")
    parser.add_argument("--population", choices=("candels", "broad", "wide"), default="candels",
                        help="candels (default): the paper's magnitudes, radii and types; broad (v2 only, for "
                             "training): more large and faint galaxies (radii to 48 px, mag 18-23.5) and more "
                             "frequent, stronger features; wide (v2 only, for training): broad with large "
                             "galaxies as common as small ones (radii to 56 px), low-surface-brightness disks "
                             "and compact, concentrated bulges")
    parser.add_argument("--models-out", default=None, metavar="FILE.npz",
                        help="also write the noiseless models (central galaxy alone, neighbours alone) and "
                             "each galaxy's noise parameters to this .npz, for napari_blendphot.sample."
                             "mock_noise.add_mock_noise")
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    import time

    from napari_blendphot.errors import InputError, check_output_path
    from napari_blendphot.sample.io_native import check_native_output, write_native
    from napari_blendphot.sample.mock import DEFAULT_EXPOSURE_TIME, make_mock_sample

    if args.n_galaxies < 1:
        raise InputError("argument -n", f"must be a positive integer, got {args.n_galaxies}")
    if args.quantize is not None and not args.quantize > 0:
        raise InputError("argument --quantize", f"must be a positive number, got {args.quantize}")
    if args.population != "candels" and args.mock_version == 1:
        raise InputError("argument --population", "version 1 has only the candels population",
                         "use --mock-version 2")
    if args.models_out is not None and not str(args.models_out).endswith(".npz"):
        raise InputError(args.models_out, "the models file must end in .npz")
    # Fail before minutes of drawing, not after: location, free space, what would be replaced.
    check_native_output(args.output, args.overwrite, args.n_galaxies, source=f"argument -o {args.output}")
    if args.models_out is not None:
        check_output_path(args.models_out, args.overwrite)

    start = time.perf_counter()
    result = make_mock_sample(
        args.n_galaxies, args.seed, progress=progress_printer("make-sample"),
        neighbour_fraction=args.neighbour_fraction, noise_rms=args.noise_rms,
        exposure_time=None if args.no_source_noise else DEFAULT_EXPOSURE_TIME,
        mock_version=args.mock_version, population=args.population, keep_models=args.models_out is not None,
    )
    sample, models = result if args.models_out is not None else (result, None)
    elapsed = time.perf_counter() - start
    path = write_native(sample, args.output, overwrite=args.overwrite, quantize=args.quantize)
    if models is not None:
        from napari_blendphot.sample.mock_noise import write_models

        models_path = write_models(models, args.models_out, sample.provenance)
        print(f"wrote {models_path} ({models_path.stat().st_size / 1e6:.1f} MB): noiseless models and noise "
              "parameters", file=sys.stderr)
    print(sample.summary())
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {elapsed:.1f} s "
          f"({1000 * elapsed / len(sample):.1f} ms per stamp)", file=sys.stderr)
    return 0
