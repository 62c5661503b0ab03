"""``blendphot demo``: napari with the embedded sample's blends, the Blend Builder and the Deblend Inspector.

With a display it opens the viewer and returns when the window is closed.
With ``--screenshot PATH`` it writes a PNG of the whole window and exits; on a
machine without a display it first re-runs itself under ``xvfb-run -a`` (a
virtual X server; Debian package ``xvfb``).  Without a display and without
``--screenshot`` it says so and prints the summaries of the embedded sample and
of its blends, so that ``make demo`` still does something useful.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

#: Set in the environment of the re-run under Xvfb (stops a second re-run).
UNDER_XVFB_ENV = "BLENDPHOT_DEMO_UNDER_XVFB"
#: Screen of the virtual X server and size of the window in screenshots.
XVFB_SCREEN = "1920x1200x24"
WINDOW_SIZE = (1920, 1080)
#: Seed of the demo's random pairs, chosen for a first pair that shows the problem well
#: (sphd 19.4 mag central, irr 20.9 mag companion, 14 px = 2.5 central radii apart).
DEMO_PAIR_SEED = 2


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="open napari with blends of the embedded sample, the Blend Builder and the Deblend Inspector",
        description="Open napari with seeded blends of the embedded CANDELS-like mock sample (neighbours "
                    "cleaned, paper's pairing rules), the Blend Builder and the Deblend Inspector docked, "
                    "and a first blend built and inspected. --screenshot writes a PNG of the window and "
                    "exits (under a virtual X server when there is no display).",
    )
    parser.add_argument("--screenshot", metavar="PNG",
                        help="write a screenshot of the window to PNG and exit (works without a display)")
    parser.add_argument("--no-models", action="store_true",
                        help="do not load the shipped network models in the Deblend Inspector (SEP only)")
    parser.add_argument("--seed", type=int, default=DEMO_PAIR_SEED,
                        help=f"seed of the Blend Builder's random pairs (default {DEMO_PAIR_SEED}: its first pair "
                             f"is a bright bulge+disk galaxy with an irregular companion at 2.5 R)")
    parser.add_argument("--wait", type=float, default=60.0,
                        help="longest time in seconds to wait for the inspector's results before a "
                             "screenshot (default 60)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing screenshot file")
    parser.set_defaults(func=run)


def has_display() -> bool:
    """Whether a GUI can open here (an X or Wayland display on Linux; always elsewhere)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def print_summaries(stream=None) -> None:
    """The embedded sample's summary and that of the sample-data blends."""
    from napari_blendphot._sample_data import SAMPLE_BLENDS_N, SAMPLE_BLENDS_SEED, embedded_blends
    from napari_blendphot.blend.dataset import summarize_blends
    from napari_blendphot.sample.embedded import load_embedded_sample

    stream = stream or sys.stdout
    print(load_embedded_sample().summary(), file=stream)
    print(f"\nBlends shown by the demo ({SAMPLE_BLENDS_N}, seed {SAMPLE_BLENDS_SEED}, neighbours cleaned, "
          f"published pairing rules):", file=stream)
    print(summarize_blends(embedded_blends().catalog), file=stream)


def run(args) -> int:
    from napari_blendphot.errors import InputError

    screenshot = os.path.abspath(args.screenshot) if args.screenshot else None
    if screenshot:
        if not screenshot.lower().endswith(".png"):
            raise InputError(f"argument --screenshot {args.screenshot}", "must end in .png")
        check_screenshot_output(screenshot, args.overwrite, source=f"argument --screenshot {args.screenshot}")
    if not has_display():
        if screenshot and not os.environ.get(UNDER_XVFB_ENV):
            return rerun_under_xvfb()
        print("blendphot demo: no display here ($DISPLAY is not set), so the napari window cannot open.\n"
              "  Run it on a machine with a display, or write a picture of it with\n"
              "    blendphot demo --screenshot demo.png\n"
              "  (uses a virtual X server, xvfb-run, when there is no display).\n", file=sys.stderr)
        print_summaries()
        return 0
    return open_demo(screenshot, no_models=args.no_models, seed=args.seed, wait=args.wait, overwrite=args.overwrite)


def check_screenshot_output(path, overwrite: bool, source=None) -> None:
    """Before the window opens: the PNG can be written, and an existing one is replaced only if the demo made it."""
    from napari_blendphot.outputs import check_output_location, check_replaceable_file, is_project_png

    check_output_location(path, "file", 16 * 1024**2, source)
    check_replaceable_file(path, overwrite, is_project_png, "a screenshot")


def write_screenshot(viewer, path, overwrite: bool) -> None:
    """The whole window as a PNG, atomically, tagged as the project's (``Software: napari-blendphot``)."""
    from matplotlib.image import imsave

    from napari_blendphot.atomic import atomic_output
    from napari_blendphot.outputs import PNG_SOFTWARE

    image = viewer.screenshot(canvas_only=False)
    with atomic_output(path, suffix=".png", replace=overwrite) as tmp:
        imsave(tmp, image, format="png", metadata={"Software": PNG_SOFTWARE})


