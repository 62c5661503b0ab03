"""Blend Builder: the plain model (no viewer) and the Qt widget in a real napari viewer."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import pytest

from napari_blendphot._reader import mask_outlines
from napari_blendphot.blend.assemble import dmag_scale, make_blend
from napari_blendphot.errors import InputError, OutputExistsError
from napari_blendphot.app.builder import SHIFT_MAX, SHIFT_MIN, BlendBuilderModel, clamp_shift


@pytest.fixture(scope="module")
def sample():
    from napari_blendphot.sample.toy import make_toy_sample

    return make_toy_sample(40, seed=11)


@pytest.fixture(scope="module")
def cleaned(sample):
    """The toy sample cleaned as the builder would (seed 4): widgets given it skip the cleaning."""
    from napari_blendphot.clean.neighbours import clean_sample

    return clean_sample(sample, 4)


@pytest.fixture
def model(sample):
    return BlendBuilderModel(sample, clean_seed=4, pair_seed=9)


def _expected(model):
    return make_blend(model.sample[model.central_index], model.sample[model.companion_index], model.dy, model.dx,
                      model.dmag)


# -- model -----------------------------------------------------------------------------------

def test_model_cleans_the_sample_and_draws_a_first_pair(model, sample):
    from napari_blendphot.blend.pairing import separation_bounds
    from napari_blendphot.clean.neighbours import clean_sample

    assert model.sample.provenance["step"] == "clean-neighbours"
    np.testing.assert_array_equal(model.sample.images, clean_sample(sample, 4).images)
    catalog = model.catalog
    c, k = model.central_index, model.companion_index
    assert c != k
    assert abs(float(catalog["mag"][c]) - float(catalog["mag"][k])) < 2.0
    low, high = separation_bounds(float(catalog["radius"][c]), float(catalog["radius"][k]))
    assert low <= np.hypot(model.dy, model.dx) <= high
    np.testing.assert_array_equal(model.blend.blend, _expected(model).blend)


def test_random_pairs_are_seeded(sample):
    first, second = BlendBuilderModel(sample, pair_seed=3), BlendBuilderModel(sample, pair_seed=3)
    draws_a, draws_b = [], []
    for m, draws in ((first, draws_a), (second, draws_b)):
        for _ in range(4):
            m.random_pair()
            draws.append((m.central_id, m.companion_id, m.dy, m.dx))
    assert draws_a == draws_b
    assert len(set(draws_a)) > 1


def test_shift_is_snapped_and_clamped(model):
    model.set_shift(3.4, -7.6)
    assert (model.dy, model.dx) == (3, -8)
    model.set_shift(500, -500)
    assert (model.dy, model.dx) == (SHIFT_MAX, SHIFT_MIN)
    model.set_companion_position(70.2, 60.0)
    assert (model.dy, model.dx) == (6, -4)
    assert model.blend.companion_position == (70, 60)
    with pytest.raises(InputError):
        clamp_shift(float("nan"))


def test_blend_is_make_blend_output(model):
    model.set_shift(5, 9)
    model.set_dmag(0.7)
    expected = _expected(model)
    for name in ("blend", "galaxy1", "galaxy2", "masks"):
        np.testing.assert_array_equal(getattr(model.blend, name), getattr(expected, name))


def test_dmag_scales_the_companion_flux(model):
    model.set_shift(10, 0)
    model.set_dmag(0.0)
    flux0, mag0 = model.blend.galaxy2.sum(dtype=np.float64), model.blend.row["g2_mag"]
    model.set_dmag(-1.5)
    assert model.blend.galaxy2.sum(dtype=np.float64) == pytest.approx(flux0 * dmag_scale(-1.5), rel=1e-5)
    assert model.blend.row["g2_mag"] == pytest.approx(mag0 - 1.5)
    assert model.measurements()["pair_dmag"] == pytest.approx(model.blend.row["g2_mag"] - model.blend.row["g1_mag"])


def test_measurements(model):
    model.set_shift(3, 4)
    values = model.measurements()
    assert values["distance_px"] == 5.0
    assert values["distance_arcsec"] == pytest.approx(0.3)
    assert values["distance_over_radius"] == pytest.approx(5.0 / float(model.catalog["radius"][model.central_index]))


def test_filters_narrow_pairs(model):
    types = np.char.strip(np.asarray(model.catalog["galtype"]).astype(str))
    wanted = types[0]
    model.set_filter("central", galtype=wanted)
    for _ in range(5):
        model.random_pair()
        assert types[model.central_index] == wanted
    assert set(types[model.candidates("central")]) == {wanted}
    model.set_filter("companion", mag_min=40.0)
    with pytest.raises(InputError, match="filter"):
        model.random_pair()
    with pytest.raises(InputError, match="unknown galtype"):
        model.set_filter("central", galtype="spiral")


def test_pick_by_id_and_bad_ids(model):
    ids = model.sample.ids
    model.set_central_id(ids[5])
    model.set_companion_id(ids[7])
    assert (model.central_id, model.companion_id) == (int(ids[5]), int(ids[7]))
    assert model.name == f"blend {int(ids[5])}+{int(ids[7])}"
    with pytest.raises(InputError, match="no galaxy with id"):
        model.set_central_id(-12345)


def test_save_set_reads_back_with_blend_dataset(model, tmp_path):
    from napari_blendphot.blend.dataset import BlendDataset

    kept = []
    for dy, dx, dmag in ((4, 0, 0.0), (-6, 8, 0.5), (0, 12, -1.0)):
        model.set_shift(dy, dx)
        model.set_dmag(dmag)
        model.add_to_set()
        kept.append(model.blend)
    path = model.save_set(tmp_path / "built")
    dataset = BlendDataset(path)
    assert len(dataset) == 3
    for i, blend in enumerate(kept):
        np.testing.assert_array_equal(dataset.blends[i], blend.blend)
        np.testing.assert_array_equal(dataset.masks[i], blend.masks)
        assert (dataset[i].dy, dataset[i].dx) == (blend.dy, blend.dx)
        assert dataset.catalog["g2_mag"][i] == pytest.approx(blend.row["g2_mag"])
    assert list(dataset.catalog["g2_dmag"]) == [0.0, 0.5, -1.0]
    assert dataset.provenance["step"] == "blend-builder"
    # Never replaced without consent; replaced with it.
    with pytest.raises(OutputExistsError):
        model.save_set(tmp_path / "built")
    model.save_current(tmp_path / "built", overwrite=True)
    assert len(BlendDataset(tmp_path / "built")) == 1


def test_empty_set_and_tiny_sample(model, sample, tmp_path):
    with pytest.raises(InputError, match="set is empty"):
        model.save_set(tmp_path / "nothing")
    with pytest.raises(InputError, match="needs 2 galaxies"):
        BlendBuilderModel(sample[:1])


# -- widget ----------------------------------------------------------------------------------

@dataclass
class _MouseEvent:
    """The attributes napari's mouse callbacks read from a vispy event."""

    type: str
    position: tuple
    is_dragging: bool = False
    modifiers: list = field(default_factory=list)
    pos: np.ndarray = field(default_factory=lambda: np.zeros(2))
    view_direction: list | None = None
    up_direction: list | None = None
    dims_displayed: list = field(default_factory=lambda: [0, 1])


