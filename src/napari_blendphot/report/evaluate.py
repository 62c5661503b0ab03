"""The evaluation report: summary statistics, paper-style figures, Markdown and HTML.

``evaluate(results, out_dir)`` writes into *out_dir*:

- ``summary.csv``: one row per method x galaxy x selection (N, detected,
  undetected, mean/median dmag, sigma, NMAD, outliers %, flux MAPE %, mag
  MAPE %, mean IoU);
- ``fig_magnitudes_central.png``, ``fig_magnitudes_companion.png`` (paper
  Figs 5-6), ``fig_dmag_vs_pair_dmag.png`` (Fig 7), ``fig_binned_summary.png``
  (Fig 8), ``fig_by_morphology.png`` (Fig 9, when types are known),
  ``fig_iou.png`` (Fig 12, when IoU columns exist), ``fig_dmag_histograms.png``;
- ``report.md`` and ``report.html`` (figures linked by relative path);
- ``report_manifest.json``: the files above (what a later ``--overwrite`` may
  replace, and the only files it ever deletes).

The output is deterministic: the same results table gives the same bytes
(no dates; PNGs saved without a software/date stamp).
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError
from napari_blendphot.metrics import binned
from napari_blendphot.metrics.masks import mean_iou
from napari_blendphot.metrics.photometry import photometry_stats
from napari_blendphot.metrics.selection import (
    GALAXIES,
    available_selections,
    detection_case_name,
    detection_counts,
    reference_detection_column,
)

__all__ = ["EvaluationReport", "SUMMARY_COLUMNS", "detection_case_summary", "evaluate", "markdown_tables",
           "method_summary", "summary_table"]

#: Columns of ``summary.csv``.
SUMMARY_COLUMNS = ("method", "label", "galaxy", "selection", "n", "n_detected", "n_undetected", "mean_dmag",
                   "median_dmag", "sigma", "nmad", "outliers_percent", "flux_mape_percent", "mag_mape_percent",
                   "mean_iou")
_GALAXY_ROWS = (*GALAXIES, "both")


@dataclass
class EvaluationReport:
    """What :func:`evaluate` computed and wrote (paths are None when nothing was written)."""

    out_dir: Path | None
    summary: object  # astropy.table.Table
    summary_path: Path | None = None
    markdown_path: Path | None = None
    html_path: Path | None = None
    figures: dict = field(default_factory=dict)  # {name: Path}
    manifest_path: Path | None = None
    table: object = None  # the results table evaluated

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.summary_path, self.markdown_path, self.html_path, *self.figures.values(),
                            self.manifest_path) if p]


def summary_table(table):
    """Statistics per method x galaxy (central, companion, both) x selection, as an astropy Table."""
    from astropy.table import Table

    from napari_blendphot.report.results import method_label, methods_in

    rows = []
    for method in methods_in(table):
        for selection in available_selections(table):
            for galaxy in _GALAXY_ROWS:
                data = binned.galaxy_measurements(table, method, galaxy, selection)
                stats = photometry_stats(data["true_flux"], data["pred_flux"],
                                         zp_pred=binned.zero_point_of(table, method),
                                         source=f"method {method}, {galaxy}, {selection}")
                iou = mean_iou(data["iou"]) if "iou" in data.colnames else float("nan")
                rows.append((method, method_label(table, method), galaxy, selection, stats.n, stats.n_detected,
                             stats.n_undetected, stats.mean_dmag, stats.median_dmag, stats.sigma, stats.nmad,
                             stats.outlier_percent, stats.flux_mape, stats.mag_mape, iou))
    if not rows:
        raise InputError("results table", "no methods to evaluate")
    return Table(rows=rows, names=SUMMARY_COLUMNS)


def _none_if_nan(value):
    value = float(value)
    return value if np.isfinite(value) else None


def method_summary(table, method: str, summary=None) -> dict:
    """One method's statistics over every blend (selection "all") as a JSON-ready dict.

    ``{"flux_mape_pct", "mean_iou" (mask-making methods), "central": {...},
    "companion": {...}}`` with, per galaxy, ``n`` (galaxies measured),
    ``flux_mape_pct``, ``bias_dmag``, ``sigma_dmag``, ``outlier_fraction`` and
    ``mean_iou``; None where nothing was measured.  The numbers are
    :func:`summary_table`'s (give it as *summary* to save recomputing).
    """
    summary = summary_table(table) if summary is None else summary
    rows = {str(row["galaxy"]): row for row in summary
            if row["method"] == method and row["selection"] == "all"}
    if not rows:
        raise InputError("results table", f"no method {method!r}")
    out = {"flux_mape_pct": _none_if_nan(rows["both"]["flux_mape_percent"])}
    if np.isfinite(rows["both"]["mean_iou"]):
        out["mean_iou"] = float(rows["both"]["mean_iou"])
    for galaxy in GALAXIES:
        row = rows[galaxy]
        out[galaxy] = {"n": int(row["n_detected"]), "flux_mape_pct": _none_if_nan(row["flux_mape_percent"]),
                       "bias_dmag": _none_if_nan(row["mean_dmag"]), "sigma_dmag": _none_if_nan(row["sigma"]),
                       "outlier_fraction": _none_if_nan(row["outliers_percent"] / 100.0)}
        if np.isfinite(row["mean_iou"]):
            out[galaxy]["mean_iou"] = float(row["mean_iou"])
    return out


def detection_case_summary(table, detection_column: str = "detection_sep"):
    """Flux MAPE of every method per detection case of *detection_column*, central and companion.

    Cases (SPEC §5): 0 only the central found, 1 only the companion, 2 both,
    3 more than two sources; -1 nothing assigned.  Each method is scored on the
    galaxies it measured in the blends of a case (the networks: all of them).
    Returns an astropy Table: ``method, case, n_blends, central_n,
    central_flux_mape_pct, companion_n, companion_flux_mape_pct``.
    """
    from astropy.table import Table

    from napari_blendphot.report.results import methods_in

    if detection_column not in table.colnames:
        raise InputError("results table", f"has no column {detection_column!r}")
    cases = np.asarray(table[detection_column]).astype(np.int64)
    rows = []
    for method in methods_in(table):
        for case in sorted(set(cases.tolist())):
            keep = cases == case
            row = [method, int(case), int(keep.sum())]
            for galaxy in GALAXIES:
                data = binned.galaxy_measurements(table[keep], method, galaxy, "all")
                stats = photometry_stats(data["true_flux"], data["pred_flux"], zp_pred=binned.zero_point_of(table, method),
                                         source=f"method {method}, {galaxy}, case {case}")
                row += [stats.n_detected, stats.flux_mape]
            rows.append(tuple(row))
    return Table(rows=rows or None, names=("method", "case", "n_blends", "central_n", "central_flux_mape_pct",
                                           "companion_n", "companion_flux_mape_pct"),
                 dtype=(str, int, int, int, float, int, float))


def markdown_tables(table, detection_column: str | None = None) -> str:
    """The Markdown tables of docs/results.md: per method and galaxy, then MAPE per detection case.

    Every number comes from :func:`summary_table` and :func:`detection_case_summary`;
    *detection_column* defaults to the table's reference detection column
    (``detection_sextractor`` in the paper's catalogue, else ``detection_sep``).
    """
    from napari_blendphot.report.results import method_label, methods_in

    detection_column = detection_column or reference_detection_column(table)

    summary = summary_table(table)
    selected = {"all": "all", "detected": "SEP-detected"}
    lines = ["| method | galaxy | blends | N measured | bias dmag | sigma dmag | outliers | flux MAPE | mean IoU |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method in methods_in(table):
        for galaxy in GALAXIES:
            for selection in ("all", "detected"):
                rows = summary[(summary["method"] == method) & (summary["galaxy"] == galaxy)
                               & (summary["selection"] == selection)]
                if len(rows) == 0:
                    continue
                row = rows[0]
                lines.append(f"| {method_label(table, method)} | {galaxy} ({selected[selection]}) | {row['n']} | "
                             f"{row['n_detected']} | {_fmt(row['mean_dmag'], '+.3f')} | {_fmt(row['sigma'], '.3f')} | "
                             f"{_fmt(row['outliers_percent'], '.2f')}% | {_fmt(row['flux_mape_percent'], '.2f')}% | "
                             f"{_fmt(row['mean_iou'], '.3f', empty='')} |")
    if detection_column is not None:
        lines += ["", "| method | detection case | blends | central MAPE | companion MAPE |",
                  "| --- | --- | --- | --- | --- |"]
        for row in detection_case_summary(table, detection_column):
            cells = [f"{_fmt(row[f'{g}_flux_mape_pct'], '.2f', empty='')}% ({row[f'{g}_n']})".lstrip("%")
                     for g in GALAXIES]
            lines.append(f"| {method_label(table, row['method'])} | {row['case']} {detection_case_name(row['case'])} | "
                         f"{row['n_blends']} | {cells[0].strip()} | {cells[1].strip()} |")
    return "\n".join(lines)


def _figure_jobs(table):
    from napari_blendphot.report import figures

    jobs = [("fig_magnitudes_central", "Predicted vs true magnitude, central galaxy (paper Fig. 5)",
             lambda: figures.figure_magnitudes(table, "central")),
            ("fig_magnitudes_companion", "Predicted vs true magnitude, companion galaxy (paper Fig. 6)",
             lambda: figures.figure_magnitudes(table, "companion")),
            ("fig_dmag_histograms", "dmag distributions of all methods, both galaxies",
             lambda: _histogram_figure(table)),
            ("fig_dmag_vs_pair_dmag", "dmag vs pair magnitude difference (paper Fig. 7)",
             lambda: figures.figure_dmag_vs_pair_dmag(table)),
            ("fig_binned_summary", "Bias and scatter vs pair magnitude difference (paper Fig. 8)",
             lambda: figures.figure_binned_summary(table))]
    if "g1_type" in table.colnames and "g2_type" in table.colnames:
        jobs.append(("fig_by_morphology", "Bias and scatter per morphology (paper Fig. 9)",
                     lambda: figures.figure_by_morphology(table)))
    if figures.iou_methods(table):
        jobs.append(("fig_iou", "Segmentation IoU (paper Fig. 12)", lambda: figures.figure_iou(table)))
    if figures.error_methods(table):
        jobs.append(("fig_error_calibration", "Flux errors: observed against nominal coverage",
                     lambda: figures.figure_error_calibration(table)))
        jobs.append(("fig_error_z", "Flux errors: (flux - true) / err against the unit normal",
                     lambda: figures.figure_error_z(table)))
    return jobs


def coverage_tables(table) -> dict:
    """``{"overall" | "pair_dmag" | "mag": astropy Table}`` of the flux errors' coverage, every method with errors.

    Columns: ``method``, ``galaxy``, ``bin_low``, ``bin_high``, ``n``,
    ``coverage_68`` (within 1 err), ``coverage_95`` (within k95 err: the
    method's calibrated 95% multiple, 1.96 if it has none), ``coverage_95_gauss``
    (within 1.96 err), ``k95``, ``median_abs_z``, ``spearman``.
    """
    from astropy.table import vstack

    from napari_blendphot.metrics.calibration import coverage, interval_multiples
    from napari_blendphot.report.figures import error_methods

    out = {}
    for by in (None, "pair_dmag", "mag"):
        parts = []
        for method in error_methods(table):
            part = coverage(table, method, by=by)
            part.meta = {}
            multiples = interval_multiples(table, method)
            part.add_column([method] * len(part), name="method", index=0)
            part["k95"] = [multiples.get(str(g), float("nan")) if str(g) != "both" else float("nan")
                           for g in part["galaxy"]]
            parts.append(part)
        if parts:
            out[by or "overall"] = vstack(parts, metadata_conflicts="silent")
    return out


def _histogram_figure(table):
    from matplotlib.figure import Figure

    from napari_blendphot.report.figures import plot_dmag_histograms

    figure = Figure(figsize=(6.0, 3.8), dpi=110, layout="constrained")
    plot_dmag_histograms(figure, table)
    return figure


#: The report folder's own record of the files it wrote: what a later ``--overwrite`` may
#: replace or delete (stale figures of an older run), and nothing else.
MANIFEST_NAME = "report_manifest.json"
_MANIFEST_FORMAT = "blendphot-report"
#: Disk space checked before a report is computed (figures, tables, text: a few MB).
REPORT_BYTES = 32 * 1024**2


def read_manifest(out_dir) -> dict | None:
    """The manifest of a report folder (``{"files": [...], "complete": bool}``), or None if it has none of ours."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != _MANIFEST_FORMAT:
        return None
    files = record.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) and f and "/" not in f and f not in (".", "..")
                                              for f in files):
        return None
    return {"files": list(files), "complete": bool(record.get("complete"))}


