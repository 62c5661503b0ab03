"""Export the curated sample: accepted galaxies only, type corrections applied.

The result is a native sample file (:func:`~napari_blendphot.sample.io_native.write_native`)
that ``blendphot blend``, ``load_sample`` and the training commands read like
any other sample.  Its provenance says how it was curated: the sidecar's
SHA-256, the reviewers, the counts per decision and the type changes (no
dates, so the same sidecar gives the same file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError

__all__ = ["curated_sample", "export_accepted"]


def curated_sample(sample, store):
    """A :class:`GalaxySample` of the accepted galaxies (in sample order), types corrected.

    The catalogue gains ``galtype_original`` (the type before curation) and
    ``curation_note``.  Raises :class:`InputError` if nothing is accepted.
    """
    from napari_blendphot.provenance import make_provenance

    current = store.current
    ids = np.asarray(sample.ids, dtype=np.int64)
    accepted = np.array([int(i) in current and current[int(i)].decision == "accept" for i in ids], dtype=bool)
    if not accepted.any():
        raise InputError(store.path, "no galaxy is accepted yet: nothing to export")
    subset = sample[np.flatnonzero(accepted)]
    catalog = subset.catalog.copy()
    original = np.asarray(catalog["galtype"]).astype(str)
    records = [current[int(i)] for i in catalog["id"]]
    catalog["galtype_original"] = original
    catalog["galtype"] = np.array([r.galtype or t for r, t in zip(records, original)], dtype=str)
    catalog["curation_note"] = np.array([r.note for r in records], dtype=str)
    changes = {str(r.id): [t, r.galtype] for r, t in zip(records, original) if r.galtype and r.galtype != t}
    counts = store.counts()
    provenance = make_provenance(
        "curate-export",
        inputs={"sidecar": {"path": store.path.name, "sha256": store.sha256()},
                "sample": {"source": store.fingerprint["source"], "ids_sha256": store.fingerprint["ids_sha256"],
                           "images_sha256": store.fingerprint["images_sha256"]}},
        reviewers=store.reviewers(),
        counts={k: int(v) for k, v in counts.items()},
        n_exported=int(accepted.sum()),
        type_changes=changes,
        rejection_reasons=_reason_counts(current.values()),
    )
    provenance["parent"] = sample.provenance
    from napari_blendphot.sample.galaxy_sample import GalaxySample

    return GalaxySample(subset.images, subset.segmaps, catalog, provenance=provenance,
                        source=f"curated {sample.source}")


def _reason_counts(records) -> dict:
    counts: dict[str, int] = {}
    for record in records:
        if record.decision == "reject":
            counts[record.reason] = counts.get(record.reason, 0) + 1
    return dict(sorted(counts.items()))


def export_accepted(sample, store, path, overwrite: bool = False) -> Path:
    """Write the accepted galaxies of *store* as a native sample file at *path*.

    Parameters
    ----------
    sample : GalaxySample
        The curated sample (the one *store* was opened for).
    store : DecisionStore
    path : path-like
        Output ``.fits`` file; an existing native sample file is replaced only with *overwrite*
        (never the curated sample itself, never a file of another kind).
    """
    from napari_blendphot.sample.io_native import check_native_output, write_native

    path = Path(path)
    if path.resolve() == Path(store.path).resolve():
        raise InputError(path, "is the curation sidecar itself", "choose another output file")
    source = getattr(sample, "source", None)
    check_native_output(path, overwrite, inputs=[source] if source and Path(str(source)).is_file() else ())
    return write_native(curated_sample(sample, store), path, overwrite=overwrite)
