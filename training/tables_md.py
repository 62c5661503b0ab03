"""Markdown tables of a merged results table (what docs/results.md shows).

Usage: python -m training.tables_md RESULTS.csv
Prints, per method: bias, sigma, outlier fraction and flux MAPE of the central
and companion galaxies over all test blends and over the paper's selection
(galaxies SEP detected), the mean IoU where the method makes masks, and the
flux MAPE per SEP detection case.  The numbers are those of
:func:`napari_blendphot.report.evaluate.summary_table`, the statistics of
``blendphot evaluate``.
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from napari_blendphot.report.evaluate import markdown_tables
    from napari_blendphot.report.results import read_results

    argv = sys.argv[1:] if argv is None else argv
    print(markdown_tables(read_results(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
