"""``blendphot curate-export``: the accepted galaxies of a curation sidecar as a new sample file."""

from __future__ import annotations

from napari_blendphot.cli._common import add_overwrite


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "curate-export",
        help="write the galaxies accepted in a curation sidecar (napari Curation widget) as a sample file",
        description="Read SAMPLE and the decisions of its curation SIDECAR (a .curation.jsonl file made by "
                    "the napari Curation widget or napari_blendphot.curation.DecisionStore), and write "
                    "the accepted galaxies, with their corrected morphological types, as a native sample "
                    "file that 'blendphot blend' reads. The file's provenance records the sidecar's "
                    "SHA-256, the reviewers and the counts per decision.",
    )
    parser.add_argument("sample", metavar="SAMPLE",
                        help="the curated sample: a native .fits file, a CANDELS folder, cutouts, or 'embedded'")
    parser.add_argument("sidecar", metavar="SIDECAR", help="its curation sidecar (.curation.jsonl)")
    parser.add_argument("-o", "--output", required=True, help="output sample file (.fits)")
    parser.add_argument("--repair", action="store_true",
                        help="repair a damaged sidecar first (the damaged file is kept as a timestamped .bak)")
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from napari_blendphot.curation import DecisionStore, export_accepted
    from napari_blendphot.errors import InputError
    from napari_blendphot.sample.io import load_sample
    from napari_blendphot.sample.io_native import check_native_output

    sidecar = Path(args.sidecar)
    if not sidecar.is_file():
        # DecisionStore would start a new, empty sidecar: here that is a typo, not a wish.
        raise InputError(sidecar, "curation sidecar not found")
    check_native_output(args.output, args.overwrite, inputs=[args.sample, sidecar], source=f"argument -o {args.output}")
    sample = load_sample(args.sample)
    store = DecisionStore(sidecar, sample, repair=args.repair)
    if store.backup_path is not None:
        print(f"repaired {sidecar} ({len(store.repair_problems)} damaged line(s) dropped); "
              f"the damaged file is kept as {store.backup_path}")
    out = export_accepted(sample, store, args.output, overwrite=args.overwrite)
    counts = store.counts()
    print(f"wrote {counts['accept']} accepted galaxies of {len(sample)} to {out} "
          f"(rejected {counts['reject']}, skipped {counts['skip']}, never seen {counts['undecided']}; "
          f"reviewers: {', '.join(store.reviewers()) or 'none'})")
    return 0
