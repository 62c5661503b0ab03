"""The Deblend Inspector's layers: the inspected blend and one outline layer per mask-making method."""

from __future__ import annotations

import contextlib

import numpy as np

from napari_blendphot.app.inspector import layer_features

#: Layer names (stable across blends: re-runs update these layers).
TRUTH_LAYER = "masks: truth"
IMAGE_LAYER = "inspected blend"
LAYER_KIND = "inspector-masks"
#: Appended to the names of mask layers whose results belong to an older blend.
OUT_OF_DATE_SUFFIX = " (out of date)"


@contextlib.contextmanager
def keeping_selection(viewer):
    """napari selects every added layer; the user's selection (the companion point) stays as it was."""
    layers = viewer.layers
    active, selected = layers.selection.active, set(layers.selection)
    try:
        yield
    finally:
        layers.selection.clear()
        layers.selection.update(selected & set(layers))
        if active is not None and active in layers:
            layers.selection.active = active


def mask_layer_name(method: str) -> str:
    """Name of the Labels layer holding *method*'s masks."""
    return f"masks: {method}"


class InspectorLayers:
    """Draws an inspection into a viewer, updating the same layers in place from run to run."""

    def __init__(self, viewer):
        self.viewer = viewer
        #: ``{"truth" or method: Labels layer}`` drawn by the inspector.
        self.mask_layers: dict = {}

    def update_image(self, state, shown_elsewhere: bool) -> None:
        """Show the blend itself when nothing else in the viewer does (a blend set from code, say)."""
        shown_by_others = shown_elsewhere or any(
            layer.metadata.get("blendphot_kind") == "builder" for layer in self.viewer.layers
            if layer.name != IMAGE_LAYER)
        if shown_by_others:
            if IMAGE_LAYER in self.viewer.layers and self.viewer.layers[IMAGE_LAYER].visible:
                self.viewer.layers[IMAGE_LAYER].visible = False  # an older blend: not what is inspected now
            return
        from napari_blendphot.display import astro_contrast

        if IMAGE_LAYER in self.viewer.layers:
            layer = self.viewer.layers[IMAGE_LAYER]
            layer.visible = True
            if layer.data.shape == state.image.shape and np.array_equal(layer.data, state.image):
                return
            layer.data = state.image
            layer.metadata["blend"] = state.name
        else:
            with keeping_selection(self.viewer):
                layer = self.viewer.add_image(state.image, name=IMAGE_LAYER, colormap="gray",
                                              metadata={"blendphot_kind": "inspector", "blend": state.name},
                                              **astro_contrast(state.image))
            self.viewer.layers.move(self.viewer.layers.index(layer), 0)

    def _set_mask_layer(self, key: str, name: str, masks, features, metadata) -> bool:
        """Draw *masks* as outlines in the layer of *key*, in its method's style; True when a layer was added."""
        from napari_blendphot._reader import mask_label_kwargs
        from napari_blendphot.display import method_style, styled_outlines

        style = method_style(key)
        outlines = styled_outlines(masks, style.line_style)
        layer = self.mask_layers.get(key)
        if layer is None or layer not in self.viewer.layers:
            layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is None:
            kwargs = mask_label_kwargs(name, metadata, style=style)
            kwargs["features"] = features
            with keeping_selection(self.viewer):
                layer = self.viewer.add_labels(outlines, **kwargs)
            layer.editable = False  # results, not something to paint on
            self.mask_layers[key] = layer
            return True
        data = layer.data
        if isinstance(data, np.ndarray) and data.shape == outlines.shape and data.dtype == outlines.dtype \
                and data.flags.writeable:
            if not np.array_equal(data, outlines):
                # In place + refresh: a third of the cost of assigning layer.data (no dims or
                # extent recomputation: the shape is the same; the highlight does not depend on the data).
                data[...] = outlines
                layer.refresh(extent=False, highlight=False)
        else:
            layer.data = outlines
        current = layer.features
        if list(current.columns) == list(features) and len(current) == len(features["index"]):
            # Same columns and rows: write the values in place (setting layer.features
            # rebuilds the table and its events, ~8 ms a layer while dragging).
            for column, values in features.items():
                current[column] = values
        else:
            layer.features = features
        layer.metadata.update(metadata)
        self.mask_layers[key] = layer
        return False

    def keep_masks_on_top(self, *_args) -> None:
        """Outlines under an image are invisible: keep the inspector's mask layers above every image."""
        from napari.layers import Image

        layers = self.viewer.layers
        ours = [layer for layer in self.mask_layers.values() if layer in layers]
        if not ours:
            return
        top_image = max((i for i, layer in enumerate(layers) if isinstance(layer, Image)), default=-1)
        if min(layers.index(layer) for layer in ours) > top_image:
            return
        # Truth first (lowest), then the methods in their order.
        for layer in ours:
            layers.move(layers.index(layer), len(layers))

    def put_under_masks(self, source=None) -> None:
        """Make the inspected image (*source*, else the Builder's or our own) the top image, under the masks."""
        from napari.layers import Image

        layers = self.viewer.layers
        if source is None:
            candidates = [layer for layer in layers if isinstance(layer, Image) and layer.visible
                          and layer.metadata.get("blendphot_kind") in ("builder", "inspector")]
            source = candidates[-1] if candidates else None
        if source is None or source not in layers:
            return
        above = [i for i, layer in enumerate(layers) if isinstance(layer, Image) and layer is not source
                 and layer.visible and layer.metadata.get("blendphot_kind") != "side-by-side"
                 and i > layers.index(source)]
        if above:
            layers.move(layers.index(source), max(above) + 1)
        self.keep_masks_on_top()

    def truth_shown_elsewhere(self) -> bool:
        """Whether another visible layer (the Builder's, a blend set's) already draws the truth."""
        own = self.mask_layers.get("truth")
        return any(layer.metadata.get("blendphot_truth") and layer.visible and layer is not own
                   for layer in self.viewer.layers)

    def clear(self) -> None:
        """Remove every overlay (after an error: old masks must not pass for this blend's)."""
        for key in list(self.mask_layers):
            layer = self.mask_layers.pop(key)
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)

    def set_out_of_date(self, stale: bool) -> None:
        """Shown results that do not belong to the current blend are dimmed and named so."""
        for layer in self.mask_layers.values():
            if layer in self.viewer.layers:
                layer.opacity = 0.35 if stale else 1.0
                base = layer.name.removesuffix(OUT_OF_DATE_SUFFIX)
                layer.name = base + OUT_OF_DATE_SUFFIX if stale else base

    def update_masks(self, inspection, selected) -> None:
        """The truth's and every method's masks of *inspection*; layers of unticked methods are removed."""
        state = inspection.state
        drawn = set()
        added = False
        truth = state.truth
        if truth is not None and getattr(truth, "masks", None) is not None and np.any(truth.masks) \
                and not self.truth_shown_elsewhere():
            added |= self._set_mask_layer("truth", TRUTH_LAYER, np.asarray(truth.masks),
                                          layer_features(inspection.rows, "truth"),
                                          {"blendphot_kind": LAYER_KIND, "method": "truth", "blend": state.name})
            drawn.add("truth")
        for name, output in inspection.outputs.items():
            if output.masks is None:
                continue
            added |= self._set_mask_layer(name, mask_layer_name(name), np.asarray(output.masks)[0],
                                          layer_features(inspection.rows, name),
                                          {"blendphot_kind": LAYER_KIND, "method": name, "blend": state.name,
                                           "label": output.metadata.get("label", name),
                                           **{key: output.metadata[key] for key in ("precision", "tta")
                                              if key in output.metadata}})
            drawn.add(name)
        if added:
            self.keep_masks_on_top()
        # Masks of unticked methods, or a truth this blend lacks, would be stale: remove them.
        # (A ticked method that failed this time keeps its layer; the error says why it is old.)
        for key in list(self.mask_layers):
            if key not in drawn and (key == "truth" or key not in selected):
                layer = self.mask_layers.pop(key)
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
