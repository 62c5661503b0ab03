"""Blend Builder: make a blend by hand, as the paper does by rule, and watch it change live.

A thin Qt view over :class:`~napari_blendphot.app.builder.BlendBuilderModel`:

* **Source**: a sample layer of the viewer (``metadata["blendphot_kind"] ==
  "sample"``: from the reader or the sample data), the embedded mock sample,
  or a file/folder.  Neighbours are cleaned out of every stamp first
  (seeded), as in the paper.
* **Pair**: central and companion by id, narrowed by type and magnitude
  filters, or a random pair by the paper's rules (key ``R``); both galaxies
  are shown as small asinh-stretched thumbnails.
* **Placement**: drag the point of the "companion position" layer on the
  canvas, or use the dy/dx spin boxes (two-way bound); a slider changes the
  companion's magnitude.
* Every change updates the blend image layer and its true-mask outlines in
  place, shows distance, pair dmag and distance / R_central, and sets the
  viewer's current blend, which the Deblend Inspector follows.
* **Save** the blend, or a set of blends, as a blend dataset folder.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_blendphot.app.builder import DMAG_RANGE, SHIFT_MAX, SHIFT_MIN, BlendBuilderModel
from napari_blendphot.widgets._builder_parts import (_THUMB, POSITION_LAYER, CompanionPointMixin, GalaxyPicker,
                                                     stamp_pixmap)
from napari_blendphot.widgets._builder_source import SampleSourceMixin
from napari_blendphot.widgets._qt import scrolling_layout

#: Returned by BlendBuilderWidget._safely when the action raised (and was reported).
_FAILED = object()
#: Slider steps per magnitude.
_DMAG_STEPS = 100
#: Keyboard shortcuts (viewer-wide; an active layer's own keys take precedence).
SHORTCUTS = {
    "random": "R",
    "swap": "Shift-R",
    "add": "Alt-A",
    "fainter": "]",
    "brighter": "[",
}

#: The widget's help text (its "?" button, tooltip and What's This).
HELP = ("Build a blend of two galaxies: pick a central and a companion (type, magnitude), then drag the "
        "companion's point on the canvas or set its shift and dmag. The blend and its true masks (white: central, "
        "grey: companion) become the current blend, which the Deblend Inspector measures. See docs/plugin.md.")


def _notify_error(exc: Exception) -> None:
    from napari_blendphot.widgets._qt import notify

    notify("error", str(exc))


class BlendBuilderWidget(SampleSourceMixin, CompanionPointMixin, QWidget):
    """Dock widget: build a blend from two galaxies and place the companion on the canvas.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    model : BlendBuilderModel, optional
        A model to bind to (a new one otherwise).
    """

    def __init__(self, napari_viewer, model: BlendBuilderModel | None = None, parent=None):
        super().__init__(parent)
        # napari hands plugin widgets a fresh PublicOnlyProxy of the viewer each; the shared
        # current blend is keyed by viewer, so keep the viewer itself (it outlives any proxy).
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.model = model or BlendBuilderModel()
        self._blend_layer = None
        self._truth_layer = None
        self._points_layer = None
        self._syncing = False
        self._dragging = False
        self._worker = None
        self._contrast = None
        self._build_ui()
        self._connect()
        self._refresh_sources()
        if self.model.sample is not None:
            self._on_sample_changed()
            self._on_blend_changed(self.model.blend)

    # -- UI ------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        layout = scrolling_layout(self, HELP)
        layout.setContentsMargins(6, 6, 6, 6)

        source = QGroupBox("Galaxies")
        source_layout = QGridLayout(source)
        self.source_combo = QComboBox()
        self.source_combo.setToolTip("Sample layers of this viewer (opened files or File > Open Sample)")
        self.use_layer_button = QPushButton("Use")
        self.use_layer_button.setToolTip("Build blends from the galaxies of the chosen layer")
        self.embedded_button = QPushButton("Embedded mock sample")
        self.embedded_button.setToolTip("The 300 CANDELS-like mock galaxies shipped with the package")
        self.open_button = QToolButton()
        self.open_button.setText("Open… ▾")
        self.open_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        # The arrow is in the text: the style's own indicator would sit on top of it.
        self.open_button.setStyleSheet("QToolButton::menu-indicator { image: none; width: 0px; }")
        menu = QMenu(self.open_button)
        self._open_file_action = menu.addAction("Sample file (.fits)…")
        self._open_folder_action = menu.addAction("Folder (CANDELS or FITS cutouts)…")
        self.open_button.setMenu(menu)
        self.open_button.setToolTip("Read galaxies from a sample file, a CANDELS folder or a folder of cutouts")
        self.source_label = QLabel("No galaxies loaded.")
        self.source_label.setWordWrap(True)
        self.clean_note = QLabel("Neighbours are removed from every stamp (seeded noise fill, as in the paper) "
                                 "before blending.")
        self.clean_note.setWordWrap(True)
        self.clean_note.setStyleSheet("color: gray; font-size: 10px;")
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumHeight(8)
        self.busy.setTextVisible(False)
        self.busy.hide()
        source_layout.addWidget(self.source_combo, 0, 0, 1, 2)
        source_layout.addWidget(self.use_layer_button, 0, 2)
        source_layout.addWidget(self.embedded_button, 1, 0, 1, 2)
        source_layout.addWidget(self.open_button, 1, 2)
        source_layout.addWidget(self.source_label, 2, 0, 1, 3)
        source_layout.addWidget(self.clean_note, 3, 0, 1, 3)
        source_layout.addWidget(self.busy, 4, 0, 1, 3)
        layout.addWidget(source)

        pair = QGroupBox("Pair")
        pair_layout = QVBoxLayout(pair)
        pair_layout.setSpacing(3)
        self.central_picker = GalaxyPicker("central")
        self.companion_picker = GalaxyPicker("companion")
        pair_layout.addWidget(self._caption("Central", "#1fa1ff"))
        pair_layout.addWidget(self.central_picker)
        pair_layout.addWidget(self._caption("Companion", "#ff8c00"))
        pair_layout.addWidget(self.companion_picker)
        buttons = QHBoxLayout()
        self.random_button = QPushButton("Random pair (paper's rules)")
        self.random_button.setToolTip(f"Draw a pair with |dmag| < 2 and the published shift rule, among the "
                                      f"filtered galaxies (seeded) [{SHORTCUTS['random']}]")
        self.swap_button = QPushButton("Swap")
        self.swap_button.setToolTip(f"Exchange central and companion [{SHORTCUTS['swap']}]")
        buttons.addWidget(self.random_button, 3)
        buttons.addWidget(self.swap_button, 1)
        pair_layout.addLayout(buttons)
        thumbs = QGridLayout()
        self.central_thumb = QLabel()
        self.companion_thumb = QLabel()
        self.central_text = QLabel()
        self.companion_text = QLabel()
        for column, (thumb, text, role) in enumerate(((self.central_thumb, self.central_text, "central"),
                                                     (self.companion_thumb, self.companion_text, "companion"))):
            thumb.setFixedSize(_THUMB, _THUMB)
            thumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
            thumb.setStyleSheet("background: black;")
            thumb.setToolTip(f"The {role} stamp alone (cleaned, asinh stretch)")
            text.setWordWrap(True)
            text.setStyleSheet("font-size: 10px;")
            thumbs.addWidget(thumb, 0, column, Qt.AlignmentFlag.AlignHCenter)
            thumbs.addWidget(text, 1, column)
        pair_layout.addLayout(thumbs)
        layout.addWidget(pair)

        place = QGroupBox("Companion")
        place_layout = QFormLayout(place)
        place_layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        shifts = QHBoxLayout()
        self.dy_spin = QSpinBox()
        self.dx_spin = QSpinBox()
        for spin, axis in ((self.dy_spin, "rows (down)"), (self.dx_spin, "columns (right)")):
            spin.setRange(SHIFT_MIN, SHIFT_MAX)
            spin.setSuffix(" px")
            spin.setToolTip(f"Companion shift along {axis}; or drag the point of the "
                            f"'{POSITION_LAYER}' layer on the canvas")
        shifts.addWidget(QLabel("dy"))
        shifts.addWidget(self.dy_spin)
        shifts.addWidget(QLabel("dx"))
        shifts.addWidget(self.dx_spin)
        place_layout.addRow("Shift", shifts)
        dmag_row = QHBoxLayout()
        self.dmag_slider = QSlider(Qt.Orientation.Horizontal)
        self.dmag_slider.setRange(int(DMAG_RANGE[0] * _DMAG_STEPS), int(DMAG_RANGE[1] * _DMAG_STEPS))
        self.dmag_slider.setSingleStep(5)
        self.dmag_slider.setPageStep(50)
        self.dmag_slider.setToolTip(f"Change the companion's magnitude (negative = brighter); flux x "
                                    f"10^(-0.4 dmag) [{SHORTCUTS['brighter']} / {SHORTCUTS['fainter']}: "
                                    f"0.1 mag]")
        self.dmag_label = QLabel("+0.00")
        self.dmag_label.setMinimumWidth(40)
        dmag_row.addWidget(self.dmag_slider)
        dmag_row.addWidget(self.dmag_label)
        place_layout.addRow("dmag", dmag_row)
        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        place_layout.addRow(self.info_label)
        layout.addWidget(place)

        save = QGroupBox("Save")
        save_layout = QGridLayout(save)
        self.add_button = QPushButton("Add to set")
        self.add_button.setToolTip(f"Keep this blend in the set to save [{SHORTCUTS['add']}]")
        self.clear_button = QPushButton("Clear set")
        self.save_blend_button = QPushButton("Save blend…")
        self.save_blend_button.setToolTip("Write this blend as a one-blend dataset folder")
        self.save_set_button = QPushButton("Save set…")
        self.save_set_button.setToolTip("Write the set as a blend dataset folder (blendphot predict / "
                                        "File > Open read it)")
        self.set_label = QLabel("Set: 0 blends")
        save_layout.addWidget(self.add_button, 0, 0)
        save_layout.addWidget(self.clear_button, 0, 1)
        save_layout.addWidget(self.set_label, 0, 2)
        save_layout.addWidget(self.save_blend_button, 1, 0)
        save_layout.addWidget(self.save_set_button, 1, 1)
        layout.addWidget(save)
        layout.addStretch(1)
        self._set_enabled(False)

    @staticmethod
    def _caption(text: str, color: str) -> QLabel:
        label = QLabel(f"<b style='color:{color}'>■</b> <b>{text}</b>")
        return label

    def _set_enabled(self, enabled: bool) -> None:
        for widget in (self.central_picker, self.companion_picker, self.random_button, self.swap_button,
                       self.dy_spin, self.dx_spin, self.dmag_slider, self.add_button, self.clear_button,
                       self.save_blend_button, self.save_set_button):
            widget.setEnabled(enabled)

    def _connect(self) -> None:
        self.use_layer_button.clicked.connect(self._use_selected_layer)
        self.embedded_button.clicked.connect(self.load_embedded)
        self._open_file_action.triggered.connect(self._open_file_dialog)
        self._open_folder_action.triggered.connect(self._open_folder_dialog)
        for picker in (self.central_picker, self.companion_picker):
            picker.galaxy_combo.currentIndexChanged.connect(self._on_galaxy_chosen)
            picker.type_combo.currentIndexChanged.connect(self._on_filters_changed)
            picker.mag_min.valueChanged.connect(self._on_filters_changed)
            picker.mag_max.valueChanged.connect(self._on_filters_changed)
        self.random_button.clicked.connect(self.random_pair)
        self.swap_button.clicked.connect(self.swap)
        self.dy_spin.valueChanged.connect(self._on_spin_changed)
        self.dx_spin.valueChanged.connect(self._on_spin_changed)
        self.dmag_slider.valueChanged.connect(self._on_dmag_slider)
        self.dmag_slider.sliderReleased.connect(self._on_dmag_released)
        self.add_button.clicked.connect(self.add_to_set)
        self.clear_button.clicked.connect(self.model.clear_set)
        self.save_blend_button.clicked.connect(lambda: self._save_dialog(whole_set=False))
        self.save_set_button.clicked.connect(lambda: self._save_dialog(whole_set=True))
        self.model.sample_changed.connect(self._on_sample_changed)
        self.model.pair_changed.connect(self._on_pair_changed)
        self.model.blend_changed.connect(self._on_blend_changed)
        self.model.set_changed.connect(self._on_set_changed)
        self.viewer.layers.events.inserted.connect(self._refresh_sources)
        self.viewer.layers.events.removed.connect(self._refresh_sources)
        self._bind_keys()

    def _bind_keys(self) -> None:
        import weakref

        # The viewer's keymap outlives this widget: hold it weakly, so a closed builder can go.
        widget_ref = weakref.ref(self)

        def key_action(method: str, *args):
            def callback(viewer):
                widget = widget_ref()
                if widget is None or widget.model.sample is None:
                    return
                try:
                    widget._safely(getattr(widget, method), *args)
                except RuntimeError:
                    pass  # the widget's Qt side was deleted: the key does nothing
            return callback

        actions = {
            "random": key_action("random_pair"),
            "swap": key_action("swap"),
            "add": key_action("add_to_set"),
            "fainter": key_action("_step_dmag", +0.1),
            "brighter": key_action("_step_dmag", -0.1),
        }
        for name, key in SHORTCUTS.items():
            self.viewer.bind_key(key, actions[name], overwrite=True)

    def _safely(self, action, *args):
        """Run a UI action; show bad input as a notification instead of raising into Qt."""
        from napari_blendphot.errors import BlendphotError

        try:
            return action(*args)
        except BlendphotError as exc:
            _notify_error(exc)
        return _FAILED

    # -- model -> view -------------------------------------------------------------------------
    def _on_sample_changed(self) -> None:
        sample = self.model.sample
        counts = ", ".join(f"{t} {n}" for t, n in sample.type_counts().items())
        self.source_label.setText(f"<b>{self.model.sample_name}</b>: {len(sample)} galaxies ({counts})")
        mags = np.asarray(sample.catalog["mag"], np.float64)
        for picker in (self.central_picker, self.companion_picker):
            picker.reset_range(mags)
        self._set_enabled(True)
        self._contrast = None

    def _on_filters_changed(self, *args) -> None:
        if self.model.sample is None:
            return
        for picker in (self.central_picker, self.companion_picker):
            galtype, low, high = picker.filter_values()
            self.model.set_filter(picker.role, galtype, low, high)
        self._fill_pickers()

    def _fill_pickers(self) -> None:
        self.central_picker.fill(self.model, self.model.candidates("central"), self.model.central_index)
        self.companion_picker.fill(self.model, self.model.candidates("companion"), self.model.companion_index)

    def _on_pair_changed(self) -> None:
        model = self.model
        self._fill_pickers()
        sample = model.sample
        self.central_thumb.setPixmap(stamp_pixmap(sample.images[model.central_index]))
        self.companion_thumb.setPixmap(stamp_pixmap(sample.images[model.companion_index]))
        self.central_text.setText(model.describe_galaxy(model.central_index).replace("  ", "<br>", 2))
        self.companion_text.setText(model.describe_galaxy(model.companion_index).replace("  ", "<br>", 2))
        self._contrast = None  # new galaxies: choose the display range again

    def _on_blend_changed(self, blend) -> None:
        if blend is None:
            return
        model = self.model
        self._update_layers(blend)
        self._syncing = True
        try:
            self.dy_spin.setValue(model.dy)
            self.dx_spin.setValue(model.dx)
            if self.dmag_slider.value() != round(model.dmag * _DMAG_STEPS):
                self.dmag_slider.setValue(int(round(model.dmag * _DMAG_STEPS)))
        finally:
            self._syncing = False
        self.dmag_label.setText(f"{model.dmag:+.2f}")
        values = model.measurements()
        self.info_label.setText(
            f"distance <b>{values['distance_px']:.1f} px</b> = {values['distance_arcsec']:.2f}″ · "
            f"distance / R<sub>central</sub> <b>{values['distance_over_radius']:.2f}</b><br>"
            f"pair dmag (companion − central) <b>{values['pair_dmag']:+.2f}</b> "
            f"({values['companion_mag']:.2f} − {values['central_mag']:.2f})")
        from napari_blendphot.app.session import BlendState, current_blend_for

        current_blend_for(self.viewer).set(BlendState(image=blend.blend, name=model.name, truth=blend,
                                                      origin="builder", interactive=bool(model.interactive)))

    def _on_set_changed(self, count: int) -> None:
        self.set_label.setText(f"Set: {count} blend{'s' if count != 1 else ''}")

    # -- layers (the companion's point: CompanionPointMixin) ---------------------------------------
    def _layer_alive(self, layer) -> bool:
        return layer is not None and layer in self.viewer.layers

    def _update_layers(self, blend) -> None:
        from napari_blendphot._reader import mask_label_kwargs, mask_outlines
        from napari_blendphot.display import astro_contrast

        name = self.model.name
        meta = {"blendphot_kind": "builder", "blend": blend, "source": "Blend Builder"}
        if getattr(self, "_contrast", None) is None:
            self._contrast = astro_contrast(blend.blend)
        if not self._layer_alive(self._blend_layer):
            self._blend_layer = self.viewer.add_image(blend.blend, name=name, colormap="gray", metadata=meta,
                                                      **self._contrast)
        else:
            self._blend_layer.data = blend.blend
            self._blend_layer.metadata.update(meta)
            # Stable while dragging: only a new pair chooses new limits.
            self._blend_layer.contrast_limits = self._contrast["contrast_limits"]
        outlines = mask_outlines(blend.masks)
        if not self._layer_alive(self._truth_layer):
            self._truth_layer = self.viewer.add_labels(outlines, **mask_label_kwargs(f"{name} truth", meta))
        else:
            self._truth_layer.data = outlines
            self._truth_layer.metadata.update(meta)
        self._blend_layer.name = name
        self._truth_layer.name = f"{name} truth"
        self._update_point(blend)

    def _on_spin_changed(self, *args) -> None:
        if self._syncing or self.model.sample is None:
            return
        self._safely(self.model.set_shift, self.dy_spin.value(), self.dx_spin.value())

    def _on_dmag_slider(self, value: int) -> None:
        self.dmag_label.setText(f"{value / _DMAG_STEPS:+.2f}")
        if self._syncing or self.model.sample is None:
            return
        self._safely(self.model.set_dmag, value / _DMAG_STEPS, self.dmag_slider.isSliderDown())

    def _on_dmag_released(self) -> None:
        if self.model.sample is not None:
            self._safely(self.model.set_dmag, self.dmag_slider.value() / _DMAG_STEPS, False)

    def _step_dmag(self, step: float) -> None:
        low, high = DMAG_RANGE
        self.model.set_dmag(min(max(round(self.model.dmag + step, 2), low), high))

    def _on_galaxy_chosen(self, *args) -> None:
        if self.model.sample is None:
            return
        central = self.central_picker.galaxy_combo.currentData()
        companion = self.companion_picker.galaxy_combo.currentData()
        if central is None or companion is None:
            return
        if self._safely(self.model.set_pair, int(central), int(companion)) is _FAILED:
            self._fill_pickers()  # show the model's pair again

    # -- actions -------------------------------------------------------------------------------
    def random_pair(self) -> None:
        """A random pair by the paper's rules among the filtered galaxies."""
        self._safely(self.model.random_pair)

    def swap(self) -> None:
        """Exchange the central and the companion (shift and dmag kept)."""
        self._safely(self.model.set_pair, self.model.companion_index, self.model.central_index)

    def add_to_set(self) -> None:
        self._safely(self.model.add_to_set)

    def save(self, path, whole_set: bool = True, overwrite: bool = False):
        """Write the set (or the current blend) to *path*; returns the folder."""
        from napari.utils.notifications import show_info

        action = self.model.save_set if whole_set else self.model.save_current
        out = action(path, overwrite=overwrite)
        show_info(f"Blend Builder: wrote {out}")
        return out

    def _save_dialog(self, whole_set: bool) -> None:
        from pathlib import Path

        from napari_blendphot.errors import BlendphotError

        if whole_set and not self.model.built:
            _notify_error(ValueError("Blend Builder: the set is empty (press 'Add to set' first)"))
            return
        path, _ = QFileDialog.getSaveFileName(self, "Blend dataset folder to write", "built_blends",
                                              options=QFileDialog.Option.ShowDirsOnly)
        if not path:
            return
        folder = Path(path)
        overwrite = False
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            answer = QMessageBox.question(self, "Replace folder?",
                                          f"{folder} exists and is not empty. Replace it?",
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                          QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return
            overwrite = True
        try:
            self.save(folder, whole_set=whole_set, overwrite=overwrite)
        except (BlendphotError, OSError) as exc:
            _notify_error(exc)