@pytest.fixture
def builder(make_napari_viewer, cleaned):
    from napari_blendphot.widgets.blend_builder import BlendBuilderWidget

    viewer = make_napari_viewer()
    widget = BlendBuilderWidget(viewer, model=BlendBuilderModel(clean_seed=4, pair_seed=9))
    viewer.window.add_dock_widget(widget)
    widget.load_sample(cleaned, name="toy", background=False)
    return viewer, widget


def _layers(viewer, widget):
    name = widget.model.name
    return viewer.layers[name], viewer.layers[f"{name} truth"], viewer.layers["companion position"]


def _check_layers_match(viewer, widget):
    blend_layer, truth_layer, points = _layers(viewer, widget)
    expected = _expected(widget.model)
    np.testing.assert_array_equal(blend_layer.data, expected.blend)
    np.testing.assert_array_equal(truth_layer.data, mask_outlines(expected.masks))
    np.testing.assert_array_equal(points.data, [[64 + widget.model.dy, 64 + widget.model.dx]])


@pytest.mark.gui
def test_widget_builds_layers_and_sets_current_blend(builder):
    from napari_blendphot.app.session import current_blend_for

    viewer, widget = builder
    _check_layers_match(viewer, widget)
    state = current_blend_for(viewer).state
    assert state.origin == "builder" and state.name == widget.model.name
    np.testing.assert_array_equal(state.image, widget.model.blend.blend)
    assert state.truth is widget.model.blend
    assert "tensorflow" not in sys.modules


@pytest.mark.gui
def test_moving_the_point_moves_the_companion(builder):
    viewer, widget = builder
    _, _, points = _layers(viewer, widget)
    points.data = np.array([[80.4, 51.7]])
    assert (widget.model.dy, widget.model.dx) == (16, -12)
    assert (widget.dy_spin.value(), widget.dx_spin.value()) == (16, -12)
    _check_layers_match(viewer, widget)  # point snapped to the pixel
    points.data = np.array([[400.0, -30.0]])  # dragged off the stamp: clamped
    assert (widget.model.dy, widget.model.dx) == (SHIFT_MAX, SHIFT_MIN)
    _check_layers_match(viewer, widget)
    points.data = np.empty((0, 2))  # deleted: it comes back where the companion is
    np.testing.assert_array_equal(points.data, [[64 + SHIFT_MAX, 64 + SHIFT_MIN]])