def rerun_under_xvfb() -> int:
    """Run this same command again under ``xvfb-run -a``; returns its exit code."""
    xvfb_run = shutil.which("xvfb-run")
    if xvfb_run is None:
        from napari_blendphot.errors import InputError

        raise InputError("blendphot demo --screenshot", "no display and no xvfb-run to make a virtual one",
                         "install the Debian package 'xvfb' or run on a machine with a display")
    env = dict(os.environ, **{UNDER_XVFB_ENV: "1"})
    command = [xvfb_run, "-a", "-s", f"-screen 0 {XVFB_SCREEN}", sys.executable, "-m", "napari_blendphot.cli",
               *sys.argv[1:]]
    print("blendphot demo: no display; rendering under a virtual X server (xvfb-run)", file=sys.stderr)
    return subprocess.call(command, env=env)


def _process_events(seconds: float) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _inspector_model(no_models: bool):
    """The inspector's model: every registered method, or only those without networks (``--no-models``)."""
    if not no_models:
        return None
    from napari_blendphot.deblend.registry import available_methods, method_info
    from napari_blendphot.app.inspector import InspectorModel

    return InspectorModel(methods=[name for name in available_methods() if not method_info(name).needs_worker])


def _waiting_for_inspector(inspector) -> bool:
    """True until the inspector has delivered its first inspection (when it can say so)."""
    if inspector is None or not hasattr(inspector, "inspection_done"):
        return False
    return not inspector.demo_inspections


def build_demo_viewer(no_models: bool = False, seed: int = DEMO_PAIR_SEED, show: bool = True):
    """The demo viewer: sample blends, Blend Builder (first blend built), Deblend Inspector if available.

    Returns ``(viewer, builder, inspector)``; *inspector* is None when the
    Deblend Inspector module is not installed.
    """
    import napari

    from napari_blendphot.app.builder import BlendBuilderModel
    from napari_blendphot.widgets.blend_builder import BlendBuilderWidget

    viewer = napari.Viewer(title="napari-blendphot demo", show=show)
    viewer.window._qt_window.resize(*WINDOW_SIZE)
    # No blend-set stack: hidden under the built blend, its slider moved nothing the user saw
    # (File > Open Sample > Blends of the CANDELS-like mock galaxies opens it).
    inspector = None
    try:
        from napari_blendphot.widgets.deblend_inspector import DeblendInspectorWidget
    except ModuleNotFoundError as exc:
        if exc.name != "napari_blendphot.widgets.deblend_inspector":
            raise
        DeblendInspectorWidget = None
    builder = BlendBuilderWidget(viewer, model=BlendBuilderModel(pair_seed=seed))
    builder_dock = viewer.window.add_dock_widget(builder, name="Blend Builder", area="right")
    if DeblendInspectorWidget is not None:
        inspector = DeblendInspectorWidget(viewer, model=_inspector_model(no_models))
        # Record finished inspections, so that a screenshot waits for the first one.
        inspector.demo_inspections = []
        done_signal = getattr(inspector, "inspection_done", None)
        if done_signal is not None:
            done_signal.connect(inspector.demo_inspections.append)
        inspector_dock = viewer.window.add_dock_widget(inspector, name="Deblend Inspector", area="right")
        # Side by side rather than stacked: both stay fully visible on a 1080-pixel screen.
        from qtpy.QtCore import Qt

        viewer.window._qt_window.splitDockWidget(builder_dock, inspector_dock, Qt.Orientation.Horizontal)
    # The first blend: the embedded sample (cleaned), a random pair by the paper's rules.
    builder.load_embedded(background=False)
    return viewer, builder, inspector


def _select_position_layer(viewer) -> None:
    """Make the companion's point the active layer, so that it can be dragged at once."""
    from napari_blendphot.widgets.blend_builder import POSITION_LAYER

    if POSITION_LAYER in viewer.layers:
        viewer.layers.selection.active = viewer.layers[POSITION_LAYER]


def open_demo(screenshot: str | None, no_models: bool = False, seed: int = DEMO_PAIR_SEED,
              wait: float = 60.0, overwrite: bool = False) -> int:
    import napari

    print_summaries(sys.stderr)
    viewer, builder, inspector = build_demo_viewer(no_models=no_models, seed=seed, show=True)
    if inspector is None:
        print("blendphot demo: the Deblend Inspector is not installed in this version; showing the "
              "Blend Builder only", file=sys.stderr)
    if screenshot is None:
        _select_position_layer(viewer)
        napari.run()
        return 0
    # Let the inspector run its methods on the first blend, then draw.
    _process_events(1.5)
    deadline = time.monotonic() + wait
    while _waiting_for_inspector(inspector) and time.monotonic() < deadline:
        _process_events(0.2)
    _process_events(0.5)
    _select_position_layer(viewer)
    _process_events(0.3)
    os.makedirs(os.path.dirname(screenshot) or ".", exist_ok=True)
    write_screenshot(viewer, screenshot, overwrite)
    viewer.close()
    print(f"blendphot demo: wrote {screenshot}", file=sys.stderr)
    return 0
