"""Figures in the style of Boucaud et al. 2020, drawn from a results table.

Every function builds a :class:`matplotlib.figure.Figure` with the
object-oriented API (no ``pyplot``: nothing is registered globally, so the
figures can be embedded in Qt or saved from a worker) and returns it; the
caller saves it with :func:`save_figure` (deterministic PNG bytes) or embeds
it.  :func:`plot_dmag_histograms` draws into an existing axes or figure, for
the GUI.

Paper figure -> function:

- 5-6: :func:`figure_magnitudes` (predicted vs true magnitude, inset dmag
  histogram with bias, sigma, outliers and MAPE), one per galaxy;
- 7: :func:`figure_dmag_vs_pair_dmag` (boxplots per bin, points coloured by
  distance / R_central);
- 8: :func:`figure_binned_summary` (median dmag and scatter vs pair dmag);
- 9: :func:`figure_by_morphology`;
- 12: :func:`figure_iou` (IoU histogram and mean IoU per morphology pair).
"""

from __future__ import annotations

import numpy as np

from napari_blendphot.errors import InputError
from napari_blendphot.metrics import binned
from napari_blendphot.metrics.photometry import photometry_stats
from napari_blendphot.metrics.selection import available_selections

__all__ = [
    "default_selection",
    "figure_binned_summary",
    "figure_by_morphology",
    "figure_dmag_vs_pair_dmag",
    "figure_iou",
    "figure_magnitudes",
    "iou_methods",
    "method_color",
    "plot_dmag_histograms",
    "save_figure",
]

_OTHER_COLORS = ("#7b4fa0", "#e08a1e", "#3a9fb0", "#8c564b", "#c2b02a", "#555555")
#: dmag axis range of the paper-style panels (SExtractor's tails are clipped, and said to be).
DMAG_LIMIT = 1.5
#: Bins with fewer measured galaxies are not drawn in the binned figures (their sigma means little).
_MIN_PER_BIN = 5
_GALAXY_TITLES = {"central": "central galaxy", "companion": "companion galaxy", "both": "both galaxies"}


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def method_color(table, method: str) -> str:
    """A stable colour per method: the registry's (or the paper catalogue's), then by position."""
    from napari_blendphot.deblend.registry import display_of
    from napari_blendphot.report.results import PAPER_COLORS, methods_in

    def fixed(name):
        return display_of(name)[1] or PAPER_COLORS.get(name, "")

    if fixed(method):
        return fixed(method)
    others = [m for m in methods_in(table) if not fixed(m)]
    index = others.index(method) if method in others else len(others)
    return _OTHER_COLORS[index % len(_OTHER_COLORS)]


def default_selection(table) -> str:
    """The paper's ``"detected"`` selection when the table has a detection column, else ``"all"``."""
    return available_selections(table)[0]


def _methods(table, methods) -> list[str]:
    from napari_blendphot.report.results import methods_in

    known = methods_in(table)
    if methods is None:
        return known
    methods = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise InputError("argument methods", f"unknown method(s) {unknown}", f"the table has {known}")
    return methods


def _label(table, method: str) -> str:
    from napari_blendphot.report.results import method_label

    return method_label(table, method)


def _selection_note(selection: str) -> str:
    return "galaxies detected by SExtractor/SEP" if selection == "detected" else "all blends"


def save_figure(figure, path, dpi: int = 110) -> None:
    """Save *figure* as PNG with no date or version stamp (same figure -> same bytes), then close it.

    The ``Software`` tag says ``napari-blendphot`` (no version): how a later
    overwrite recognises the file as the project's.  Written to *path*
    directly: callers write to a temporary (:mod:`napari_blendphot.atomic`).
    """
    from napari_blendphot.outputs import PNG_SOFTWARE

    figure.savefig(path, dpi=dpi, format="png", metadata={"Software": PNG_SOFTWARE})
    figure.clear()


