"""The failure browser's plain model (no Qt): a long table of per-galaxy errors.

A results table (``docs/results_format.md``) has one row per blend and, per
method, the fluxes of both galaxies.  To hunt for failures it is easier to
look at one row per *(blend, method, galaxy)* with that galaxy's |dmag| and
the circumstances that drive errors (detection case, morphology pair,
distance, pair magnitude difference, IoU).  :class:`FailureModel` holds that
long table as numpy columns, sorts and filters it (fast enough for 5,000
blends x 4 methods x 2 galaxies = 40,000 rows), keeps the current row, and,
when the blend dataset the results came from is given, hands out the blend
images and truth for the viewer, a CSV export and a PNG montage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from psygnal import Signal

from napari_blendphot.errors import InputError, check_output_path

__all__ = ["COLUMNS", "FailureFilter", "FailureModel", "can_rerun_masks"]

#: Columns of the long table: name -> header shown in the GUI.
COLUMNS = {
    "blend_id": "blend",
    "method": "method",
    "galaxy": "galaxy",
    "abs_dmag": "|dmag|",
    "abs_z": "|z|",
    "dmag": "dmag",
    "flux_err": "flux err",
    "detection": "detection",
    "morph_pair": "types (c-k)",
    "distance": "distance px",
    "pair_dmag": "pair dmag",
    "iou": "IoU",
    "true_mag": "true mag",
    "pred_mag": "pred mag",
}
_NUMERIC = ("blend_id", "abs_dmag", "abs_z", "dmag", "flux_err", "detection", "distance", "pair_dmag", "iou", "true_mag", "pred_mag")
#: Detection value of blends whose table has no detection column.
NO_DETECTION = -9
GALAXY_PREFIX = {"central": "g1", "companion": "g2"}


def can_rerun_masks(method: str) -> bool:
    """Whether *method*'s masks can be re-computed for a shown blend (results tables do not store masks).

    It must make masks and, if it takes weights, have a shipped model (the
    weights that made a results table are not known here).
    """
    from napari_blendphot.deblend.registry import method_info

    info = method_info(method)
    if not info.makes_masks:
        return False
    if not info.accepts_weights:
        return True
    from napari_blendphot.deblend.registry import shipped_model_of

    return info.network is not None and shipped_model_of(method) is not None


@dataclass(frozen=True)
class FailureFilter:
    """Rows kept (conditions combined with AND; None = no condition).

    methods, galaxies, detections, morph_pairs : collections of allowed values.
    abs_dmag, distance, pair_dmag : (low, high) inclusive ranges (either end None);
        an undetected galaxy (NaN dmag) fails any |dmag| / dmag range.
    """

    methods: tuple | None = None
    galaxies: tuple | None = None
    detections: tuple | None = None
    morph_pairs: tuple | None = None
    abs_dmag: tuple | None = None
    distance: tuple | None = None
    pair_dmag: tuple | None = None


@dataclass
class _Sort:
    column: str = "abs_dmag"
    descending: bool = True


class FailureModel:
    """The long per-galaxy error table of a results table, sorted and filtered.

    Parameters
    ----------
    results : astropy.table.Table or path-like
        A results table, or a file :func:`~napari_blendphot.report.results.read_results`
        reads (our predict output, an evaluation run, the paper's catalogue).
    dataset : BlendDataset or path-like, optional
        The blend dataset the results were made from; needed to show images.
        Every results blend id must be in it (else :class:`InputError`).

    Events
    ------
    view_changed() : sort or filter changed (the row order changed).
    current_changed(int) : the current position in the view changed (-1: none).
    """

    view_changed = Signal()
    current_changed = Signal(int)

    def __init__(self, results, dataset=None):
        from napari_blendphot.report.results import methods_in, read_results

        if isinstance(results, (str, Path)):
            self.source = str(results)
            results = read_results(results)
        else:
            self.source = str((results.meta.get("provenance") or {}).get("source", "results table"))
        self.results = results
        self.methods = list(dict.fromkeys(methods_in(results)))  # a merged meta may repeat names
        self.columns = self._long_table(results)
        self.dataset = None
        self._dataset_rows = None
        if dataset is not None:
            self.attach_dataset(dataset)
        self._filter = FailureFilter()
        self._sort = _Sort()
        self._view = np.arange(len(self))
        self._current = -1
        self._apply()

    # -- building ------------------------------------------------------------------------------
    def _long_table(self, table) -> dict:
        from napari_blendphot.metrics.binned import zero_point_of
        from napari_blendphot.metrics.calibration import error_column
        from napari_blendphot.metrics.photometry import delta_mag, flux_to_mag
        from napari_blendphot.metrics.selection import reference_detection_column

        n = len(table)

        def col(name, default=np.nan, dtype=np.float64):
            if name not in table.colnames:
                return np.full(n, default, dtype=dtype)
            values = table[name]
            if hasattr(values, "filled"):
                values = values.filled(np.nan if np.dtype(values.dtype).kind == "f" else default)
            return np.asarray(values).astype(dtype)

        ids = col("id", -1, np.int64) if "id" in table.colnames else np.arange(n, dtype=np.int64)
        true_flux = {g: col(f"{p}_flux") for g, p in GALAXY_PREFIX.items()}
        true_mag = {g: flux_to_mag(true_flux[g], zero_point_of(table, None)) for g in GALAXY_PREFIX}
        types = {g: col(f"{p}_type", "?", str) for g, p in GALAXY_PREFIX.items()}
        morph_pair = np.char.add(np.char.add(types["central"], "-"), types["companion"])
        detection_column = reference_detection_column(table)
        detection = col(detection_column, NO_DETECTION, np.float64) if detection_column else np.full(n, NO_DETECTION)
        detection = np.where(np.isfinite(detection), detection, NO_DETECTION).astype(np.int64)
        distance = col("distance")
        self.detection_column = detection_column
        parts = {key: [] for key in ("row", *COLUMNS)}
        for method in self.methods:
            for galaxy, prefix in GALAXY_PREFIX.items():
                other = "companion" if galaxy == "central" else "central"
                pred = col(f"{prefix}_flux_{method}")
                # |z| = |flux - true| / error: the confident failures (large |z|) are the ones a catalogue trusts.
                flux_err = col(error_column(method, galaxy))
                with np.errstate(divide="ignore", invalid="ignore"):
                    abs_z = np.where(flux_err > 0, np.abs(pred - true_flux[galaxy]) / flux_err, np.nan)
                parts["flux_err"].append(flux_err)
                parts["abs_z"].append(abs_z)
                dmag = delta_mag(true_flux[galaxy], pred, zero_point_of(table, None), zero_point_of(table, method))
                parts["row"].append(np.arange(n))
                parts["blend_id"].append(ids)
                parts["method"].append(np.full(n, method, dtype=object))
                parts["galaxy"].append(np.full(n, galaxy, dtype=object))
                parts["dmag"].append(dmag)
                parts["abs_dmag"].append(np.abs(dmag))
                parts["detection"].append(detection)
                parts["morph_pair"].append(morph_pair.astype(object))
                parts["distance"].append(distance)
                parts["pair_dmag"].append(true_mag[galaxy] - true_mag[other])
                parts["iou"].append(col(f"{prefix}_iou_{method}"))
                parts["true_mag"].append(true_mag[galaxy])
                parts["pred_mag"].append(flux_to_mag(pred, zero_point_of(table, method)))
        return {key: np.concatenate(values) if values else np.array([]) for key, values in parts.items()}

    def attach_dataset(self, dataset) -> None:
        """Use *dataset* (BlendDataset or its folder) for images; every results id must be in it."""
        from napari_blendphot.blend.dataset import BlendDataset

        if not isinstance(dataset, BlendDataset):
            dataset = BlendDataset(dataset)
        dataset_ids = np.asarray(dataset.catalog["id"], np.int64)
        position = {int(i): k for k, i in enumerate(dataset_ids)}
        result_ids = np.asarray(self.results["id"], np.int64) if "id" in self.results.colnames else None
        if result_ids is None:
            raise InputError(self.source, "results table has no 'id' column, so its blends cannot be found "
                                          "in a dataset")
        missing = [int(i) for i in result_ids if int(i) not in position]
        if missing:
            raise InputError(self.source, f"{len(missing)} of {len(result_ids)} blend id(s) are not in the dataset "
                                          f"{dataset.path} (first: {missing[:5]})",
                             "open the blend dataset these results were computed on")
        rows = np.array([position[int(i)] for i in result_ids], dtype=np.int64)
        for name in ("g1_id", "g2_id"):
            if name in self.results.colnames and name in dataset.catalog.colnames:
                ours = np.asarray(self.results[name]).astype(np.int64)
                theirs = np.asarray(dataset.catalog[name]).astype(np.int64)[rows]
                if not np.array_equal(ours, theirs):
                    bad = int(np.flatnonzero(ours != theirs)[0])
                    raise InputError(self.source, f"blend {int(result_ids[bad])} pairs galaxy {name}={ours[bad]} "
                                                  f"here but {theirs[bad]} in {dataset.path}",
                                     "the results were made from another blend dataset")
        self.dataset = dataset
        self._dataset_rows = rows

    @property
    def has_images(self) -> bool:
        return self.dataset is not None

    def describe_source(self) -> str:
        """What is browsed, as a line of rich text (rows, methods, where the images come from)."""
        text = (f"<b>{len(self.results)}</b> blends × {len(self.methods)} methods ({', '.join(self.methods)}) "
                f"× 2 galaxies = {len(self)} rows, from {Path(self.source).name}.")
        if self.has_images:
            return text + f"<br>Images: {self.dataset.path}"
        return text + ("<br><span style='color:#e0c040'>No blend images: open the blend dataset the results came "
                       "from (the paper's blends were not published; its catalogue is table and scatter only).</span>")

    def describe_record(self, record: dict, detection_text: dict) -> str:
        """Every method's dmag (and IoU) of *record*'s blend, as rich text; *record*'s own cell in bold."""
        numbers = self.blend_numbers(record["row"])
        cells = []
        for method in self.methods:
            row = {r["galaxy"]: r for r in numbers if r["method"] == method}
            parts = []
            for galaxy in ("central", "companion"):
                entry = row[galaxy]
                dmag = "undetected" if not np.isfinite(entry["dmag"]) else f"{entry['dmag']:+.3f}"
                iou = "" if not np.isfinite(entry["iou"]) else f" (IoU {entry['iou']:.2f})"
                bold = method == record["method"] and galaxy == record["galaxy"]
                parts.append(f"<td><b>{dmag}{iou}</b></td>" if bold else f"<td>{dmag}{iou}</td>")
            cells.append(f"<tr><td>{method}</td>{''.join(parts)}</tr>")
        detection = detection_text.get(int(record["detection"]), str(record["detection"]))
        return (f"<b>blend {record['blend_id']}</b>: distance {record['distance']:.1f} px, types "
                f"{record['morph_pair']}, detection {detection}<table cellspacing='6'><tr><th></th>"
                f"<th>central dmag</th><th>companion dmag</th></tr>{''.join(cells)}</table>")

    # -- size, filter and sort ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.columns["row"])

    @property
    def view(self) -> np.ndarray:
        """Long-table indices of the rows shown, in display order."""
        return self._view

    @property
    def filter(self) -> FailureFilter:
        return self._filter

    @property
    def sort_key(self) -> tuple[str, bool]:
        return self._sort.column, self._sort.descending

    def values(self, column: str) -> np.ndarray:
        if column not in self.columns:
            raise InputError("failure table", f"unknown column {column!r}", f"columns: {', '.join(COLUMNS)}")
        return self.columns[column]

    def choices(self, column: str) -> list:
        """Distinct values of a categorical column (method, galaxy, detection, morph_pair), sorted."""
        return sorted(set(self.values(column).tolist()))

    def set_filter(self, **conditions) -> None:
        """Replace the filter (keywords of :class:`FailureFilter`); keeps the current row if it is still shown."""
        for name in ("abs_dmag", "distance", "pair_dmag"):
            value = conditions.get(name)
            if value is not None and (len(value) != 2):
                raise InputError(f"filter {name}", f"expected (low, high), got {value!r}")
        for name in ("methods", "galaxies", "detections", "morph_pairs"):
            if conditions.get(name) is not None:
                conditions[name] = tuple(conditions[name])
        self._filter = FailureFilter(**conditions)
        self._apply()

    def sort(self, column: str, descending: bool = False) -> None:
        """Sort the view by *column* (stable; NaN last in either direction)."""
        self.values(column)
        self._sort = _Sort(column, bool(descending))
        self._apply()

    def filtered_mask(self) -> np.ndarray:
        f, c = self._filter, self.columns
        keep = np.ones(len(self), bool)
        for name, allowed in (("method", f.methods), ("galaxy", f.galaxies), ("detection", f.detections),
                              ("morph_pair", f.morph_pairs)):
            if allowed is not None:
                keep &= np.isin(c[name], np.asarray(list(allowed), dtype=c[name].dtype))
        for name, bounds in (("abs_dmag", f.abs_dmag), ("distance", f.distance), ("pair_dmag", f.pair_dmag)):
            if bounds is None:
                continue
            low, high = bounds
            values = c[name]
            with np.errstate(invalid="ignore"):
                if low is not None:
                    keep &= values >= low
                if high is not None:
                    keep &= values <= high
        return keep

    def _order(self, rows: np.ndarray) -> np.ndarray:
        column, descending = self._sort.column, self._sort.descending
        values = self.columns[column][rows]
        if column in _NUMERIC:
            values = values.astype(np.float64)
            nan = np.isnan(values)
            keys = np.where(nan, 0.0, -values if descending else values)
            order = np.lexsort((keys, nan))  # NaN last, then value; stable
        else:
            as_text = values.astype(str)
            order = np.argsort(as_text, kind="stable")
            if descending:
                # reverse the groups but keep ties in table order
                _, inverse = np.unique(as_text, return_inverse=True)
                order = np.lexsort((np.arange(len(as_text)), -inverse))
        return rows[order]

    def _apply(self) -> None:
        current_row = self.current_row
        self._view = self._order(np.flatnonzero(self.filtered_mask()))
        self.view_changed.emit()
        position = -1
        if current_row is not None:
            hits = np.flatnonzero(self._view == current_row)
            position = int(hits[0]) if hits.size else -1
        self._set_current(position, force=True)

    # -- current row -----------------------------------------------------------------------------
    @property
    def current(self) -> int:
        """Position of the current row in the view (-1: none)."""
        return self._current

    @property
    def current_row(self) -> int | None:
        """Long-table index of the current row, or None."""
        if 0 <= self._current < len(self._view):
            return int(self._view[self._current])
        return None

    def _set_current(self, position: int, force: bool = False) -> None:
        position = int(position)
        if not -1 <= position < len(self._view):
            raise InputError("failure browser", f"row {position} out of range 0..{len(self._view) - 1}")
        if position != self._current or force:
            self._current = position
            self.current_changed.emit(position)

    def select(self, position: int) -> None:
        """Make the *position*-th shown row current."""
        self._set_current(position)

    def select_row(self, long_row: int) -> int:
        """Make long-table row *long_row* current (it must be shown); returns its position."""
        hits = np.flatnonzero(self._view == int(long_row))
        if not hits.size:
            raise InputError("failure browser", f"row {long_row} is hidden by the filter")
        self._set_current(int(hits[0]))
        return int(hits[0])

    def next(self) -> bool:
        if self._current + 1 < len(self._view):
            self._set_current(self._current + 1)
            return True
        return False

    def previous(self) -> bool:
        if self._current > 0:
            self._set_current(self._current - 1)
            return True
        if self._current == -1 and len(self._view):
            self._set_current(0)
            return True
        return False

    def record(self, long_row: int | None = None) -> dict:
        """All columns of one long-table row (default: the current one)."""
        long_row = self.current_row if long_row is None else int(long_row)
        if long_row is None:
            raise InputError("failure browser", "no row is selected")
        return {name: (values[long_row].item() if hasattr(values[long_row], "item") else values[long_row])
                for name, values in self.columns.items()}

    def blend_numbers(self, results_row: int) -> list[dict]:
        """Every (method, galaxy) row of one blend (by results-table row)."""
        rows = np.flatnonzero(self.columns["row"] == int(results_row))
        return [self.record(r) for r in rows]

    # -- images ---------------------------------------------------------------------------------
    def blend(self, results_row: int):
        """The :class:`~napari_blendphot.blend.assemble.Blend` of results row *results_row* (needs the dataset)."""
        if self.dataset is None:
            raise InputError(self.source, "no blend images: the results table holds numbers only",
                             "open the blend dataset folder the results came from (the paper's blends "
                             "were not published, so its catalogue can only be browsed as a table)")
        return self.dataset[int(self._dataset_rows[int(results_row)])]

    def dataset_row(self, results_row: int) -> int:
        if self.dataset is None:
            raise InputError(self.source, "no blend dataset attached")
        return int(self._dataset_rows[int(results_row)])

    def blend_state(self, results_row: int):
        """A :class:`~napari_blendphot.app.session.BlendState` for the shared current blend."""
        from napari_blendphot.app.session import BlendState

        blend = self.blend(results_row)
        blend_id = int(self.columns["blend_id"][np.flatnonzero(self.columns["row"] == results_row)[0]])
        return BlendState(image=np.asarray(blend.blend, np.float32), name=f"blend {blend_id}", truth=blend,
                          origin="failure-browser", extra={"blend_id": blend_id, "results_row": int(results_row)})

    def shown_blends(self, limit: int = 16) -> list[int]:
        """Results rows of the first *limit* distinct blends of the view, in view order."""
        seen: dict[int, None] = {}
        for row in self.columns["row"][self._view]:
            seen.setdefault(int(row), None)
            if len(seen) >= limit:
                break
        return list(seen)

    # -- masks re-computed ------------------------------------------------------------------------
    def rerunnable_methods(self) -> list[str]:
        """Methods of the results whose masks can be re-computed here (registered, mask-making, runnable)."""
        from napari_blendphot.deblend.registry import available_methods

        if not self.has_images:
            return []
        names = set(available_methods())
        return [m for m in self.methods if m in names and can_rerun_masks(m)]

    def rerun_masks(self, engine, results_row: int, methods) -> dict:
        """``{method: DeblendOutput}`` of *methods* on the blend of results row *results_row*, in *engine*.

        A :func:`napari_blendphot.predict` of that one blend (same assignment
        truth, same options as any run) that keeps the outputs, masks included.
        """
        from napari_blendphot.prediction import predict

        outputs: dict = {}
        predict(self.dataset.select(index=[self.dataset_row(results_row)]), list(methods), engine=engine,
                chunk_size=1, on_outputs=lambda _chunk, chunk_outputs: outputs.update(chunk_outputs))
        return outputs

    # -- scatter ---------------------------------------------------------------------------------
    def scatter_points(self, x: str = "pair_dmag") -> dict:
        """Per method: ``(x values, dmag, long-table rows)`` of the shown rows with a finite dmag."""
        if x not in ("pair_dmag", "distance"):
            raise InputError("scatter x", f"unknown axis {x!r}", "use pair_dmag or distance")
        rows = self._view
        out = {}
        for method in self.methods:
            keep = rows[(self.columns["method"][rows] == method)]
            keep = keep[np.isfinite(self.columns["dmag"][keep]) & np.isfinite(self.columns[x][keep].astype(float))]
            out[method] = (self.columns[x][keep].astype(float), self.columns["dmag"][keep], keep)
        return out

    # -- exports ---------------------------------------------------------------------------------
    def export_csv(self, path, overwrite: bool = False) -> Path:
        """Write the shown rows (in display order) with all their numbers to a CSV file."""
        from astropy.table import Table

        from napari_blendphot.provenance import make_provenance
        from napari_blendphot.tables import write_table

        path = Path(path)
        check_output_path(path, overwrite)
        rows = self._view
        table = Table()
        table["results_row"] = self.columns["row"][rows]
        for name in COLUMNS:
            values = self.columns[name][rows]
            table[name] = values.astype(str) if values.dtype == object else values
        f = self._filter
        table.meta["provenance"] = make_provenance(
            "failure-browser-export",
            inputs={"results": self.source},
            filter={k: (list(v) if v is not None else None) for k, v in f.__dict__.items()},
            sort={"column": self._sort.column, "descending": self._sort.descending},
        )
        return write_table(table, path, overwrite=overwrite)

    def montage(self, path, limit: int = 16, overwrite: bool = False, columns: int = 4) -> Path:
        """PNG montage of the first *limit* shown blends: asinh stretch, truth outlines, dmag per method."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        from napari_blendphot.display import GALAXY_COLORS, asinh_stretch

        path = Path(path)
        check_output_path(path, overwrite)
        if self.dataset is None:
            self.blend(0)  # raises the "no images" error
        blends = self.shown_blends(limit)
        if not blends:
            raise InputError("failure browser", "no rows are shown: nothing to draw")
        columns = min(columns, len(blends))
        lines = len(blends) // columns + (len(blends) % columns > 0)
        figure = Figure(figsize=(2.6 * columns, 2.95 * lines), dpi=110)
        for k, results_row in enumerate(blends):
            axis = figure.add_subplot(lines, columns, k + 1)
            blend = self.blend(results_row)
            axis.imshow(asinh_stretch(blend.blend), cmap="gray", origin="upper", interpolation="nearest")
            for channel, label in ((0, 1), (1, 2)):
                if np.any(blend.masks[channel]):
                    axis.contour(blend.masks[channel], levels=[0.5], colors=[GALAXY_COLORS[label][:3]],
                                 linewidths=0.8)
            numbers = self.blend_numbers(results_row)
            text = []
            for method in self.methods:
                by_galaxy = {r["galaxy"]: r["dmag"] for r in numbers if r["method"] == method}
                text.append(f"{method[:10]}: " + " ".join(
                    "  -- " if not np.isfinite(by_galaxy.get(g, np.nan)) else f"{by_galaxy[g]:+.2f}"
                    for g in ("central", "companion")))
            blend_id = numbers[0]["blend_id"]
            axis.set_title(f"blend {blend_id}  d={numbers[0]['distance']:.0f}px", fontsize=8)
            axis.text(0.02, 0.02, "\n".join(text), transform=axis.transAxes, fontsize=7, color="yellow",
                      family="monospace", va="bottom")
            axis.set_xticks([])
            axis.set_yticks([])
        figure.suptitle("dmag (central, companion) per method; outlines: blue central, orange companion",
                        fontsize=8)
        figure.tight_layout()
        from napari_blendphot.atomic import atomic_output
        from napari_blendphot.outputs import PNG_SOFTWARE

        with atomic_output(path, suffix=".png") as tmp:
            figure.savefig(tmp, format="png", metadata={"Software": PNG_SOFTWARE})
        return path
