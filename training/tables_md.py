"""Markdown tables of a merged results table (used to write docs/results.md).

Usage: python -m training.tables_md RESULTS.csv [--paper]
Prints, per method: bias, sigma, outlier fraction and flux MAPE of the central
and companion galaxies over all test blends and over the paper's selection
(galaxies SEP detected), the mean IoU where the method makes masks, and the
flux MAPE per SEP detection case.
"""

from __future__ import annotations

import sys

import numpy as np


def _fmt(value, pattern):
    return "" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, pattern)


def method_rows(table, selection_column: str = "detection_sep"):
    from napari_blendphot.constants import OUTLIER_DMAG, ZERO_POINT
    from napari_blendphot.report.results import methods_in
    from napari_blendphot.sample.galaxy_sample import flux_to_mag

    cases = np.asarray(table[selection_column]) if selection_column in table.colnames else None
    lines = ["| method | galaxy | blends | N measured | bias dmag | sigma dmag | outliers | flux MAPE | mean IoU |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method in methods_in(table):
        zp = float((table.meta.get("zero_points") or {}).get(method, ZERO_POINT))
        for g, name, wanted in (("g1", "central", (0, 2)), ("g2", "companion", (1, 2))):
            for label, keep in (("all", np.ones(len(table), bool)),
                                ("SEP-detected", np.isin(cases, wanted) if cases is not None else None)):
                if keep is None:
                    continue
                true = np.asarray(table[f"{g}_flux"], np.float64)[keep]
                pred = np.asarray(table[f"{g}_flux_{method}"], np.float64)[keep]
                found = np.isfinite(pred) & (pred > 0)
                dmag = flux_to_mag(pred[found], zp) - flux_to_mag(true[found], ZERO_POINT)
                mape = 100 * np.mean(np.abs(pred[np.isfinite(pred)] - true[np.isfinite(pred)]) / true[np.isfinite(pred)])
                iou = ""
                if f"{g}_iou_{method}" in table.colnames:
                    iou = _fmt(float(np.nanmean(np.asarray(table[f"{g}_iou_{method}"], np.float64)[keep])), ".3f")
                lines.append(f"| {method} | {name} ({label}) | {int(keep.sum())} | {int(found.sum())} | "
                             f"{dmag.mean():+.3f} | {dmag.std():.3f} | {100 * np.mean(np.abs(dmag) > OUTLIER_DMAG):.2f}% | "
                             f"{mape:.2f}% | {iou} |")
    return "\n".join(lines)


def case_rows(table):
    from training.evaluate import detection_case_table

    lines = ["| method | SEP detection case | blends | central MAPE | companion MAPE |", "| --- | --- | --- | --- | --- |"]
    names = {-1: "-1 none assigned", 0: "0 only central", 1: "1 only companion", 2: "2 both", 3: "3 more than two"}
    for row in detection_case_table(table):
        lines.append(f"| {row['method']} | {names.get(row['case'], row['case'])} | {row['n_blends']} | "
                     f"{_fmt(row['central_flux_mape_pct'], '.2f')}% ({row['central_n']}) | "
                     f"{_fmt(row['companion_flux_mape_pct'], '.2f')}% ({row['companion_n']}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from napari_blendphot.report.results import read_results

    argv = sys.argv[1:] if argv is None else argv
    table = read_results(argv[0])
    print(method_rows(table))
    print()
    print(case_rows(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
