"""``python -m training compare``: candidate networks against a baseline on the same blends.

The choice rule of docs/training.md, as a command: every model's results
tables (``blendphot predict`` of the same blend folders, one table per folder,
in the same order for every model) are read, the flux MAPE and the
size-balanced MAPE are computed over the galaxies all models measured, and
each model's difference from the first (the baseline) gets a *paired* 95%
bootstrap interval over galaxies: the same resampled galaxies for both
models, so that what the two share (a hard galaxy is hard for both) cancels.
Galaxies of different tables are different galaxies, even where their ids
coincide (two samples number their galaxies alike).

``--sample`` names each table's galaxy sample (native FITS, in table order)
and ``--min-stamp-share S`` keeps only the galaxies whose sample stamp holds
at least the share *S* of their catalogue flux (``stamp_flux / flux``):
there a truth convention that counts light beyond the stamp and one that
does not agree.
"""

from __future__ import annotations

import numpy as np

from napari_blendphot.errors import InputError

from .results import _ape, bootstrap_weights, size_balanced_mape


def parse_model(text: str) -> tuple[str, str, list[str]]:
    """``NAME=METHOD:TABLE[,TABLE...]`` -> (name, method, tables)."""
    name, sep, rest = text.partition("=")
    method, sep2, tables = rest.partition(":")
    if not (sep and sep2 and name and method and tables):
        raise InputError(f"--model {text!r}", "expected NAME=METHOD:RESULTS.csv[,RESULTS.csv...]")
    return name, method, [t for t in tables.split(",") if t]


def _stamp_shares(sample_path) -> dict:
    from astropy.table import Table

    catalog = Table.read(sample_path, hdu="CATALOG")
    for column in ("id", "flux", "stamp_flux"):
        if column not in catalog.colnames:
            raise InputError(sample_path, f"sample catalogue lacks column {column!r}")
    share = np.asarray(catalog["stamp_flux"], np.float64) / np.asarray(catalog["flux"], np.float64)
    return dict(zip(np.asarray(catalog["id"]).tolist(), share.tolist()))


def _columns(table, method: str, source: str) -> dict:
    for column in ("id", "g1_id", "g2_id", "g1_flux", "g2_flux", "g1_rad", "g2_rad",
                   f"g1_flux_{method}", f"g2_flux_{method}"):
        if column not in table.colnames:
            raise InputError(source, f"results table lacks column {column!r}")

    def both(name):
        return np.concatenate([np.asarray(table[f"g1_{name}"]), np.asarray(table[f"g2_{name}"])])

    return {"blend": np.asarray(table["id"]), "galaxy": both("id").astype(np.int64),
            "true": both("flux").astype(np.float64), "radius": both("rad").astype(np.float64),
            "pred": both(f"flux_{method}").astype(np.float64)}


def compare(models, samples=None, min_stamp_share=None, n_resamples: int = 1000, seed: int = 0):
    """Rows (dicts) of the comparison; *models* is a list of (name, method, tables), baseline first."""
    from napari_blendphot.report.results import read_results

    if len(models) < 2:
        raise InputError("--model", "give a baseline and at least one candidate")
    n_tables = len(models[0][2])
    for name, _, tables in models:
        if len(tables) != n_tables:
            raise InputError(f"--model {name}", f"{len(tables)} results tables, the baseline has {n_tables}")
    if min_stamp_share is not None and (samples is None or len(samples) != n_tables):
        raise InputError("--min-stamp-share", f"needs one --sample per results table ({n_tables})")

    per_model = {name: [] for name, _, _ in models}
    keys, radius, true, keep = [], [], [], []
    for k in range(n_tables):
        reference = None
        for name, method, tables in models:
            data = _columns(read_results(tables[k]), method, tables[k])
            if reference is None:
                reference = data
            elif not (np.array_equal(data["blend"], reference["blend"])
                      and np.array_equal(data["galaxy"], reference["galaxy"])):
                raise InputError(tables[k], f"not the same blends as {models[0][2][k]} (the baseline's)")
            per_model[name].append(data["pred"])
        keys.append(k * 10**12 + reference["galaxy"])
        radius.append(reference["radius"])
        true.append(reference["true"])
        if min_stamp_share is None:
            keep.append(np.ones(reference["galaxy"].size, bool))
        else:
            shares = _stamp_shares(samples[k])
            missing = set(reference["galaxy"].tolist()) - set(shares)
            if missing:
                raise InputError(samples[k], f"holds no galaxy {min(missing)} of {tables[k]}: the wrong sample?")
            share = np.array([shares[g] for g in reference["galaxy"].tolist()])
            keep.append(share >= min_stamp_share)
    keys, radius, true, keep = (np.concatenate(a) for a in (keys, radius, true, keep))
    apes = {name: _ape(true, np.concatenate(preds)) for name, preds in per_model.items()}
    # Over the galaxies every model measured (a MAPE's own selection would differ between models).
    common = keep & np.logical_and.reduce([np.isfinite(a) for a in apes.values()])
    weights = bootstrap_weights(keys[common], n_resamples, seed)
    norm = weights.sum(axis=1)
    baseline = models[0][0]
    base = apes[baseline][common]
    rows = []
    for name, method, _ in models:
        ape = apes[name][common]
        diff = (weights @ (ape - base)) / norm
        low, high = np.percentile(diff, [2.5, 97.5])
        rows.append({"model": name, "method": method, "n": int(common.sum()),
                     "n_galaxies": int(np.unique(keys[common]).size),
                     "flux_mape_pct": float(ape.mean()),
                     "size_balanced_mape_pct": size_balanced_mape(radius[common], ape),
                     "diff_pct": float((ape - base).mean()) if name != baseline else 0.0,
                     "diff_low": float(low) if name != baseline else np.nan,
                     "diff_high": float(high) if name != baseline else np.nan})
    return rows


def markdown(rows, baseline: str) -> str:
    lines = [f"| model | flux MAPE % | size-balanced % | against {baseline} [95% CI] |",
             "| --- | --- | --- | --- |"]
    for row in rows:
        against = "" if row["model"] == baseline else \
            f"{row['diff_pct']:+.3f} [{row['diff_low']:+.3f}, {row['diff_high']:+.3f}]"
        lines.append(f"| {row['model']} | {row['flux_mape_pct']:.3f} | {row['size_balanced_mape_pct']:.3f} | {against} |")
    return "\n".join(lines) + f"\n\n{rows[0]['n']} measurements of {rows[0]['n_galaxies']} galaxies.\n"
