"""Deblend Inspector latency: from a companion move to the overlays and the table updated.

Run:  python benchmarks/bench_gui_latency.py [--quick] [--moves 100] [--networks auto|shipped|tiny|paper]
                                            [--precision float32|bfloat16|auto] [--window 1600x1000]
                                            [--settle MS] [--busy-wait] [--profile N] [--screenshot shot.png]

A real napari viewer (under Xvfb: the script re-runs itself with ``xvfb-run -a``
when there is no display) with the Deblend Inspector docked and every method
ticked.  Like the Blend Builder, each move makes the blend of the same pair
with a new companion shift (``make_blend``), updates a blend image layer and
the truth outlines, and sets the shared current blend; the clock stops when
the inspector has drawn that blend's mask layers and table (with slow networks
the inspector draws SEP's overlays first: that time is printed too).  Printed: median
and p95 of the latency, for single moves (``interactive=False``, run at
once) and for drag moves (``interactive=True``, debounced), with the
breakdown measured inside the widget: time in the worker request (all
methods, IPC included; of which the methods' own time in the worker and
the table numbers), time to update layers and table, the final repaint,
the CPU time per move of the GUI process and of the worker (independent
of the machine's load, unlike the wall times), and each method's own
request time measured afterwards through the same engine.  While waiting,
the script sleeps in the Qt event loop as an application does
(``--busy-wait``: polls it every 0.5 ms, the harness of earlier runs).

Networks: the shipped models when installed ("auto"/"shipped"), otherwise
tiny untrained ones built by a throwaway worker ("tiny", said in the output);
"paper" builds untrained networks of the paper's sizes (slow on CPU).
The machine's load average is printed: timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

NETWORKS = ("blend2flux", "unet", "blend2mask2flux")
TARGET_P95_MS = 250.0


def _percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values, float), q))


def _summary(values_s) -> str:
    ms = [1000 * v for v in values_s]
    return f"median {statistics.median(ms):6.1f} ms   p95 {_percentile(ms, 95):6.1f} ms   max {max(ms):6.1f} ms"


def _weights(kind: str, folder: str) -> tuple[dict, str]:
    """{network: weights path or shipped name}, and a description."""
    from napari_blendphot.models.manifests import default_model

    if kind in ("auto", "shipped"):
        shipped = {name: default_model(name) for name in NETWORKS}
        if all(shipped.values()):
            return ({name: str(m.path) for name, m in shipped.items()},
                    "shipped models: " + ", ".join(f"{n}={m.name}" for n, m in shipped.items()))
        if kind == "shipped":
            raise SystemExit("no shipped models installed for: "
                             + ", ".join(n for n, m in shipped.items() if m is None))
        kind = "tiny"
    from bench_helpers import build_models  # module-level: the worker imports it by name

    from napari_blendphot.deblend.engine import InferenceEngine

    with InferenceEngine(("sep",)) as builder:
        paths = builder.call(build_models, folder, "tiny" if kind == "tiny" else "paper")
    note = ("tiny untrained networks (no shipped models installed yet)" if kind == "tiny"
            else "untrained networks of the paper's sizes")
    return paths, note


def _wait(app, condition, timeout: float = 120.0, busy: bool = False) -> None:
    """Run the Qt event loop until *condition()* holds.

    The loop sleeps until an event arrives, as the application's own loop
    does (the inspector's result arrives as a queued signal, which wakes
    it); a 20 ms timer keeps *condition* and the timeout checked.  With
    *busy*, it polls instead (processEvents every 0.5 ms: the harness of
    earlier runs, which keeps the GUI thread busy meanwhile).
    """
    from qtpy.QtCore import QEventLoop, QTimer

    start = time.perf_counter()
    timer = QTimer()
    timer.start(20)
    try:
        while not condition():
            if busy:
                app.processEvents()
                time.sleep(0.0005)
            else:
                app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)
            if time.perf_counter() - start > timeout:
                raise TimeoutError("the inspector did not update in time")
    finally:
        timer.stop()


def _process_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of this process (all its threads) or of process *pid*; NaN if unreadable."""
    if pid is None:
        return time.process_time()
    from bench_helpers import process_cpu_seconds

    return process_cpu_seconds(pid)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 moves (CI smoke test)")
    parser.add_argument("--moves", type=int, default=100)
    parser.add_argument("--networks", choices=("auto", "shipped", "tiny", "paper"), default="auto")
    parser.add_argument("--screenshot", help="save a window screenshot (PNG) at the end")
    parser.add_argument("--precision", choices=("float32", "bfloat16", "auto"), default="float32",
                        help="compute precision of the networks (the inspector's 'Network precision')")
    parser.add_argument("--busy-wait", action="store_true",
                        help="poll the event loop every 0.5 ms while waiting (the harness of earlier runs)")
    parser.add_argument("--settle", metavar="MS", type=float, default=0.0,
                        help="idle event loop for MS ms after each move (isolated moves; default 0: back to back, "
                             "each move starting while the previous one's deferred repaints are pending)")
    parser.add_argument("--profile", metavar="N", type=int, default=0,
                        help="also print the N costliest functions of the GUI thread over the single moves (cProfile)")
    parser.add_argument("--window", default="1600x1000",
                        help="window size WxH (repaints under software OpenGL scale with its area)")
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        if shutil.which("xvfb-run") is None:
            raise SystemExit("no display and no xvfb-run: install xvfb or run under a display")
        command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, __file__, *sys.argv[1:]]
        return subprocess.call(command)
    moves = 10 if args.quick else args.moves

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_blendphot._reader import mask_label_kwargs, mask_outlines
    from napari_blendphot.blend.assemble import make_blend
    from napari_blendphot.display import astro_contrast
    from napari_blendphot.sample.embedded import load_embedded_sample
    from napari_blendphot.app.inspector import InspectorModel
    from napari_blendphot.app.session import BlendState, current_blend_for
    from napari_blendphot.widgets.deblend_inspector import DeblendInspectorWidget

    folder = tempfile.mkdtemp(prefix="bench_gui_")
    weights, note = _weights(args.networks, folder)
    print(f"networks: {note}")
    sample = load_embedded_sample()
    central, companion = sample[0], sample[1]
    radius = float(sample.catalog["radius"][0])
    rng = np.random.default_rng(0)
    shifts = []
    while len(shifts) < moves + 1:
        dy, dx = (int(v) for v in rng.integers(-30, 31, size=2))
        if max(radius, 3.0) <= np.hypot(dy, dx) <= 40:
            shifts.append((dy, dx))

    viewer = napari.Viewer(show=True)
    width, height = (int(v) for v in args.window.lower().split("x"))
    viewer.window._qt_window.resize(width, height)
    model = InspectorModel(methods=["sep", *NETWORKS], precision=args.precision)
    for name in NETWORKS:
        model.set_weights(name, weights[name])
    widget = DeblendInspectorWidget(viewer, model=model)
    viewer.window.add_dock_widget(widget, name="Deblend Inspector", area="right")
    app = QApplication.instance()

    first = make_blend(central, companion, *shifts[0])
    meta = {"blendphot_kind": "builder", "source": "benchmark"}
    blend_layer = viewer.add_image(first.blend, name="blend", colormap="gray", metadata=meta,
                                   **astro_contrast(first.blend))
    truth_layer = viewer.add_labels(mask_outlines(first.masks), **mask_label_kwargs("blend truth", meta))
    truth_layer.visible = False  # the inspector's own truth layer shows it

    def move(blend, interactive):
        # What the Blend Builder does on a move: update its layers, then publish the blend.
        blend_layer.data = blend.blend
        truth_layer.data = mask_outlines(blend.masks)
        current_blend_for(viewer).set(BlendState(blend.blend, "bench pair", truth=blend, origin="builder",
                                                 interactive=interactive))

    start = time.perf_counter()
    move(first, False)
    _wait(app, lambda: widget.drawn_count >= 1, timeout=300)
    print(f"first run (worker start, model loading): {time.perf_counter() - start:.2f} s")
    errors = widget.last_inspection.errors
    if errors:
        print("errors:", errors)
        return 1
    for _ in range(3):  # warm the caches (first forward passes, first layer draws)
        n = widget.drawn_count
        move(make_blend(central, companion, *shifts[0]), False)
        _wait(app, lambda: widget.drawn_count > n)

    timed_draws = []
    original_draw = widget._draw

    def draw_timed(inspection):
        t0 = time.perf_counter()
        original_draw(inspection)
        timed_draws.append((time.perf_counter() - t0, inspection))

    widget._draw = draw_timed
    worker_pid = model.engine.worker_pid
    results = {}
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    for mode, interactive in (("single moves", False), ("drag moves", True)):
        if profiler is not None:
            profiler.enable() if not interactive else profiler.disable()
        rows = {key: [] for key in ("latency", "moving", "painting", "first", "gui_cpu", "worker_cpu")}
        timed_draws.clear()
        blends = [make_blend(central, companion, *shift) for shift in shifts[1:]]
        for blend in blends:
            n, partials = widget.drawn_count, widget.partial_count
            cpu0 = (_process_cpu_seconds(), _process_cpu_seconds(worker_pid))
            t0 = time.perf_counter()
            move(blend, interactive)
            t1 = time.perf_counter()
            seen = []

            def updated():
                if widget.partial_count > partials and not seen:
                    seen.append(time.perf_counter())
                return widget.drawn_count > n and widget.last_inspection.state.truth is blend

            _wait(app, updated, busy=args.busy_wait)
            t2 = time.perf_counter()
            app.processEvents()  # the canvas repaint queued by the layer updates
            t3 = time.perf_counter()
            rows["gui_cpu"].append(_process_cpu_seconds() - cpu0[0])
            rows["worker_cpu"].append(_process_cpu_seconds(worker_pid) - cpu0[1])
            rows["latency"].append(t3 - t0)
            rows["moving"].append(t1 - t0)
            rows["painting"].append(t3 - t2)
            if seen:
                rows["first"].append(seen[0] - t0)
            if args.settle > 0:
                _wait(app, lambda until=time.perf_counter() + args.settle / 1000: time.perf_counter() >= until)
        rows["draws"] = list(timed_draws)
        results[mode] = rows

    if profiler is not None:
        import pstats

        profiler.disable()
        print(f"GUI thread over the single moves, {args.profile} costliest functions:")
        order = os.environ.get("BENCH_PROFILE_SORT", "cumulative")  # or "tottime"
        pstats.Stats(profiler, stream=sys.stdout).sort_stats(order).print_stats(args.profile)
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)")
    precisions = sorted({str(out.metadata.get("precision")) for out in widget.last_inspection.outputs.values()
                         if "precision" in (out.metadata or {})})
    print(f"methods: {', '.join(model.selected)}; network precision {args.precision} "
          f"(used: {', '.join(precisions) or 'n/a'}); {moves} moves per mode; window {args.window}; "
          f"{'busy-polling' if args.busy_wait else 'idle'} event loop while waiting; "
          f"{f'{args.settle:.0f} ms idle between moves' if args.settle else 'moves back to back'}")
    for mode, rows in results.items():
        draws = rows["draws"]
        timings = [inspection.timings for _, inspection in draws]
        print(f"{mode:13s} move -> overlays + table: {_summary(rows['latency'])}")
        if rows["first"]:
            print(f"{'':13s}   SEP overlays first (progressive, {len(rows['first'])} moves): {_summary(rows['first'])}")
        print(f"{'':13s}   builder-like layer updates + set:  {_summary(rows['moving'])}")
        print(f"{'':13s}   inspector request (methods+table): {_summary([i.seconds for _, i in draws])}")
        print(f"{'':13s}     worker request (IPC included):   {_summary([t.get('request', np.nan) for t in timings])}")
        print(f"{'':13s}     methods' compute in the worker:  {_summary([t.get('compute', np.nan) for t in timings])}")
        print(f"{'':13s}     table numbers (measure):         {_summary([t.get('measure', np.nan) for t in timings])}")
        print(f"{'':13s}   inspector layers + table update:   {_summary([d for d, _ in draws])}")
        print(f"{'':13s}   final canvas repaint:              {_summary(rows['painting'])}")
        print(f"{'':13s}   CPU per move: GUI process {1000 * statistics.median(rows['gui_cpu']):.0f} ms, "
              f"worker {1000 * statistics.median(rows['worker_cpu']):.0f} ms (medians)")
    # What one repaint of this window costs here (software OpenGL under Xvfb), for scale.
    def repaint_times():
        times = []
        for k in range(10):
            low, high = blend_layer.contrast_limits
            blend_layer.contrast_limits = (low, high * (1.01 if k % 2 else 0.99))
            t0 = time.perf_counter()
            app.processEvents()
            times.append(time.perf_counter() - t0)
        return times

    print(f"one canvas repaint alone (contrast change): {_summary(repaint_times())}")
    ours = [layer for layer in viewer.layers if layer.metadata.get("blendphot_kind") == "inspector-masks"]
    for layer in ours:
        layer.visible = False
    print(f"  the same with the inspector's {len(ours)} mask layers hidden: {_summary(repaint_times())}")
    for layer in ours:
        layer.visible = True
    viewer.window._qt_window.resize(1000, 700)
    app.processEvents()
    print(f"  the same in a 1000x700 window:                 {_summary(repaint_times())}")
    engine = model.engine
    blend = make_blend(central, companion, *shifts[1])
    from napari_blendphot.app.inspector import truth_context

    print("per-method request time through the engine (same worker, 10 repeats):")
    for name in model.selected:
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            engine.run(blend.blend, truth_context(blend), methods=[name])
            times.append(time.perf_counter() - t0)
        print(f"  {name:16s} {_summary(times)}")
    p95 = 1000 * _percentile(results["single moves"]["latency"], 95)
    verdict = "met" if p95 <= TARGET_P95_MS else "MISSED"
    print(f"target p95 <= {TARGET_P95_MS:.0f} ms (single moves): {verdict} ({p95:.0f} ms)")
    if args.screenshot:
        viewer.screenshot(args.screenshot, canvas_only=False)
        print(f"screenshot: {args.screenshot}")
    widget.close_inspector()
    viewer.close()
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
