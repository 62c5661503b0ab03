"""The plugin's docks on a 1920x1080 screen (issue 17): all of them fit, by scrolling, not by growing the window."""

from __future__ import annotations

import pytest

PLUGIN = "napari-blendphot"
WIDGETS = ("Blend Builder", "Deblend Inspector", "Failure Browser", "Sample Curation", "Field")


@pytest.mark.gui
def test_every_dock_from_the_plugins_menu_fits_a_1080_pixel_screen(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1920, 1080)
    added = [viewer.window.add_plugin_dock_widget(PLUGIN, name) for name in WIDGETS]
    qtbot.wait(100)
    # Before: two docks stacked asked a 1,430 px tall window (1,970 px after a blend-set summary).
    assert window.minimumSizeHint().height() <= 1080
    assert window.minimumSize().height() <= 1080
    window.resize(1920, 1080)
    qtbot.wait(100)
    assert window.height() <= 1080 and window.width() <= 1920
    for name, (dock, widget) in zip(WIDGETS, added):
        area = widget.scroll_area  # the contents scroll inside the dock instead of stretching it
        assert area.widget().minimumSizeHint().height() > 0, name
        assert widget.minimumSizeHint().height() < 400, name
    shot = viewer.screenshot(str(tmp_path / "docks.png"), canvas_only=False)
    assert shot.shape[0] <= 1080 and shot.shape[1] <= 1920
    for _, widget in added:
        if hasattr(widget, "close_inspector"):
            widget.close_inspector()


@pytest.mark.gui
def test_the_manifest_validates_and_every_widget_has_help(make_napari_viewer):
    """npe2's own validation (what `npe2 validate` runs), its imports, and a help text per widget."""
    from pathlib import Path

    from npe2 import PluginManifest

    import napari_blendphot

    manifest_path = Path(napari_blendphot.__file__).parent / "napari.yaml"
    manifest = PluginManifest.from_file(manifest_path)
    manifest.validate_imports()  # every command's python_name imports
    viewer = make_napari_viewer()
    for name in WIDGETS:
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        assert len(widget.help_text) > 80 and widget.help_button.toolTip() == widget.help_text, name
        assert widget.whatsThis() == widget.help_text
        if hasattr(widget, "close_inspector"):
            widget.close_inspector()
    hub = Path(napari_blendphot.__file__).parents[2] / ".napari-hub" / "DESCRIPTION.md"
    text = hub.read_text()
    for picture in ("demo.png", "side_by_side.png", "failures.png"):
        assert picture in text and (hub.parents[1] / "docs" / "img" / picture).exists()