def check_report_output(out_dir, names, overwrite: bool, inputs=(), source=None) -> dict | None:
    """Check a report folder before computing; return its old manifest (None if none).

    The folder can be made and written and has room; no input is one of the
    report's files; a file the report will write that exists already is
    replaced only with *overwrite* and only when the folder's manifest lists
    it (the report wrote it).  A manifest marked incomplete is what a killed
    run left: its files are replaced without *overwrite*.
    """
    from napari_blendphot.errors import OutputExistsError
    from napari_blendphot.outputs import check_inputs_outside, check_output_location

    out_dir = Path(out_dir)
    source = str(out_dir) if source is None else source
    check_output_location(out_dir, "folder", REPORT_BYTES, source)
    old = read_manifest(out_dir) if out_dir.is_dir() else None
    ours = set(old["files"]) | {MANIFEST_NAME} if old else set()
    replaceable = overwrite or (old is not None and not old["complete"])
    for name in [*names, MANIFEST_NAME]:
        target = out_dir / name
        check_inputs_outside(target, inputs, source)
        if not os.path.lexists(target):
            continue
        if target.is_symlink() or not target.is_file():
            raise InputError(target, "is not a plain file; refusing to replace it", "move it away")
        if name in ours and replaceable:
            continue
        if not overwrite:
            raise OutputExistsError(target)
        raise InputError(target, "exists and was not written by blendphot evaluate (the folder's "
                                 f"{MANIFEST_NAME} does not list it); refusing to replace it",
                         "move it away or choose another output folder")
    return old


