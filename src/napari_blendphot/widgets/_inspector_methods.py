"""The Deblend Inspector's methods box: a check box per registered method, weights, precision and symmetries.

Which rows get a weights button and whether the precision and symmetry choices show come
from the methods' capabilities (:mod:`napari_blendphot.deblend.registry`), so
a third-party Keras method gets them too.
"""

from __future__ import annotations

import functools

from qtpy.QtWidgets import QCheckBox, QComboBox, QFileDialog, QGridLayout, QGroupBox, QLabel, QToolButton

from napari_blendphot.errors import InputError


class MethodsBox(QGroupBox):
    """Check boxes, weights labels and buttons, and the network precision of an inspector model.

    Changes go to the model; then ``changed(weights_of=None)`` is called (with
    the method's name when its weights changed), and problems go to
    ``notify(kind, message)``.
    """

    def __init__(self, model, notify, changed, parent=None):
        super().__init__("Methods", parent)
        self.model = model
        self._notify = notify
        self._changed = changed
        from napari_blendphot.deblend.registry import method_info, unavailable_reason
        from napari_blendphot.models.precision import resolve_precision

        grid = QGridLayout(self)
        grid.setContentsMargins(6, 4, 6, 4)
        self.method_boxes: dict[str, QCheckBox] = {}
        self.weights_labels: dict[str, QLabel] = {}
        for row, name in enumerate(self.model.available):
            missing = None
            try:
                info = method_info(name)
                label, tip = info.label, info.description
                missing = unavailable_reason(name)
            except InputError as exc:
                label, tip = name, str(exc)
            box = QCheckBox(label)
            box.setToolTip(tip)
            box.setChecked(name in self.model.selected)
            if missing:  # listed, with the install hint, but cannot be ticked
                box.setChecked(False)
                box.setEnabled(False)
                box.setText(f"{label} (not available)")
                box.setToolTip(f"{tip}\nNot available here: {missing}")
            box.toggled.connect(functools.partial(self._on_toggled, name))
            grid.addWidget(box, row, 0)
            self.method_boxes[name] = box
            if self.model.takes_weights(name):
                weights = QLabel()
                weights.setStyleSheet("color: gray")
                grid.addWidget(weights, row, 1)
                self.weights_labels[name] = weights
                choose = QToolButton()
                choose.setText("…")
                choose.setToolTip(f"Use a .keras file for {name} instead of the shipped model")
                choose.clicked.connect(functools.partial(self.choose_weights, name))
                grid.addWidget(choose, row, 2)
                reset = QToolButton()
                reset.setText("↺")
                reset.setToolTip(f"Back to the shipped {name} model")
                reset.clicked.connect(functools.partial(self.set_weights, name, None))
                grid.addWidget(reset, row, 3)
        precision_row = len(self.model.available)
        precision_label = QLabel("Network precision:")
        grid.addWidget(precision_label, precision_row, 0)
        self.precision_combo = QComboBox()
        for value, text in (("float32", "float32 (the published metrics)"), ("bfloat16", "bfloat16 (faster)"),
                            ("auto", f"auto ({resolve_precision('auto')} on this CPU)")):
            self.precision_combo.addItem(text, value)
        self.precision_combo.setCurrentIndex(self.precision_combo.findData(self.model.precision))
        tip = ("Compute precision of the networks.  bfloat16 is about twice as fast on CPUs with native "
               "bfloat16 (AVX512-BF16, AMX) and changes fluxes by a few thousandths of a magnitude; on other "
               "CPUs it is emulated and slower.  'auto' picks bfloat16 only where it is native.  What a run "
               "used is in the status line, the mask layers' metadata and the saved table.")
        self.precision_combo.setToolTip(tip)
        precision_label.setToolTip(tip)
        self.precision_combo.currentIndexChanged.connect(self._on_precision_changed)
        grid.addWidget(self.precision_combo, precision_row, 1, 1, 3)
        has_precisions = bool(self.model.precision_methods())
        precision_label.setVisible(has_precisions)
        self.precision_combo.setVisible(has_precisions)
        tta_label = QLabel("Symmetries averaged:")
        grid.addWidget(tta_label, precision_row + 1, 0)
        self.tta_combo = QComboBox()
        for value, text in ((1, "1 (network once)"), (2, "2"), (4, "4"), (8, "8 (best fluxes, 8x the time)")):
            self.tta_combo.addItem(text, value)
        self.tta_combo.setCurrentIndex(self.tta_combo.findData(self.model.tta))
        tip = ("Test-time symmetries: each network also runs on the blend turned and mirrored about the central "
               "galaxy, its masks turned back, and the outputs are averaged.  8 lowers blend2flux's flux error "
               "by ~6-7% on held-out and real-galaxy blends and costs 8 network passes.  What a run used is in "
               "the mask layers' metadata and the saved table.")
        self.tta_combo.setToolTip(tip)
        tta_label.setToolTip(tip)
        self.tta_combo.currentIndexChanged.connect(self._on_tta_changed)
        grid.addWidget(self.tta_combo, precision_row + 1, 1, 1, 3)
        has_tta = bool(self.model.tta_methods())
        tta_label.setVisible(has_tta)
        self.tta_combo.setVisible(has_tta)
        grid.setColumnStretch(1, 1)
        self.update_weights_labels()

    def _on_toggled(self, name: str, on: bool) -> None:
        self.model.set_selected(name, on)
        self._changed()

    def choose_weights(self, name: str, *_args) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Weights for {name}", "", "Keras models (*.keras)")
        if path:
            self.set_weights(name, path)

    def set_weights(self, name: str, path, *_args) -> None:
        """Use *path* (a ``.keras`` file; None = shipped) for method *name*."""
        try:
            self.model.set_weights(name, None if not path else str(path))
        except InputError as exc:
            self._notify("error", f"Deblend Inspector: {exc}")
            return
        self.update_weights_labels()
        self._changed(weights_of=name)

    def set_precision(self, precision: str) -> None:
        index = self.precision_combo.findData(precision)
        if index < 0:
            self._notify("error", f"Deblend Inspector: {precision!r} is not a network precision")
            return
        self.precision_combo.setCurrentIndex(index)  # -> _on_precision_changed

    def _on_precision_changed(self, *_args) -> None:
        precision = self.precision_combo.currentData()
        if precision == self.model.precision:
            return
        try:
            self.model.set_precision(precision)
        except InputError as exc:
            self._notify("error", f"Deblend Inspector: {exc}")
            return
        self._changed()

    def _on_tta_changed(self, *_args) -> None:
        tta = self.tta_combo.currentData()
        if tta == self.model.tta:
            return
        try:
            self.model.set_tta(tta)
        except InputError as exc:
            self._notify("error", f"Deblend Inspector: {exc}")
            return
        self._changed()

    def sync(self) -> None:
        """Show the model's selection, precision and symmetries (changed by code or another view)."""
        for name, box in self.method_boxes.items():
            if box.isChecked() != (name in self.model.selected):
                box.blockSignals(True)
                box.setChecked(name in self.model.selected)
                box.blockSignals(False)
        index = self.precision_combo.findData(self.model.precision)
        if index >= 0 and index != self.precision_combo.currentIndex():
            self.precision_combo.blockSignals(True)
            self.precision_combo.setCurrentIndex(index)
            self.precision_combo.blockSignals(False)
        index = self.tta_combo.findData(self.model.tta)
        if index >= 0 and index != self.tta_combo.currentIndex():
            self.tta_combo.blockSignals(True)
            self.tta_combo.setCurrentIndex(index)
            self.tta_combo.blockSignals(False)

    def update_weights_labels(self) -> None:
        for name, label in self.weights_labels.items():
            text = self.model.weights_description(name)
            label.setText(text)
            label.setToolTip(self.model.weights.get(name) or text)

