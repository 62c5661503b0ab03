"""The Curation widget's page of thumbnails: a mosaic of the filtered galaxies, outlined by decision.

The layout, the tile <-> position mapping and the colours are in the Qt-free
:mod:`napari_blendphot.curation.pages`; this mixin of
:class:`~napari_blendphot.widgets.curation.CurationWidget` draws them in the
viewer and turns clicks on tiles into "open this galaxy".
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QGroupBox, QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout

from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.widgets._qt import notify as _notify

#: Layer names of the Figure-1 panels (updated in place; never duplicated).
LAYER_NAMES = ("original", "cleaned", "segmentation")
#: Gap between the three panels, in pixels of the stamp.
PANEL_GAP = 8
#: Layers of the page of thumbnails (present only while the page is shown).
PAGE_LAYER = "curation page"
PAGE_TILES_LAYER = "curation page tiles"
#: Space between the Figure-1 panels and the page of thumbnails, in stamp pixels.
PAGE_OFFSET = 4 * PANEL_GAP
#: Shapes layer holding the panel frames and titles.
FRAMES_LAYER = "curation panels"


class CurationPageMixin:
    """The page of thumbnails (uses the widget's ``viewer``, ``model`` and ``do``)."""

    def _build_page_group(self) -> QGroupBox:
        from napari_blendphot.curation.pages import CURRENT_COLOR, DECISION_COLORS, MAX_GRID_SIDE

        group = QGroupBox("Page of thumbnails")
        box = QVBoxLayout(group)
        row = QHBoxLayout()
        self.page_check = QCheckBox("Show page  [G]")
        self.page_check.setToolTip("A grid of the cleaned stamps of the filtered galaxies: the page that holds "
                                   "the current galaxy, right of the panels. Click a tile to open it.")
        self.page_rows_spin = QSpinBox()
        self.page_columns_spin = QSpinBox()
        for spin, tip in ((self.page_rows_spin, "rows"), (self.page_columns_spin, "columns")):
            spin.setRange(1, MAX_GRID_SIDE)
            spin.setValue(6)
            spin.setToolTip(f"Thumbnail {tip} per page")
        row.addWidget(self.page_check)
        row.addStretch(1)
        row.addWidget(self.page_rows_spin)
        row.addWidget(QLabel("×"))
        row.addWidget(self.page_columns_spin)
        box.addLayout(row)
        nav = QHBoxLayout()
        self.page_previous_button = QPushButton("◀  Page  [PgUp]")
        self.page_next_button = QPushButton("Page  ▶  [PgDn]")
        self.page_label = QLabel("")
        nav.addWidget(self.page_previous_button)
        nav.addWidget(self.page_label, 1, Qt.AlignmentFlag.AlignCenter)
        nav.addWidget(self.page_next_button)
        box.addLayout(nav)
        names = (("accept", "accepted"), ("reject", "rejected"), ("skip", "skipped"), (None, "undecided"))
        legend = QLabel("outline: " + " · ".join(
            f"<b style='color:{DECISION_COLORS[key]}'>■ {text}</b>" for key, text in names)
            + f" · <b style='color:{CURRENT_COLOR}'>□ current</b> (outer white frame)")
        legend.setWordWrap(True)
        legend.setTextFormat(Qt.TextFormat.RichText)
        legend.setToolTip("Okabe-Ito colours, distinguishable with the common colour-vision deficiencies; "
                          "the tile text repeats the decision: 'ok', 'rej N' (reason N), 'skip'.")
        box.addWidget(legend)
        self.page_check.toggled.connect(self._set_page_shown)
        self.page_rows_spin.valueChanged.connect(self._show_page)
        self.page_columns_spin.valueChanged.connect(self._show_page)
        self.page_previous_button.clicked.connect(lambda: self.do("page_previous"))
        self.page_next_button.clicked.connect(lambda: self.do("page_next"))
        return group

    def page_layout(self):
        """The :class:`~napari_blendphot.curation.pages.PageLayout` of the spin boxes."""
        from napari_blendphot.curation.pages import PageLayout

        return PageLayout(rows=self.page_rows_spin.value(), columns=self.page_columns_spin.value(),
                          stamp_size=STAMP_SIZE)

    def page_selection(self):
        """The :class:`~napari_blendphot.curation.pages.PageSelection` holding the current galaxy."""
        from napari_blendphot.curation.pages import page_of

        return page_of(self.model.filtered_rows(), self.model.index, self.page_layout().per_page)

    def _set_page_shown(self, shown: bool) -> None:
        if shown:
            had_page = PAGE_LAYER in self.viewer.layers
            self._show_page()
            if not had_page and PAGE_LAYER in self.viewer.layers:
                self.viewer.reset_view()
            self._hook_page()
            return
        self._release_page_hooks()
        for name in (PAGE_TILES_LAYER, PAGE_LAYER):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self._page_key = None
        self.page_label.setText("")
        if "original" in self.viewer.layers:
            self.viewer.reset_view()

    def _hook_page(self) -> None:
        if self._on_page_click not in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.append(self._on_page_click)
            self.viewer.layers.events.removed.connect(self._on_layer_removed)

    def _release_page_hooks(self) -> None:
        if self._on_page_click in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_page_click)
            self.viewer.layers.events.removed.disconnect(self._on_layer_removed)

    def _on_layer_removed(self, event) -> None:
        # The reviewer deleted a page layer from the layer list: that means "page off".
        if event.value.name in (PAGE_LAYER, PAGE_TILES_LAYER) and self.page_check.isChecked():
            self.page_check.setChecked(False)

    def _show_page(self, *_) -> None:
        """Draw (or update in place) the mosaic and the tile outlines of the current page."""
        from napari_blendphot.curation.pages import build_mosaic, tile_outlines

        if self.model is None or not self.page_check.isChecked():
            return
        model = self.model
        layout = self.page_layout()
        selection = self.page_selection()
        translate = (0, len(LAYER_NAMES) * (STAMP_SIZE + PANEL_GAP) + PAGE_OFFSET)
        key = (selection.rows, layout, model.clean_seed, id(model))
        if key != self._page_key or PAGE_LAYER not in self.viewer.layers:  # new thumbnails, not just decisions
            mosaic = build_mosaic([model.cleaned_stamp(row)[0] for row in selection.rows], layout)
            if PAGE_LAYER in self.viewer.layers:
                self.viewer.layers[PAGE_LAYER].data = mosaic
            else:
                layer = self.viewer.add_image(mosaic, name=PAGE_LAYER, colormap="gray", contrast_limits=(0, 1),
                                              translate=translate)
                layer.metadata["blendphot_kind"] = "curation"
                self._bind_layer_keys(layer)
                # Keep the reviewer's selected layer: a new layer would take the selection.
                if "original" in self.viewer.layers:
                    self.viewer.layers.selection.active = self.viewer.layers["original"]
            self._page_key = key
        self.viewer.layers[PAGE_LAYER].metadata["page_rows"] = list(selection.rows)
        outlines = tile_outlines(selection, model.sample.ids, model.store.current, layout)
        self._draw_tiles(outlines, translate, (selection.rows, layout))
        self._page_selection = selection
        shown = len(selection.rows)
        first = selection.page * layout.per_page
        self.page_label.setText(f"page {selection.page + 1} / {selection.n_pages}"
                                + (f" · {first + 1}-{first + shown} of the filter" if shown else " · empty filter"))
        self.page_previous_button.setEnabled(selection.page > 0)
        self.page_next_button.setEnabled(selection.page + 1 < selection.n_pages)

    def _draw_tiles(self, outlines, translate, page_key) -> None:
        import pandas as pd

        features = pd.DataFrame({"label": outlines.labels, "kind": outlines.kinds, "row": outlines.rows})
        text = {"string": "{label}", "anchor": "upper_left", "color": "white", "size": 7,
                "translation": [22, 6]}  # inside the tile corner (text hangs up from its anchor)
        corners = list(outlines.corners)
        if PAGE_TILES_LAYER not in self.viewer.layers:
            layer = self.viewer.add_shapes(
                corners, shape_type="rectangle", name=PAGE_TILES_LAYER, face_color="transparent",
                edge_color=outlines.edge_colors or "white", edge_width=outlines.edge_widths or 1,
                features=features, text=text, translate=translate)
            layer.editable = False
            layer.metadata["blendphot_kind"] = "curation"
            self._bind_layer_keys(layer)
            if "original" in self.viewer.layers:
                self.viewer.layers.selection.active = self.viewer.layers["original"]
        else:
            layer = self.viewer.layers[PAGE_TILES_LAYER]
            if layer.metadata.get("page_key") != page_key:
                # Another page: new rectangles, in the same layer (it keeps its place in the list).
                layer.data = corners
                layer.shape_type = ["rectangle"] * len(corners)
                if corners:
                    layer.edge_width = outlines.edge_widths
                    layer.face_color = "transparent"
            # Same page: only colours and text change (the rectangles stay; see tile_outlines).
            layer.features = features
            if corners:
                layer.edge_color = outlines.edge_colors
            layer.text = text
        layer.metadata["page_key"] = page_key

    def _slot_under(self, world_position):
        """Tile of the page under a canvas (world) position, or None."""
        if PAGE_LAYER not in self.viewer.layers:
            return None
        position = self.viewer.layers[PAGE_LAYER].world_to_data(world_position)
        return self.page_layout().slot_at(position[-2], position[-1])

    def _on_page_click(self, _viewer, event):
        """Left click (press and release on the same tile, so a pan does not count) opens that tile."""
        if self.model is None or event.button != 1 or event.modifiers:
            return
        slot = self._slot_under(event.position)
        if slot is None:
            return
        yield
        while event.type == "mouse_move":
            yield
        if self._slot_under(event.position) == slot:
            self.open_tile(slot)

    def open_tile(self, slot: int) -> None:
        """Make the galaxy of tile *slot* of the page shown the current one."""
        selection = self._page_selection
        if self.model is None or selection is None or not 0 <= slot < len(selection.rows):
            return
        self.model.go_to(selection.rows[slot])

    def _turn_page(self, step: int) -> None:
        """Go to the first galaxy of the next (+1) or previous (-1) page of the filter."""
        per_page = self.page_layout().per_page
        rows = self.model.filtered_rows()
        selection = self.page_selection()
        target = selection.page + step
        if not 0 <= target < selection.n_pages or rows.size == 0:
            _notify("info", "First page." if step < 0 else "Last page.")
            return
        self.model.go_to(int(rows[target * per_page]))
