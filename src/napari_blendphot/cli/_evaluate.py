"""``blendphot evaluate``: statistics, paper-style figures and a report from a results table."""

from __future__ import annotations

from napari_blendphot.cli._common import add_overwrite


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="report the photometry metrics and figures of a results table",
        description="Compute the paper's metrics (bias, sigma, NMAD, outliers, MAPE, IoU) for every method of "
                    "a results table written by 'blendphot predict' (or the paper's published "
                    "output_catalog.csv) and write summary.csv, report.md, report.html and the figures.",
    )
    parser.add_argument("results", help="results table (.csv or .fits), or the paper's output_catalog.csv")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (created if missing)")
    add_overwrite(parser)
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from napari_blendphot.outputs import check_output_location
    from napari_blendphot.report.evaluate import REPORT_BYTES, evaluate

    # The output location first: before the results table is read and the figures drawn.
    check_output_location(args.output, "folder", REPORT_BYTES, source=f"argument -o {args.output}")
    report = evaluate(args.results, args.output, overwrite=args.overwrite)
    summary = report.summary
    selection = "detected" if "detected" in set(summary["selection"]) else "all"
    width = max(len("method"), *(len(str(label)) for label in summary["label"])) + 2
    print(f"{'method':<{width}}{'galaxy':<11}{'N':>6}{'undet.':>8}{'bias':>8}{'sigma':>7}{'outl.%':>8}{'MAPE%':>8}")
    for row in summary[summary["selection"] == selection]:
        print(f"{row['label']:<{width}}{row['galaxy']:<11}{row['n']:>6}{row['n_undetected']:>8}"
              f"{row['mean_dmag']:>+8.3f}{row['sigma']:>7.3f}{row['outliers_percent']:>8.2f}"
              f"{row['flux_mape_percent']:>8.2f}")
    print(f"(selection '{selection}'; all selections in {report.summary_path})")
    from napari_blendphot.report.evaluate import coverage_tables

    overall = coverage_tables(report.table).get("overall") if report.table is not None else None
    if overall is not None:
        print("flux errors: share of galaxies within 1 err (nominal 68.3%) and k95 err (nominal 95%)")
        for row in overall[overall["galaxy"] == "both"]:
            print(f"  {row['method']:<18} {100 * row['coverage_68']:5.1f}%  {100 * row['coverage_95']:5.1f}%  "
                  f"(n {row['n']})")
    print(f"report: {report.markdown_path} and {report.html_path} ({len(report.figures)} figures)")
    return 0
