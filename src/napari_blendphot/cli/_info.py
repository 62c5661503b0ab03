"""``blendphot info``: describe a sample (any readable kind) or a blend dataset folder."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="summarise a sample (native .fits, CANDELS folder, cutouts, 'embedded') or a blend dataset",
        description="Print a short summary of PATH: for a sample of isolated galaxies, the number of "
                    "galaxies, morphological types, magnitude and radius ranges; for a blend dataset "
                    "folder (with blends.npy), the blend counts per split and the pair statistics.",
    )
    parser.add_argument("path", metavar="PATH",
                        help="a native sample .fits file, a CANDELS folder, a folder of FITS cutouts, "
                             "'embedded', or a blend dataset folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    print(describe(args.path))
    return 0


def describe(path) -> str:
    """The summary text ``blendphot info`` prints for *path*."""
    from pathlib import Path

    import stat

    folder = Path(path)
    try:
        mode = folder.stat().st_mode
    except OSError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        from napari_blendphot.errors import InputError

        raise InputError(path, "is neither a file nor a folder (a pipe, socket or device)",
                         "give a sample .fits file, a CANDELS folder, a folder of cutouts or a blend dataset")
    if folder.is_dir() and (folder / "blends.npy").is_file():
        return _describe_blends(folder)
    from napari_blendphot.sample.io import load_sample

    sample = load_sample(path)
    lines = [sample.summary()]
    step = sample.provenance.get("step") if isinstance(sample.provenance, dict) else None
    if step:
        lines.append(f"made by: {step}" + (f" (seed {sample.provenance['seed']})"
                                           if sample.provenance.get("seed") is not None else ""))
    extra = [c for c in sample.catalog.colnames if c not in ("id", "mag", "flux", "radius", "z", "galtype")]
    if extra:
        lines.append("extra columns: " + ", ".join(extra))
    return "\n".join(lines)


def _describe_blends(folder) -> str:
    try:
        from napari_blendphot.blend.dataset import BlendDataset, summarize_blends
    except ImportError:
        BlendDataset = None
    if BlendDataset is not None:
        dataset = BlendDataset(folder)
        others = [name for name in ("catalog.csv", "catalog.fits")
                  if name != dataset.catalog_path.name and (folder / name).is_file()]
        read = f"catalogue read from {dataset.catalog_path.name}" + (f" ({others[0]} agrees)" if others else "")
        if dataset.layout == "predict-only":  # 'blendphot compact': no galaxy stamps
            read += ", predict-only: no galaxy stamps" + ("" if dataset.masks is not None else ", no true masks")
        return f"blend dataset {folder} ({read})\n" + summarize_blends(dataset.catalog)
    # Without the dataset reader: counts from the catalogue alone.
    from napari_blendphot.tables import read_table

    catalog = read_table(folder / "catalog.csv")
    lines = [f"blend dataset {folder}: {len(catalog)} blends"]
    if "split" in catalog.colnames:
        import numpy as np

        splits, counts = np.unique(np.asarray(catalog["split"]).astype(str), return_counts=True)
        lines.append(", ".join(f"{s} {n}" for s, n in zip(splits, counts)))
    return "\n".join(lines)
