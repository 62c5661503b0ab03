"""``blendphot blend``: sample -> neighbour cleaning -> split -> blends, written as a dataset folder."""

from __future__ import annotations

import sys

from napari_blendphot.cli._common import add_overwrite, progress_printer


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "blend",
        help="make a blend dataset (train/test split by galaxy) from a sample of isolated galaxies",
        description="Clean the neighbours out of every stamp, split the galaxies into train and test, "
                    "then draw pairs (|dmag| < 2) and shifts within each side and write blends, "
                    "single-galaxy stamps, true masks and the blend catalogue into a dataset folder "
                    "(Boucaud et al. 2020: 30,000 blends, 20% test). The same seed gives "
                    "byte-identical files.",
    )
    parser.add_argument("sample", metavar="SAMPLE",
                        help="sample: a native .fits file, a CANDELS folder, a folder of cutouts, or 'embedded'")
    parser.add_argument("-n", "--n-blends", type=int, default=30000, dest="n_blends",
                        help="total number of blends (default 30000, the paper's)")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of galaxies and blends in the test split (default 0.2; 0 = train only)")
    parser.add_argument("--n-test", type=int, default=None, dest="n_test",
                        help="number of test blends out of -n (default: n x test-fraction); the paper's "
                             "dataset is -n 30000 --test-fraction 0.2 --n-test 5000")
    parser.add_argument("--seed", type=int, required=True, help="random seed (non-negative integer)")
    parser.add_argument("-o", "--output", required=True, help="output dataset folder")
    parser.add_argument("--rule", choices=("published", "paper-text"), default="published",
                        help="companion shift rule: 'published' (the code that made the published data, "
                             "default) or 'paper-text' (0.5 R to half the stamp)")
    parser.add_argument("--no-clean", action="store_true",
                        help="blend the stamps as they are (the sample is already cleaned)")
    parser.add_argument("--chunk-size", type=int, default=1000,
                        help="blends assembled and written per step (default 1000)")
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    import os
    import time
    from pathlib import Path

    from napari_blendphot.blend.dataset import BlendDataset, check_dataset_output, summarize_blends, write_blend_dataset
    from napari_blendphot.errors import InputError
    from napari_blendphot.sample.galaxy_sample import check_pixel_range
    from napari_blendphot.sample.io import load_sample

    if args.n_blends < 1:
        raise InputError("argument -n", f"must be a positive integer, got {args.n_blends}")
    if args.seed < 0:
        raise InputError("argument --seed", f"must be a non-negative integer, got {args.seed}")
    if not 0.0 <= args.test_fraction < 1.0:
        raise InputError("argument --test-fraction", f"must be in [0, 1), got {args.test_fraction}")
    output = Path(args.output)
    # Fail before the cleaning and blending, not after: location, free space, what would be replaced.
    sample_input = args.sample if os.path.exists(args.sample) else None
    check_dataset_output(output, args.overwrite, args.n_blends, inputs=[sample_input], source=f"argument -o {output}")

    start = time.perf_counter()
    sample = load_sample(args.sample)
    check_pixel_range(sample, args.sample)  # before the cleaning, not after
    print(sample.summary(), file=sys.stderr)
    # Hash the file the stamps came from ('embedded' resolves to a file too); the
    # cleaning that follows is recorded in the sample's provenance.
    sample_path = next((p for p in (args.sample, str(sample.source)) if os.path.isfile(p)), None)
    if not args.no_clean:
        from napari_blendphot.clean.neighbours import clean_sample

        clean_start = time.perf_counter()
        sample = clean_sample(sample, args.seed)
        print(f"cleaned neighbours of {len(sample)} stamps in {time.perf_counter() - clean_start:.1f} s",
              file=sys.stderr)
    path = write_blend_dataset(sample, output, n=args.n_blends, test_fraction=args.test_fraction,
                               n_test=args.n_test, seed=args.seed, rule=args.rule, chunk_size=args.chunk_size,
                               overwrite=args.overwrite, progress=progress_printer("blend"),
                               sample_path=sample_path)
    dataset = BlendDataset(path)
    print(summarize_blends(dataset.catalog))
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    print(f"wrote {path} ({size / 1e9:.2f} GB) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0
