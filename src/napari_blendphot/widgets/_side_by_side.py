"""The side-by-side view: each method in its own cell, the inspected image under it, its name above it.

napari's grid mode tiles *every* layer of the viewer (the Builder's, the
truth, hidden ones) and gives tiles no titles, so the cells are laid out in
world coordinates instead: cell *k* is the blend translated to the right of
the inspected one, with one method's outlines and a title.  All cells share
the one canvas and its camera, so panning and zooming move them together.
"""

from __future__ import annotations

import numpy as np

#: ``layer.metadata["blendphot_kind"]`` of the side-by-side layers.
SIDE_KIND = "side-by-side"
#: Gap between cells, in pixels of the stamp.
CELL_GAP = 8


def cell_layer_names(key: str) -> tuple[str, str, str]:
    """Names of the image, outline and title layers of *key*'s cell."""
    return (f"side by side: {key} image", f"side by side: {key}", f"side by side: {key} title")


class SideBySide:
    """Maintains the cells (image + outlines + title per method) in *viewer*, updated in place."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.cells: dict = {}  # key -> (image layer, labels layer, points layer)

    @property
    def shown(self) -> bool:
        return bool(self.cells)

    def update(self, image, mask_layers: dict) -> None:
        """One cell per entry of *mask_layers* (``{"truth" or method: Labels layer}``), *image* under each."""
        image = np.asarray(image)
        height, width = image.shape[-2:]
        keys = [key for key in mask_layers if mask_layers[key] in self.viewer.layers]
        keys.sort(key=lambda key: key != "truth")  # truth first, then the methods in their order
        for key in [key for key in self.cells if key not in keys]:
            self._remove(key)
        from napari_blendphot.widgets._inspector_layers import keeping_selection

        with keeping_selection(self.viewer):
            self._update(image, mask_layers, keys, width)

    def _update(self, image, mask_layers, keys, width) -> None:
        from napari_blendphot.display import astro_contrast, method_style

        contrast = self._inspected_contrast(image) or astro_contrast(image)
        for position, key in enumerate(keys, start=1):
            source = mask_layers[key]
            style = method_style(key)
            offset = (0.0, float(position * (width + CELL_GAP)))
            image_name, labels_name, title_name = cell_layer_names(key)
            metadata = {"blendphot_kind": SIDE_KIND, "method": key}
            outlines = np.asarray(source.data)
            if outlines.ndim > 2:
                outlines = outlines[tuple(self.viewer.dims.current_step[: outlines.ndim - 2])]
            if key in self.cells:
                image_layer, labels_layer, title_layer = self.cells[key]
                image_layer.data, labels_layer.data = image, np.array(outlines)
                for layer in self.cells[key]:
                    layer.translate = offset
                continue
            image_layer = self.viewer.add_image(image, name=image_name, colormap="gray", translate=offset,
                                                metadata=metadata, **contrast)
            labels_layer = self.viewer.add_labels(np.array(outlines), name=labels_name, translate=offset,
                                                  colormap=source.colormap, opacity=1.0, metadata=metadata)
            labels_layer.editable = False
            title_layer = self.viewer.add_points(
                np.array([[-1.0, width / 2.0]]), name=title_name, translate=offset, size=0.01,
                face_color="transparent", border_width=0, features={"title": [style.label]}, metadata=metadata,
                text={"string": "{title}", "color": style.central_rgba, "anchor": "center",
                      "size": 14, "translation": [-6, 0]})
            self.cells[key] = (image_layer, labels_layer, title_layer)

    def _inspected_contrast(self, image) -> dict | None:
        """The contrast of the image the cells repeat (the top visible 2-D image of that shape), so they look alike."""
        from napari.layers import Image

        for layer in reversed(list(self.viewer.layers)):
            if isinstance(layer, Image) and layer.visible and layer.metadata.get("blendphot_kind") != SIDE_KIND \
                    and layer.ndim == 2 and layer.data.shape == image.shape:
                return {"contrast_limits": tuple(layer.contrast_limits), "gamma": layer.gamma}
        return None

    def _remove(self, key: str) -> None:
        for layer in self.cells.pop(key, ()):
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)

    def clear(self) -> None:
        for key in list(self.cells):
            self._remove(key)