@pytest.mark.gui
def test_spin_boxes_move_the_point(builder):
    viewer, widget = builder
    widget.dy_spin.setValue(-9)
    widget.dx_spin.setValue(14)
    assert (widget.model.dy, widget.model.dx) == (-9, 14)
    _check_layers_match(viewer, widget)
    assert "9.0 px" in widget.info_label.text() or "16.6 px" in widget.info_label.text()


@pytest.mark.gui
def test_dmag_slider_changes_companion_flux(builder):
    viewer, widget = builder
    widget.dy_spin.setValue(20)
    flux0 = widget.model.blend.galaxy2.sum(dtype=np.float64)
    widget.dmag_slider.setValue(100)  # +1.00 mag
    assert widget.model.dmag == pytest.approx(1.0)
    assert widget.model.blend.galaxy2.sum(dtype=np.float64) == pytest.approx(flux0 * dmag_scale(1.0), rel=1e-5)
    assert widget.dmag_label.text() == "+1.00"
    _check_layers_match(viewer, widget)


@pytest.mark.gui
def test_drag_updates_live_with_stable_contrast(builder):
    from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks
    from napari.utils._proxies import ReadOnlyWrapper

    from napari_blendphot.app.session import current_blend_for

    viewer, widget = builder
    widget.model.set_shift(0, 10)
    blend_layer, _, points = _layers(viewer, widget)
    limits = tuple(blend_layer.contrast_limits)
    states = []
    current_blend_for(viewer).changed.connect(states.append)

    def send(callbacks, kind, position):
        callbacks(points, ReadOnlyWrapper(_MouseEvent(kind, position, is_dragging=kind == "mouse_move"),
                                          exceptions=("handled",)))

    send(mouse_press_callbacks, "mouse_press", (64.0, 74.0))
    for row, column in ((66.0, 72.0), (70.0, 68.0), (75.2, 60.6)):
        send(mouse_move_callbacks, "mouse_move", (row, column))
    assert (widget.model.dy, widget.model.dx) == (11, -3)  # live, before the release
    assert tuple(blend_layer.contrast_limits) == limits
    send(mouse_release_callbacks, "mouse_release", (75.2, 60.6))
    assert [s.interactive for s in states[:3]] == [True, True, True]
    assert states[-1].interactive is False
    assert (widget.model.dy, widget.model.dx) == (11, -3)
    _check_layers_match(viewer, widget)  # snapped on release


@pytest.mark.gui
def test_picking_galaxies_in_the_combos(builder):
    viewer, widget = builder
    combo = widget.companion_picker.galaxy_combo
    target = (combo.currentIndex() + 3) % combo.count()
    row = combo.itemData(target)
    if row == widget.model.central_index:
        target = (target + 1) % combo.count()
        row = combo.itemData(target)
    combo.setCurrentIndex(target)
    assert widget.model.companion_index == row
    _check_layers_match(viewer, widget)
    # The old layers were renamed, not duplicated.
    assert sum(1 for layer in viewer.layers if layer.name.endswith("truth")) == 1
    widget.central_picker.type_combo.setCurrentText("disk")
    types = {str(widget.model.catalog["galtype"][widget.central_picker.galaxy_combo.itemData(i)]).strip()
             for i in range(widget.central_picker.galaxy_combo.count())
             if widget.central_picker.galaxy_combo.itemData(i) != widget.model.central_index}
    assert types <= {"disk"}


@pytest.mark.gui
def test_random_and_swap_buttons(builder):
    viewer, widget = builder
    before = (widget.model.central_index, widget.model.companion_index)
    widget.swap_button.click()
    assert (widget.model.central_index, widget.model.companion_index) == before[::-1]
    draws = set()
    for _ in range(4):
        widget.random_button.click()
        draws.add((widget.model.central_index, widget.model.companion_index, widget.model.dy, widget.model.dx))
    assert len(draws) > 1
    _check_layers_match(viewer, widget)


@pytest.mark.gui
def test_save_set_from_widget(builder, tmp_path):
    from napari_blendphot.blend.dataset import BlendDataset

    viewer, widget = builder
    widget.add_button.click()
    widget.dx_spin.setValue(-20)
    widget.add_button.click()
    assert widget.set_label.text() == "Set: 2 blends"
    path = widget.save(tmp_path / "set", whole_set=True)
    dataset = BlendDataset(path)
    assert len(dataset) == 2
    np.testing.assert_array_equal(dataset.blends[1], viewer.layers[widget.model.name].data)
    with pytest.raises(OutputExistsError):
        widget.save(tmp_path / "set", whole_set=True)


