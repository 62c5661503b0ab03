"""``blendphot compact``: a predict-only copy of a blend dataset (the blends, the true masks, no galaxy stamps)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compact",
        help="write a predict-only copy of a blend dataset (no single-galaxy stamps)",
        description="Copy a blend dataset without galaxy1.npy and galaxy2.npy: what 'blendphot predict' "
                    "and 'blendphot evaluate' need (the blends, the catalogue with the true fluxes and, "
                    "unless --no-masks, the true masks for the IoU) in about 43%% of the size (29%% "
                    "without masks).  Training needs the full dataset.",
    )
    parser.add_argument("dataset", metavar="BLENDS_DIR", help="blend dataset folder")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder to write")
    parser.add_argument("--split", choices=("test", "train", "all"), default="all",
                        help="keep only this split (default all; ids renumbered, source_id keeps the old ones)")
    parser.add_argument("--no-masks", action="store_true", help="drop the true masks too (no IoU columns then)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT_DIR if it is a blend dataset folder this tool wrote")
    parser.set_defaults(func=run)


def run(args) -> int:
    from napari_blendphot.blend.dataset import BlendDataset, write_predict_only
    from napari_blendphot.cli._common import progress_printer

    source = BlendDataset(args.dataset)
    out = write_predict_only(source, args.output, keep_masks=not args.no_masks, split=args.split,
                             overwrite=args.overwrite, progress=progress_printer("compact"))
    before, after = _folder_bytes(source.path), _folder_bytes(out)
    print(f"wrote {out}: {after / 1e6:.1f} MB ({after / before:.0%} of {before / 1e6:.1f} MB)")
    return 0


def _folder_bytes(folder) -> int:
    return sum(file.stat().st_size for file in folder.iterdir() if file.is_file())