def _write_manifest(out_dir: Path, files, complete: bool) -> None:
    from napari_blendphot.atomic import atomic_output

    path = out_dir / MANIFEST_NAME
    text = json.dumps({"format": _MANIFEST_FORMAT, "complete": complete, "files": sorted(files)}, indent=2) + "\n"
    with atomic_output(path, replace=os.path.lexists(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")


def evaluate(results, out_dir=None, overwrite: bool = False) -> EvaluationReport:
    """The statistics of a results table and, with *out_dir*, its written report.

    Parameters
    ----------
    results : astropy.table.Table or path
        A results table (what :func:`napari_blendphot.predict` returns, or a
        file :func:`~napari_blendphot.report.results.read_results` reads,
        including the paper's ``output_catalog.csv``).
    out_dir : path, optional
        Output folder (created if missing) for ``summary.csv``, ``report.md``,
        ``report.html`` and the figures; without it nothing is written and
        the report holds the summary table alone.
    overwrite : bool
        Replace a report written there before (only the files its manifest
        lists; figures of the old report that the new one does not make are
        deleted); without it, nothing is written when any report file exists.

    Every file is computed under a temporary name first; then the manifest
    (listing old and new files), the files and the final manifest take their
    names.  A kill leaves the old report, or the new one, or a mix whose
    manifest is marked incomplete and lists every file (a rerun replaces it).
    """
    from napari_blendphot.atomic import (
        discard,
        fsync_path,
        install_file,
        partial_name,
        remove_stale_partials,
    )
    from napari_blendphot.provenance import make_provenance, sha256_file
    from napari_blendphot.report.figures import save_figure
    from napari_blendphot.report.results import _validate, read_results
    from napari_blendphot.tables import meta_path, write_table_file

    if isinstance(results, (str, os.PathLike)):
        source = Path(results)
        table = read_results(source)
        inputs = {"results": {"path": source.name, "sha256": sha256_file(source)}}
    else:
        table = results
        _validate(table, "results table")
        source = None
        inputs = {}
    if out_dir is None:
        return EvaluationReport(None, summary_table(table), table=table)
    out_dir = Path(out_dir)
    jobs = _figure_jobs(table)
    # The CSV's metadata file goes first: it is installed before the CSV it describes.
    names = ["summary.csv.meta.json", "summary.csv", "report.md", "report.html",
             *(f"{name}.png" for name, _, _ in jobs)]
    old = check_report_output(out_dir, names, overwrite, inputs=[source] if source else ())

    summary = summary_table(table)
    provenance = make_provenance("evaluate", inputs=inputs)
    summary.meta["provenance"] = provenance
    summary.meta["results_provenance"] = table.meta.get("provenance", {})
    summary.meta["zero_points"] = {m: binned.zero_point_of(table, m) for m in summary["method"]}
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir)
    staged = {}
    try:
        staged["summary.csv"] = partial_name(out_dir / "summary.csv", ".csv")
        write_table_file(_rounded(summary), staged["summary.csv"], "csv")
        staged["summary.csv.meta.json"] = meta_path(staged["summary.csv"])
        figure_paths, captions = {}, {}
        for name, caption, build in jobs:
            staged[f"{name}.png"] = partial_name(out_dir / f"{name}.png", ".png")
            save_figure(build(), staged[f"{name}.png"])
            figure_paths[name], captions[name] = out_dir / f"{name}.png", caption
        context = _ReportContext(table, summary, figure_paths, captions, provenance,
                                 source.name if source else "in-memory table")
        for name, text in (("report.md", context.markdown()), ("report.html", context.html())):
            staged[name] = partial_name(out_dir / name)
            staged[name].write_text(text, encoding="utf-8", newline="\n")
        for path in staged.values():
            fsync_path(path)
        old_files = set(old["files"]) if old else set()
        _write_manifest(out_dir, (old_files & set(os.listdir(out_dir))) | set(names), complete=False)
        for name in names:
            install_file(staged[name], out_dir / name, replace=os.path.lexists(out_dir / name))
        for name in sorted(old_files - set(names)):  # figures of the old report that this one does not make
            stale = out_dir / name
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()
        _write_manifest(out_dir, names, complete=True)
    except BaseException:
        for path in staged.values():
            discard(path)
        if created:
            try:
                out_dir.rmdir()
            except OSError:
                pass
        raise
    fsync_path(out_dir)
    return EvaluationReport(out_dir, summary, out_dir / "summary.csv", out_dir / "report.md", out_dir / "report.html",
                            figure_paths, out_dir / MANIFEST_NAME, table)


def _rounded(summary):
    """Round statistics to 6 decimals: enough for any figure, and stable against summation-order noise."""
    out = summary.copy()
    for name in out.colnames:
        if out[name].dtype.kind == "f":
            out[name] = np.round(np.asarray(out[name], dtype=float), 6)
    return out


def _fmt(value, spec: str, empty: str = "-") -> str:
    return empty if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)


