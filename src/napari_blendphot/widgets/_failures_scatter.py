"""The failure browser's scatter of dmag against pair magnitude difference or distance (paper Figure 7).

One colour per method; clicking a point selects its row; the current row is
ringed, blitted over the cached plot (a full redraw of 40,000 points is slow).
"""

from __future__ import annotations

import numpy as np

_COLOURS = ("#1f9bff", "#ff8c00", "#5fd35f", "#e377c2", "#bcbd22", "#17becf")


class FailureScatter:
    """A matplotlib canvas in Qt; ``on_pick(long_row)`` is called when a point is clicked."""

    def __init__(self, on_pick):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 3), dpi=90, facecolor="#262930", layout="constrained")  # re-laid out on resize
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(170)
        self.canvas.mpl_connect("pick_event", self._on_pick)
        self.canvas.mpl_connect("draw_event", self._on_draw)
        self._select = on_pick
        self._artists: dict = {}
        self._highlight = None
        self._background = None
        self._x_name = "pair_dmag"
        self.axis = None

    def draw(self, failures, x_name: str) -> None:
        """Plot the shown rows of *failures* (None: an empty canvas) against *x_name*."""
        figure = self.figure
        figure.clear()
        self._artists = {}
        self._highlight = None
        self._background = None
        self._x_name = x_name
        if failures is None:
            self.canvas.draw_idle()
            return
        axis = figure.add_subplot(111)
        axis.set_facecolor("#1b1d22")
        for spine in axis.spines.values():
            spine.set_color("#888888")
        axis.tick_params(colors="#dddddd", labelsize=8)
        points = failures.scatter_points(x_name)
        n_points = sum(len(v[0]) for v in points.values())
        size = 12 if n_points < 2000 else 3
        for k, (method, (x, dmag, rows)) in enumerate(points.items()):
            # the first methods on top: later ones (often the wide-scatter baseline) must not hide them
            artist = axis.scatter(x, dmag, s=size, color=_COLOURS[k % len(_COLOURS)], alpha=0.6, linewidths=0,
                                  label=f"{method} ({len(x)})", picker=True, pickradius=4,
                                  zorder=3 + len(points) - k)
            self._artists[artist] = rows
        all_dmag = np.concatenate([v[1] for v in points.values()]) if points else np.array([])
        if all_dmag.size > 20:
            # a few wild outliers must not squash the bulk: clip the view, not the data
            low, high = np.percentile(all_dmag, [0.5, 99.5])
            pad = 0.1 * max(high - low, 0.5)
            axis.set_ylim(min(low, -0.8) - pad, max(high, 0.8) + pad)
        axis.axhline(0, color="#aaaaaa", lw=0.6)
        for level in (-0.75, 0.75):
            axis.axhline(level, color="#777777", lw=0.5, ls=":")
        axis.set_xlabel("pair magnitude difference (galaxy - neighbour)" if x_name == "pair_dmag"
                        else "distance (px)", color="#dddddd", fontsize=8)
        axis.set_ylabel("dmag (pred - true)", color="#dddddd", fontsize=8)
        if points:
            axis.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(points),
                        markerscale=3 if size < 10 else 1, frameon=False, labelcolor="#dddddd",
                        handletextpad=0.2, columnspacing=1.0)
        self.axis = axis
        self.mark(failures, failures.current_row, draw=False)
        self.canvas.draw_idle()

    def mark(self, failures, long_row, draw: bool = True) -> None:
        """Ring the point of long-table row *long_row* (None: no ring)."""
        if not self._artists or failures is None:
            return
        if self._highlight is None:
            (self._highlight,) = self.axis.plot([], [], marker="o", ms=11, mfc="none", mec="white", mew=1.5,
                                                animated=True, zorder=10)
        point = ([], [])
        if long_row is not None:
            x = failures.columns[self._x_name][long_row]
            y = failures.columns["dmag"][long_row]
            if np.isfinite(x) and np.isfinite(y):
                point = ([x], [y])
        # a point beyond the clipped y range is marked by a triangle on the edge, pointing to it
        marker, face = "o", "none"
        if point[1]:
            low, high = self.axis.get_ylim()
            if point[1][0] > high:
                point, marker, face = (point[0], [high]), "^", "white"
            elif point[1][0] < low:
                point, marker, face = (point[0], [low]), "v", "white"
        self._highlight.set_marker(marker)
        self._highlight.set_markerfacecolor(face)
        self._highlight.set_clip_on(False)
        self._highlight.set_data(*point)
        if not draw:
            return
        if self._background is None:
            self.canvas.draw_idle()  # the draw event caches the background and blits the ring
            return
        self.canvas.restore_region(self._background)
        self.axis.draw_artist(self._highlight)
        self.canvas.blit(self.figure.bbox)

    def _on_draw(self, _event) -> None:
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        if self._highlight is not None:
            self.axis.draw_artist(self._highlight)

    def _on_pick(self, event) -> None:
        rows = self._artists.get(event.artist)
        if rows is None or not len(event.ind):
            return
        # the nearest of the picked points to the click
        offsets = event.artist.get_offsets()[event.ind]
        mouse = np.array([event.mouseevent.xdata, event.mouseevent.ydata], float)
        scale = np.array(np.diff(self.axis.get_xlim()).tolist() + np.diff(self.axis.get_ylim()).tolist())
        nearest = event.ind[int(np.argmin((((offsets - mouse) / scale) ** 2).sum(axis=1)))]
        self._select(int(rows[nearest]))
