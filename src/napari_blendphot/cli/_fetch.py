"""``blendphot fetch-candels``: download, verify and unpack the real CANDELS sample (Zenodo 2604740)."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    from napari_blendphot.sample.fetch import DATA_DIR_ENV, DEFAULT_URL

    parser = subparsers.add_parser(
        "fetch-candels",
        help="download the real CANDELS F160W sample of the paper (Zenodo 2604740, ~120 MB)",
        description="Download candels-blender-data.tar.gz from Zenodo record 2604740 (DOI "
                    "10.5281/zenodo.2604740), check its SHA-256 when one is given, unpack it safely "
                    "into the cache folder and print a summary of the sample. An archive already in "
                    "the cache folder is reused, so it can be copied there by hand when offline.",
    )
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help=f"cache folder (default: ${DATA_DIR_ENV}, else the OS cache folder "
                             "of napari-blendphot)")
    parser.add_argument("--url", default=DEFAULT_URL, help="download address (default: Zenodo)")
    parser.add_argument("--sha256", default=None, metavar="HASH",
                        help="expected SHA-256 of the archive; a mismatching download is discarded")
    parser.add_argument("--force", action="store_true",
                        help="download and unpack again even if a copy is cached")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from napari_blendphot.sample.fetch import fetch_candels, unpacked_archive_sha256
    from napari_blendphot.sample.io_candels import read_candels

    folder = fetch_candels(cache_dir=args.cache_dir, url=args.url, sha256=args.sha256, force=args.force,
                           progress=not args.no_progress)
    sample = read_candels(folder)
    print(sample.summary())
    print(f"ready: {folder}", file=sys.stderr)
    digest = unpacked_archive_sha256(args.cache_dir)
    if digest and not args.sha256:
        print(f"archive sha256: {digest} (pass it as --sha256 to pin this version)", file=sys.stderr)
    print(f"use it with: blendphot blend {folder} ...", file=sys.stderr)
    return 0