def figure_magnitudes(table, galaxy: str = "central", selection: str | None = None, methods=None):
    """Paper Figures 5-6: predicted vs true magnitude, one panel per method, with an inset dmag histogram."""
    selection = selection or default_selection(table)
    methods = _methods(table, methods)
    figure = _new_figure(max(3.5 * len(methods), 4.4), 4.5)
    axes = figure.subplots(1, len(methods), squeeze=False)[0]
    all_mags = []
    data = {m: binned.galaxy_measurements(table, m, galaxy, selection) for m in methods}
    for m in methods:
        all_mags.append(np.asarray(data[m]["true_mag"]))
    mags = np.concatenate(all_mags)
    mags = mags[np.isfinite(mags)]
    if mags.size:
        low, high = np.floor(np.min(mags) * 2) / 2 - 0.25, np.ceil(np.max(mags) * 2) / 2 + 0.25
    else:
        low, high = 18.0, 26.0
    for ax, method in zip(axes, methods):
        d = data[method]
        if len(d) == 0:
            ax.set_title(_label(table, method))
            _no_data(ax, "no data: no galaxy in this selection")
            continue
        found = np.asarray(d["detected"])
        ax.plot([low, high], [low, high], color="0.3", lw=0.8, ls="--", zorder=1)
        size, alpha = _marker_style(int(found.sum()))
        ax.scatter(d["true_mag"][found], d["pred_mag"][found], s=size, lw=0, alpha=alpha,
                   color=method_color(table, method), rasterized=True, zorder=2)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal")
        ax.set_xlabel("true magnitude (F160W AB)")
        ax.set_title(_label(table, method))
        stats = photometry_stats(d["true_flux"], d["pred_flux"], zp_pred=binned.zero_point_of(table, method),
                                 source=f"{_label(table, method)} {galaxy}")
        inset = ax.inset_axes([0.56, 0.09, 0.41, 0.28])
        _histogram(inset, np.asarray(d["dmag"]), method_color(table, method), bins=np.linspace(-1, 1, 41))
        inset.axvline(0, color="0.3", lw=0.6)
        inset.set_xlabel(r"$\Delta$mag (clipped at $\pm$1)", fontsize=6.5, labelpad=2)
        inset.tick_params(labelsize=6, length=2, pad=1)
        inset.set_yticks([])
        text = (f"bias {stats.mean_dmag:+.3f}\n$\\sigma$ {stats.sigma:.3f}\n"
                f"outliers {stats.outlier_percent:.2f}%\nflux MAPE {stats.flux_mape:.1f}%\n"
                f"mag MAPE {stats.mag_mape:.2f}%")
        if stats.n_undetected:
            text += f"\nundetected {stats.n_undetected}"
        ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top", ha="left", fontsize=7.5,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.8"})
    axes[0].set_ylabel("predicted magnitude")
    figure.suptitle(f"Photometry of the {_GALAXY_TITLES[galaxy]}\n({_selection_note(selection)}, "
                    f"N = {len(data[methods[0]])})", fontsize=10)
    return figure