@pytest.mark.gui
def test_sample_layers_are_offered_and_loaded_in_background(make_napari_viewer, qtbot, sample):
    from napari_blendphot._reader import sample_layers
    from napari_blendphot.widgets.blend_builder import BlendBuilderWidget

    viewer = make_napari_viewer()
    widget = BlendBuilderWidget(viewer)
    assert not widget.use_layer_button.isEnabled()
    for data, kwargs, kind in sample_layers(sample, name="toy"):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    assert widget.source_combo.currentText() == "toy stamps"
    widget.use_layer_button.click()
    qtbot.waitUntil(lambda: widget.model.blend is not None and widget._worker is None, timeout=120_000)
    assert widget.model.sample_name == "toy stamps"
    assert len(widget.model.sample) == len(sample)
    _check_layers_match(viewer, widget)


@pytest.mark.gui
def test_screenshot_is_not_blank(make_napari_viewer, sample, tmp_path):
    from napari_blendphot.widgets.blend_builder import BlendBuilderWidget

    viewer = make_napari_viewer(show=True)
    widget = BlendBuilderWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.load_sample(sample, name="toy", background=False)
    canvas = viewer.screenshot(canvas_only=True)
    assert canvas.std() > 0
    window = viewer.screenshot(str(tmp_path / "window.png"), canvas_only=False)
    assert window.std() > 0 and (tmp_path / "window.png").stat().st_size > 0
    assert "tensorflow" not in sys.modules


@pytest.mark.gui
def test_keyboard_shortcuts(builder):
    from app_model.types import KeyBinding

    from napari_blendphot.widgets.blend_builder import SHORTCUTS

    viewer, widget = builder
    press = {name: viewer.keymap[KeyBinding.from_str(key)] for name, key in SHORTCUTS.items()}
    assert "[R]" in widget.random_button.toolTip()
    before = (widget.model.central_index, widget.model.companion_index)
    press["swap"](viewer)
    assert (widget.model.central_index, widget.model.companion_index) == before[::-1]
    press["fainter"](viewer)
    press["fainter"](viewer)
    assert widget.model.dmag == pytest.approx(0.2)
    assert widget.dmag_slider.value() == 20
    press["add"](viewer)
    assert len(widget.model.built) == 1
    seen = set()
    for _ in range(3):
        press["random"](viewer)
        seen.add((widget.model.central_index, widget.model.companion_index))
    assert len(seen) > 1 and widget.model.dmag == 0.0


def test_a_galaxy_is_not_blended_with_itself(model):
    with pytest.raises(InputError, match="cannot be blended with itself"):
        model.set_pair(3, 3)


@pytest.mark.gui
def test_choosing_the_central_as_companion_is_refused(builder):
    viewer, widget = builder
    before = (widget.model.central_index, widget.model.companion_index)
    combo = widget.companion_picker.galaxy_combo
    combo.setCurrentIndex(combo.findData(widget.model.central_index))
    assert (widget.model.central_index, widget.model.companion_index) == before
    assert combo.currentData() == widget.model.companion_index
    _check_layers_match(viewer, widget)


@pytest.mark.gui
def test_widget_opens_from_the_plugin_menu(make_napari_viewer):
    from napari_blendphot.widgets.blend_builder import BlendBuilderWidget

    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-blendphot", "Blend Builder")
    assert isinstance(widget, BlendBuilderWidget) and widget.viewer is viewer  # unwrapped from the proxy
    assert widget.source_label.text() == "No galaxies loaded."
    assert not widget.random_button.isEnabled()


@pytest.mark.gui
def test_current_blend_survives_closing_a_menu_builder(make_napari_viewer, cleaned):
    """napari gives each plugin widget its own viewer proxy: the shared current blend must not
    belong to one widget's proxy (closing that widget would orphan the other widgets' session)."""
    import gc

    from napari.utils._proxies import PublicOnlyProxy

    from napari_blendphot.app.session import current_blend_for

    viewer = make_napari_viewer()
    dock, first = viewer.window.add_plugin_dock_widget("napari-blendphot", "Blend Builder")
    first.load_sample(cleaned, name="toy", background=False)
    listener_session = current_blend_for(PublicOnlyProxy(viewer))  # what the inspector holds
    viewer.window.remove_dock_widget(dock)
    first.deleteLater()
    del first, dock
    gc.collect()
    _, second = viewer.window.add_plugin_dock_widget("napari-blendphot", "Blend Builder")
    second.load_sample(cleaned, name="toy again", background=False)
    second.model.set_shift(7, -7)
    assert listener_session.state.image is second.model.blend.blend