class _ReportContext:
    """Everything the Markdown and HTML views show, formatted once."""

    HEADER = ("method", "galaxy", "N", "undetected", "mean dmag", "median dmag", "sigma", "NMAD", "outliers",
              "flux MAPE", "mag MAPE", "mean IoU")

    def __init__(self, table, summary, figure_paths, captions, provenance, source_name):
        self.table, self.summary = table, summary
        self.figure_paths, self.captions = figure_paths, captions
        self.provenance, self.source_name = provenance, source_name
        self.selections = list(dict.fromkeys(str(s) for s in summary["selection"]))
        self.detection_column = reference_detection_column(table)
        self.counts = detection_counts(table)

    def rows(self, selection):
        for row in self.summary[np.asarray(self.summary["selection"]) == selection]:
            if int(row["n"]) - int(row["n_undetected"]) == 0:  # nothing measured: every statistic undefined
                yield (str(row["label"]), str(row["galaxy"]), str(row["n"]), str(row["n_undetected"]),
                       *(["no data"] * (len(self.HEADER) - 4)))
                continue
            yield (str(row["label"]), str(row["galaxy"]), str(row["n"]), str(row["n_undetected"]),
                   _fmt(row["mean_dmag"], "+.3f"), _fmt(row["median_dmag"], "+.3f"), _fmt(row["sigma"], ".3f"),
                   _fmt(row["nmad"], ".3f"), _fmt(row["outliers_percent"], ".2f") + "%",
                   _fmt(row["flux_mape_percent"], ".2f") + "%", _fmt(row["mag_mape_percent"], ".2f") + "%",
                   _fmt(row["mean_iou"], ".3f"))

    def selection_text(self, selection):
        if selection == "detected":
            return (f"Selection **detected** (the paper's Figure 5): central galaxies of blends whose "
                    f"`{self.detection_column}` case is 0 or 2, companions of cases 1 or 2.")
        return "Selection **all**: every blend; galaxies a method did not detect are counted as undetected."

    def method_lines(self):
        from napari_blendphot.report.results import method_label, methods_in

        zero_points = {m: binned.zero_point_of(self.table, m) for m in methods_in(self.table)}
        return [f"{method_label(self.table, m)} (`{m}`): zero point {zero_points[m]:.2f}" for m in zero_points]

    COVERAGE_HEADER = ("method", "galaxy", "bin", "N", "within 1 err (68.3%)", "within k95 err (95%)", "k95",
                       "within 1.96 err", "median |z|", "Spearman(err, |error|)")
    COVERAGE_TITLES = {"overall": "all galaxies", "pair_dmag": "per bin of pair magnitude difference "
                       "(own - neighbour's)", "mag": "per bin of true magnitude"}

    def coverage_rows(self, key):
        from napari_blendphot.report.results import method_label

        tables = coverage_tables(self.table)
        if key not in tables:
            return
        for row in tables[key]:
            label = method_label(self.table, str(row["method"]))
            span = "all" if key == "overall" else f"{row['bin_low']:.2g} .. {row['bin_high']:.2g}"
            if int(row["n"]) == 0:
                yield (label, str(row["galaxy"]), span, "0", *(["no data"] * 6))
                continue
            yield (label, str(row["galaxy"]), span, str(row["n"]), _fmt(100 * row["coverage_68"], ".1f") + "%",
                   _fmt(100 * row["coverage_95"], ".1f") + "%", _fmt(row["k95"], ".2f"),
                   _fmt(100 * row["coverage_95_gauss"], ".1f") + "%", _fmt(row["median_abs_z"], ".3f"),
                   _fmt(row["spearman"], ".2f"))

    def coverage_markdown(self):
        from napari_blendphot.report.figures import error_methods

        if not error_methods(self.table):
            return ["", "## Flux uncertainties", "", "No method of this table gives flux errors."]
        lines = ["", "## Flux uncertainties", "",
                 "A galaxy is covered at 68% when |flux - true| <= flux_err, at 95% when |flux - true| <= k95 "
                 "flux_err, with k95 the method's calibrated 95% multiple (recorded with its calibration; 1.96 "
                 "for a method without one).  A calibrated method covers 68.3% and 95% (docs/uncertainty.md)."]
        for key, title in self.COVERAGE_TITLES.items():
            lines += ["", f"### Coverage, {title}", "", "| " + " | ".join(self.COVERAGE_HEADER) + " |",
                      "|" + " --- |" * len(self.COVERAGE_HEADER)]
            lines += ["| " + " | ".join(row) + " |" for row in self.coverage_rows(key)]
        return lines

    def provenance_text(self):
        from napari_blendphot.provenance import dumps

        return dumps({"evaluate": self.provenance, "results": self.table.meta.get("provenance", {})})

    def markdown(self) -> str:
        lines = ["# Photometry evaluation", "",
                 f"Results: `{self.source_name}`, {len(self.table)} blends.", "",
                 "dmag = mag_predicted - mag_true; sigma is the standard deviation, NMAD = 1.4826 median|dmag - "
                 "median|, outliers have |dmag| > 0.75, flux MAPE = 100 mean(|pred - true| / true) on the stored "
                 "fluxes, mag MAPE the same on magnitudes. Undetected galaxies (no predicted flux) are counted "
                 "and left out of the statistics.", "", "Methods and zero points:", ""]
        lines += [f"- {line}" for line in self.method_lines()]
        if self.counts:
            lines += ["", f"Detection cases (`{self.detection_column}`):", "",
                      "| case | meaning | blends |", "| --- | --- | --- |"]
            lines += [f"| {case} | {detection_case_name(case)} | {n} |" for case, n in self.counts.items()]
        for selection in self.selections:
            lines += ["", f"## Statistics, selection '{selection}'", "", self.selection_text(selection), "",
                      "| " + " | ".join(self.HEADER) + " |", "|" + " --- |" * len(self.HEADER)]
            lines += ["| " + " | ".join(row) + " |" for row in self.rows(selection)]
        lines += self.coverage_markdown()
        lines += ["", "## Figures", ""]
        for name, path in self.figure_paths.items():
            lines += [f"### {self.captions[name]}", "", f"![{self.captions[name]}]({path.name})", ""]
        lines += ["## Provenance", "", "```json", self.provenance_text(), "```", ""]
        return "\n".join(lines)

    def html(self) -> str:
        esc = html.escape
        parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                 "<title>Photometry evaluation</title>",
                 "<style>body{font-family:sans-serif;max-width:1300px;margin:1em auto;padding:0 1em;color:#222}"
                 "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
                 "text-align:right}th{background:#f0f0f0}td:first-child,td:nth-child(2){text-align:left}"
                 "img{max-width:100%}pre{white-space:pre-wrap;word-break:break-all;background:#f6f6f6;"
                 "padding:0.5em;font-size:0.8em}</style>", "</head>", "<body>", "<h1>Photometry evaluation</h1>",
                 f"<p>Results: <code>{esc(self.source_name)}</code>, {len(self.table)} blends.</p>",
                 "<p>dmag = mag<sub>pred</sub> &minus; mag<sub>true</sub>; sigma is the standard deviation, "
                 "NMAD = 1.4826 median|dmag &minus; median|, outliers have |dmag| &gt; 0.75, flux MAPE = "
                 "100 mean(|pred &minus; true| / true) on the stored fluxes, mag MAPE the same on magnitudes. "
                 "Undetected galaxies are counted and left out of the statistics.</p>", "<ul>"]
        parts += [f"<li>{esc(line).replace('`', '')}</li>" for line in self.method_lines()]
        parts.append("</ul>")
        if self.counts:
            parts += [f"<p>Detection cases (<code>{esc(self.detection_column)}</code>):</p>",
                      "<table><tr><th>case</th><th>meaning</th><th>blends</th></tr>"]
            parts += [f"<tr><td>{case}</td><td>{esc(detection_case_name(case))}</td><td>{n}</td></tr>"
                      for case, n in self.counts.items()]
            parts.append("</table>")
        for selection in self.selections:
            text = esc(self.selection_text(selection)).replace("**", "")
            parts += [f"<h2>Statistics, selection '{esc(selection)}'</h2>", f"<p>{text.replace('`', '')}</p>",
                      "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in self.HEADER) + "</tr>"]
            parts += ["<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in self.rows(selection)]
            parts.append("</table>")
        parts += ["<h2>Flux uncertainties</h2>"]
        for line in self.coverage_markdown()[3:4]:
            parts.append(f"<p>{esc(line)}</p>")
        for key, title in self.COVERAGE_TITLES.items():
            rows = list(self.coverage_rows(key))
            if not rows:
                continue
            parts += [f"<h3>Coverage, {esc(title)}</h3>",
                      "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in self.COVERAGE_HEADER) + "</tr>"]
            parts += ["<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows]
            parts.append("</table>")
        parts.append("<h2>Figures</h2>")
        for name, path in self.figure_paths.items():
            caption = esc(self.captions[name])
            parts += [f"<h3>{caption}</h3>", f'<p><img src="{esc(path.name)}" alt="{caption}"></p>']
        parts += ["<h2>Provenance</h2>", f"<pre>{esc(self.provenance_text())}</pre>", "</body>", "</html>", ""]
        return "\n".join(parts)