def _no_data(ax, text: str = "no data") -> None:
    """Say in the panel that there is nothing to draw (an empty selection is valid, not an error)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.35")


def _marker_style(n_points: int) -> tuple[float, float]:
    """Marker area and opacity: small and translucent for thousands of points, visible for a few dozen."""
    if n_points > 2000:
        return 2.0, 0.35
    if n_points > 300:
        return 5.0, 0.5
    return 12.0, 0.8


def _histogram(ax, values, color, bins) -> None:
    values = values[np.isfinite(values)]
    clipped = np.clip(values, bins[0], bins[-1])  # overflow piles into the edge bins, so no galaxy vanishes
    ax.hist(clipped, bins=bins, color=color, alpha=0.85, histtype="stepfilled", lw=0)


def plot_dmag_histograms(ax_or_fig, table, methods=None, galaxy: str = "both", selection: str | None = None,
                         limit: float = DMAG_LIMIT, n_bins: int = 60):
    """Overlaid dmag histograms of several methods (embeddable in the GUI).

    Parameters
    ----------
    ax_or_fig : matplotlib Axes or Figure
        Drawn into the axes, or into a new single axes of the figure.
    table : astropy.table.Table
        A results table.
    methods : list of str, optional
        Default: every method of the table.
    galaxy, selection : str
        See :func:`napari_blendphot.metrics.binned.galaxy_measurements`.
    limit : float
        The histogram spans ``[-limit, limit]``; values beyond go to the edge bins.

    Returns
    -------
    The axes drawn into.
    """
    from matplotlib.figure import Figure

    ax = ax_or_fig.add_subplot(1, 1, 1) if isinstance(ax_or_fig, Figure) else ax_or_fig
    selection = selection or default_selection(table)
    bins = np.linspace(-limit, limit, n_bins + 1)
    for method in _methods(table, methods):
        d = binned.galaxy_measurements(table, method, galaxy, selection)
        dmag = np.asarray(d["dmag"])
        finite = dmag[np.isfinite(dmag)]
        sigma = float(np.std(finite)) if finite.size else float("nan")
        ax.hist(np.clip(finite, -limit, limit), bins=bins, histtype="step", lw=1.6,
                color=method_color(table, method), label=f"{_label(table, method)} ($\\sigma$ = {sigma:.3f})")
    ax.axvline(0, color="0.4", lw=0.7)
    ax.set_xlim(-limit, limit)
    ax.set_xlabel(r"$\Delta$mag = mag$_\mathrm{pred}$ $-$ mag$_\mathrm{true}$"
                  + f"  (beyond $\\pm${limit:g} in the edge bins)")
    ax.set_ylabel("galaxies")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return ax


def figure_dmag_vs_pair_dmag(table, galaxy: str = "both", selection: str | None = None, methods=None):
    """Paper Figure 7: dmag vs pair magnitude difference, boxplots per bin, points coloured by distance / R."""
    from matplotlib.colors import Normalize

    selection = selection or default_selection(table)
    methods = _methods(table, methods)
    figure = _new_figure(max(3.7 * len(methods), 4.4) + 0.6, 4.0)
    axes = figure.subplots(1, len(methods), squeeze=False, sharey=True)[0]
    norm = None
    mappable = None
    for ax, method in zip(axes, methods):
        d = binned.galaxy_measurements(table, method, galaxy, selection)
        found = np.asarray(d["detected"])
        x, y = np.asarray(d["pair_dmag"])[found], np.asarray(d["dmag"])[found]
        edges = binned.pair_dmag_edges(d["pair_dmag"])
        if "distance_over_radius" in d.colnames:
            colour = np.asarray(d["distance_over_radius"])[found]
            if norm is None:
                finite = colour[np.isfinite(colour)]
                norm = Normalize(*np.quantile(finite, [0.02, 0.98])) if finite.size else None
            size, alpha = _marker_style(x.size)
            mappable = ax.scatter(x, np.clip(y, -DMAG_LIMIT, DMAG_LIMIT), c=colour, s=size, lw=0, alpha=alpha,
                                  cmap="viridis", norm=norm, rasterized=True, zorder=1)
        else:
            size, alpha = _marker_style(x.size)
            ax.scatter(x, np.clip(y, -DMAG_LIMIT, DMAG_LIMIT), s=size, lw=0, alpha=alpha,
                       color=method_color(table, method), rasterized=True, zorder=1)
        groups = [y[(x >= lo) & ((x < hi) | (hi == edges[-1]) & (x <= hi))] for lo, hi in zip(edges[:-1], edges[1:])]
        centers = 0.5 * (edges[:-1] + edges[1:])
        width = 0.6 * np.diff(edges)
        nonempty = [i for i, g in enumerate(groups) if len(g)]
        if not nonempty:
            ax.text(0.5, 0.5, "no detected galaxy", transform=ax.transAxes, ha="center", va="center")
        else:
            ax.boxplot([groups[i] for i in nonempty], positions=centers[nonempty], widths=width[nonempty],
                       whis=(5, 95), showfliers=False, manage_ticks=False, zorder=3,
                       medianprops={"color": "black", "lw": 1.4}, boxprops={"lw": 1.0},
                       whiskerprops={"lw": 1.0}, capprops={"lw": 1.0})
        ax.axhline(0, color="0.3", lw=0.6, zorder=2)
        ax.set_ylim(-DMAG_LIMIT, DMAG_LIMIT)
        ax.set_xlim(edges[0], edges[-1])
        ax.set_title(_label(table, method))
        ax.set_xlabel("mag(galaxy) $-$ mag(neighbour)")
    axes[0].set_ylabel(r"$\Delta$mag (clipped to $\pm$%.1f)" % DMAG_LIMIT)
    if mappable is not None:
        figure.colorbar(mappable, ax=list(axes), label=r"distance / $R_\mathrm{central}$", shrink=0.9)
    separator = "\n" if len(methods) == 1 else "; "  # a single panel is too narrow for one line
    figure.suptitle(f"$\\Delta$mag vs pair magnitude difference, {_GALAXY_TITLES[galaxy]}\n"
                    f"({_selection_note(selection)}{separator}boxes: quartiles, whiskers: 5-95%)", fontsize=10)
    return figure


def _plot_binned_lines(ax_bias, ax_scatter, stats, color, label, marker="o") -> None:
    keep = np.asarray(stats["n"]) - np.asarray(stats["n_undetected"]) >= _MIN_PER_BIN
    x = np.asarray(stats["bin_center"])[keep]
    ax_bias.plot(x, np.asarray(stats["median"])[keep], marker=marker, ms=4, color=color, label=label)
    ax_scatter.plot(x, np.asarray(stats["sigma"])[keep], marker=marker, ms=4, color=color, label=label)
    ax_scatter.plot(x, np.asarray(stats["nmad"])[keep], marker=marker, ms=3, color=color, ls=":", alpha=0.8)


def _log_scale_if_positive(ax) -> None:
    """Log y axis for scatters (they span a decade between methods), unless nothing is positive."""
    values = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.get_lines()] or [np.empty(0)])
    if np.any(np.isfinite(values) & (values > 0)):
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        # plain numbers ("0.3") rather than "3 x 10^-1"; minor ticks labelled at 2, 3 and 5 x 10^k only
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))


def _minor_log_label(value, _position) -> str:
    if value <= 0:
        return ""
    mantissa = value / 10 ** np.floor(np.log10(value) + 1e-9)
    return f"{value:g}" if np.round(mantissa, 6) in (2.0, 3.0, 5.0) else ""


def figure_binned_summary(table, galaxy: str = "both", selection: str | None = None, methods=None):
    """Paper Figure 8: median dmag (bias) and scatter in 6 bins of pair magnitude difference, all methods."""
    selection = selection or default_selection(table)
    methods = _methods(table, methods)
    figure = _new_figure(6.0, 5.6)
    ax_bias, ax_scatter = figure.subplots(2, 1, sharex=True)
    edges = None
    for method in methods:
        stats = binned.binned_by_pair_dmag(table, method, galaxy, selection, edges=edges)
        edges = np.append(np.asarray(stats["bin_low"]), stats["bin_high"][-1])
        _plot_binned_lines(ax_bias, ax_scatter, stats, method_color(table, method), _label(table, method))
    ax_bias.axhline(0, color="0.4", lw=0.6)
    ax_bias.set_ylabel(r"median $\Delta$mag")
    ax_bias.legend(fontsize=8, frameon=False)
    _log_scale_if_positive(ax_scatter)
    ax_scatter.set_ylabel(r"$\sigma$ (solid), NMAD (dotted)")
    ax_scatter.set_xlabel("mag(galaxy) $-$ mag(neighbour)")
    for ax in (ax_bias, ax_scatter):
        ax.grid(alpha=0.3, lw=0.5)
        for edge in edges:
            ax.axvline(edge, color="0.85", lw=0.5, zorder=0)
    figure.suptitle(f"Bias and scatter vs pair magnitude difference\n{_GALAXY_TITLES[galaxy]}, "
                    f"{_selection_note(selection)} (bins of < {_MIN_PER_BIN} galaxies not drawn)", fontsize=10)
    return figure


def figure_by_morphology(table, galaxy: str = "both", selection: str | None = None, methods=None):
    """Paper Figure 9: median dmag and scatter vs pair magnitude difference, one column per galaxy type."""
    selection = selection or default_selection(table)
    methods = _methods(table, methods)
    per_method = {m: binned.binned_by_morphology(table, m, galaxy, selection) for m in methods}
    types = list(dict.fromkeys(str(t) for t in per_method[methods[0]]["type"]))
    if not types:
        figure = _new_figure(4.4, 3.0)
        ax = figure.subplots()
        ax.set_axis_off()
        _no_data(ax, "no data: no galaxy in this selection")
        figure.suptitle(f"Bias and scatter per morphology ({_GALAXY_TITLES[galaxy]}, "
                        f"{_selection_note(selection)})", fontsize=10)
        return figure
    figure = _new_figure(2.8 * len(types) + 0.4, 5.2)
    axes = figure.subplots(2, len(types), squeeze=False, sharex=True, sharey="row")
    for column, galtype in enumerate(types):
        for method in methods:
            stats = per_method[method]
            part = stats[np.asarray(stats["type"]).astype(str) == galtype]
            _plot_binned_lines(axes[0, column], axes[1, column], part, method_color(table, method),
                               _label(table, method))
        n = int(np.sum(per_method[methods[0]]["n"][np.asarray(per_method[methods[0]]["type"]).astype(str) == galtype]))
        axes[0, column].set_title(f"{galtype} (N = {n})")
        axes[0, column].axhline(0, color="0.4", lw=0.6)
        _log_scale_if_positive(axes[1, column])
        axes[1, column].set_xlabel("mag(gal) $-$ mag(neighb.)")
        for ax in axes[:, column]:
            ax.grid(alpha=0.3, lw=0.5)
    axes[0, 0].set_ylabel(r"median $\Delta$mag")
    axes[1, 0].set_ylabel(r"$\sigma$ (solid), NMAD (dotted)")
    axes[0, 0].legend(fontsize=7, frameon=False)
    figure.suptitle(f"Bias and scatter per morphology of the galaxy ({_GALAXY_TITLES[galaxy]}, "
                    f"{_selection_note(selection)}; bins with fewer than {_MIN_PER_BIN} galaxies not drawn)",
                    fontsize=10)
    return figure


def iou_methods(table, methods=None) -> list[str]:
    """Methods of *table* that have IoU columns."""
    return [m for m in _methods(table, methods) if f"g1_iou_{m}" in table.colnames and f"g2_iou_{m}" in table.colnames]


def figure_iou(table, methods=None):
    """Paper Figure 12: IoU histograms (central, companion) and mean IoU per morphology pair, per method."""
    methods = iou_methods(table, methods)
    if not methods:
        raise InputError("results table", "no IoU columns (g1_iou_<method>)",
                         "IoU needs a method that makes masks and the true masks at predict time")
    has_types = "g1_type" in table.colnames and "g2_type" in table.colnames
    figure = _new_figure(8.6 if has_types else 4.6, 3.6 * len(methods))
    axes = figure.subplots(len(methods), 2 if has_types else 1, squeeze=False)
    bins = np.linspace(0, 1, 41)
    for row, method in enumerate(methods):
        ax = axes[row, 0]
        for prefix, style, name in (("g1", "-", "central"), ("g2", "--", "companion")):
            values = np.asarray(table[f"{prefix}_iou_{method}"], dtype=float)
            values = values[np.isfinite(values)]
            ax.hist(values, bins=bins, histtype="step", lw=1.5, ls=style, color=method_color(table, method),
                    label=f"{name}: mean {np.mean(values):.3f}" if values.size else name)
        both = np.concatenate([np.asarray(table[f"g{i}_iou_{method}"], dtype=float) for i in (1, 2)])
        both = both[np.isfinite(both)]
        ax.set_title(f"{_label(table, method)}: mean IoU {np.mean(both):.3f}" if both.size
                     else f"{_label(table, method)}: no IoU (no data)")
        if not both.size:
            _no_data(ax)
        ax.set_xlabel("IoU (masks thresholded at 0.5)")
        ax.set_ylabel("galaxies")
        ax.set_xlim(0, 1)
        ax.legend(fontsize=8, frameon=False, loc="best")
        if has_types:
            _iou_matrix(figure, axes[row, 1], table, method)
    return figure


def _iou_matrix(figure, ax, table, method) -> None:
    stats = binned.iou_by_morphology_pair(table, method)
    if len(stats) == 0:
        ax.set_axis_off()
        ax.set_title("mean IoU per morphology pair")
        _no_data(ax)
        return
    central = list(dict.fromkeys(str(t) for t in stats["central_type"]))
    companion = sorted(set(str(t) for t in stats["companion_type"]), key=lambda t: (t not in central, central.index(t) if t in central else 0, t))
    grid = np.full((len(central), len(companion)), np.nan)
    counts = np.zeros(grid.shape, int)
    for row in stats:
        i, j = central.index(str(row["central_type"])), companion.index(str(row["companion_type"]))
        grid[i, j], counts[i, j] = row["mean_iou"], row["n"]
    finite = grid[np.isfinite(grid)]
    image = ax.imshow(grid, cmap="magma", vmin=float(finite.min()) if finite.size else 0,
                      vmax=float(finite.max()) if finite.size else 1)
    for i in range(len(central)):
        for j in range(len(companion)):
            if np.isfinite(grid[i, j]):
                bright = image.norm(grid[i, j]) > 0.6
                ax.text(j, i, f"{grid[i, j]:.3f}\n(N={counts[i, j]})", ha="center", va="center", fontsize=7,
                        color="black" if bright else "white")
    ax.set_xticks(range(len(companion)), companion)
    ax.set_yticks(range(len(central)), central)
    ax.set_xlabel("companion type")
    ax.set_ylabel("central type")
    ax.set_title("mean IoU per morphology pair")
    figure.colorbar(image, ax=ax, shrink=0.8)


# --------------------------------------------------------------------------- flux uncertainties
def error_methods(table, methods=None) -> list[str]:
    """Methods of *table* that give flux errors (``g1_flux_err_<m>`` columns)."""
    return [m for m in _methods(table, methods) if f"g1_flux_err_{m}" in table.colnames]


def _normalised_residuals(table, method: str):
    """(flux - true) / err of both galaxies where the method measured a flux with an error."""
    values = []
    for prefix in ("g1", "g2"):
        true = np.asarray(table[f"{prefix}_flux"], float)
        pred = np.asarray(table[f"{prefix}_flux_{method}"], float)
        err = np.asarray(table[f"{prefix}_flux_err_{method}"], float)
        usable = np.isfinite(true) & np.isfinite(pred) & np.isfinite(err) & (err > 0)
        values.append((pred[usable] - true[usable]) / err[usable])
    return np.concatenate(values)


def figure_error_calibration(table, methods=None):
    """Observed against nominal coverage of the intervals flux +- z(p) err, p from 5% to 99% (both galaxies).

    A calibrated method follows the diagonal; below it the errors are too
    small (over-confident), above it too large.
    """
    from scipy.stats import norm

    figure = _new_figure(4.6, 4.2)
    ax = figure.subplots()
    nominal = np.linspace(0.05, 0.99, 48)
    multiples = norm.ppf(0.5 + nominal / 2)
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1, label="calibrated")
    drawn = 0
    for method in error_methods(table, methods):
        z = np.abs(_normalised_residuals(table, method))
        if z.size == 0:
            continue
        observed = [(z <= k).mean() for k in multiples]
        ax.plot(nominal, observed, color=method_color(table, method), label=_label(table, method))
        drawn += 1
    if not drawn:
        _no_data(ax, "no method gives flux errors")
    ax.set_xlabel("nominal coverage of flux ± z err")
    ax.set_ylabel("observed coverage")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper left")
    return figure


def figure_error_z(table, methods=None):
    """Histograms of z = (flux - true) / err per method against the unit normal."""
    from scipy.stats import norm

    chosen = error_methods(table, methods)
    figure = _new_figure(3.2 * max(1, len(chosen)), 3.0)
    axes = figure.subplots(1, max(1, len(chosen)), squeeze=False)[0]
    grid = np.linspace(-5, 5, 201)
    bins = np.linspace(-5, 5, 51)
    for ax, method in zip(axes, chosen):
        z = _normalised_residuals(table, method)
        if z.size == 0:
            _no_data(ax)
            continue
        inside = np.clip(z, -5, 5)
        ax.hist(inside, bins=bins, density=True, color=method_color(table, method), alpha=0.6)
        ax.plot(grid, norm.pdf(grid), color="k", lw=1, label="unit normal")
        ax.set_title(f"{_label(table, method)}\n|z|>5: {100 * np.mean(np.abs(z) > 5):.1f}%", fontsize=8)
        ax.set_xlabel("(flux - true) / err")
        ax.legend(fontsize=7)
    if not chosen:
        _no_data(axes[0], "no method gives flux errors")
    return figure
