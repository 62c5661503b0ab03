"""Peak memory of the inference worker and of the GUI with all networks loaded.

Run:
    python benchmarks/bench_memory.py             # shipped models if installed, else random-weight shipped configs
    python benchmarks/bench_memory.py --quick     # tiny random networks
    python benchmarks/bench_memory.py --no-gui    # the worker only (no display needed)

Two measurements, each in its own process so that neither sees the other's
memory:

* **worker**: a plain Python process creates an
  :class:`~napari_blendphot.deblend.engine.InferenceEngine` with all four
  methods, warms it up (Keras/TensorFlow imported, the three networks
  loaded, one forward pass each), then runs one chunk of ``--chunk`` blends
  through every method (the activations of a real request).  Printed: the
  worker's resident set (``VmRSS``) after the warm-up and its peak
  (``VmHWM``) after the chunk, and the caller's.
* **gui**: a napari viewer (shown, under Xvfb: the script re-runs that part
  with ``xvfb-run -a`` when there is no display) with the Deblend Inspector
  docked and every method ticked, its engine warmed up, then one inspection
  of a blend of the embedded sample.  Printed: the GUI process's RSS before
  the viewer, with the viewer, with the inspector and after the inspection,
  its peak, and the worker's RSS and peak; the sum is what the plugin costs.

Random-weight networks (when no shipped model is installed) are built and
saved by a separate Python process, never in the GUI process.  The machine
is shared: the figures are this process's own memory and do not depend on
the load, but the load average is printed anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_helpers import build_random_models, shipped_weights, toy_blends

METHODS = ("sep", "blend2flux", "unet", "blend2mask2flux")
NETWORKS = METHODS[1:]


def memory_mb(pid: int | str = "self") -> dict:
    """VmRSS and VmHWM (peak) of a process in MiB, from /proc."""
    found = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return found


def network_weights(folder: Path, quick: bool) -> tuple[dict, str]:
    """{network: weights} (shipped names, or random-weight files built in a subprocess) and a description."""
    from napari_blendphot.models.manifests import default_model

    shipped = {} if quick else shipped_weights()
    missing = [name for name in NETWORKS if name not in shipped]
    # Paths, not shipped names: the inspector's set_weights takes a file.
    weights = {name: str(default_model(name).path) for name in shipped}
    if missing:
        weights.update(build_random_models(missing, folder, tiny=quick))
    parts = [f"{name}: shipped {shipped[name]}" for name in NETWORKS if name in shipped]
    if missing:
        parts.append(f"{', '.join(missing)}: random-weight {'tiny' if quick else 'shipped-config'} models")
    return weights, "; ".join(parts)


def test_blends(n: int) -> tuple[np.ndarray, object]:

    return toy_blends(n)


def measure_worker(weights: dict, chunk: int) -> dict:
    from napari_blendphot.deblend.engine import InferenceEngine

    blends, context = test_blends(chunk)
    options = {name: {"weights": str(weights[name])} for name in NETWORKS}
    figures = {"caller_start": memory_mb()}
    with InferenceEngine(METHODS, method_options=options, chunk_size=chunk) as engine:
        start = time.perf_counter()
        engine.warm_up()
        figures["warm_up_s"] = time.perf_counter() - start
        figures["worker_after_warm_up"] = memory_mb(engine.worker_pid)
        engine.run(blends, context)
        figures["worker_after_chunk"] = memory_mb(engine.worker_pid)
        figures["caller_after_chunk"] = memory_mb()
    return figures


def measure_gui(weights: dict) -> dict:
    """Runs in the Xvfb process: viewer + inspector + warmed engine."""
    before = memory_mb()
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_blendphot.blend.assemble import make_blend
    from napari_blendphot.sample.embedded import load_embedded_sample
    from napari_blendphot.app.inspector import InspectorModel
    from napari_blendphot.widgets.deblend_inspector import DeblendInspectorWidget

    figures = {"gui_imports": memory_mb(), "gui_start": before}
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    app.processEvents()
    figures["gui_viewer"] = memory_mb()
    model = InspectorModel(methods=list(METHODS))
    for name in NETWORKS:
        model.set_weights(name, str(weights[name]))
    widget = DeblendInspectorWidget(viewer, model=model)
    viewer.window.add_dock_widget(widget, name="Deblend Inspector", area="right")
    app.processEvents()
    figures["gui_inspector"] = memory_mb()
    engine = model.engine
    start = time.perf_counter()
    engine.warm_up()
    figures["warm_up_s"] = time.perf_counter() - start
    figures["worker_after_warm_up"] = memory_mb(engine.worker_pid)
    sample = load_embedded_sample()
    blend = make_blend(sample[0], sample[1], 10, -12)
    viewer.add_image(blend.blend, name="blend")
    # One inspection through the engine, as the widget runs it (all methods, one blend).
    engine.run(blend.blend[None], methods=list(METHODS))
    app.processEvents()
    figures["gui_after_inspection"] = memory_mb()
    figures["worker_after_inspection"] = memory_mb(engine.worker_pid)
    figures["torch_or_tensorflow_in_gui"] = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
    viewer.close()
    model.close()
    return figures


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random networks, chunk of 16")
    parser.add_argument("--chunk", type=int, default=256, help="blends of the timed chunk (predict's default 256)")
    parser.add_argument("--no-gui", action="store_true", help="skip the napari measurement")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--gui-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gui_child:
        figures = measure_gui(json.loads(args.gui_child))
        print("GUI " + json.dumps(figures), flush=True)
        return 0

    chunk = 16 if args.quick else args.chunk
    print(f"bench_memory: {os.cpu_count()} CPUs, load average {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as folder:
        weights, note = network_weights(Path(folder), args.quick)
        print(f"networks: {note}", flush=True)
        worker = measure_worker(weights, chunk)
        print(f"worker (all 4 methods, warm-up {worker['warm_up_s']:.1f} s): RSS after warm-up "
              f"{worker['worker_after_warm_up']['VmRSS']:.0f} MiB; after a chunk of {chunk} blends "
              f"{worker['worker_after_chunk']['VmRSS']:.0f} MiB, peak {worker['worker_after_chunk']['VmHWM']:.0f} MiB; "
              f"caller peak {worker['caller_after_chunk']['VmHWM']:.0f} MiB", flush=True)
        figures = {"load_average": load_average(), "networks": note, "chunk": chunk, "worker": worker}
        if not args.no_gui:
            command = [sys.executable, str(Path(__file__).resolve()), "--gui-child",
                       json.dumps({k: str(v) for k, v in weights.items()})]
            if not os.environ.get("DISPLAY"):
                if shutil.which("xvfb-run") is None:
                    raise SystemExit("no display and no xvfb-run: install xvfb, or pass --no-gui")
                command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24"] + command
            completed = subprocess.run(command, stdout=subprocess.PIPE, text=True)
            lines = [line for line in completed.stdout.splitlines() if line.startswith("GUI ")]
            if completed.returncode != 0 or not lines:
                print(completed.stdout[-3000:], file=sys.stderr)
                raise SystemExit(f"the GUI measurement failed with exit code {completed.returncode}")
            gui = json.loads(lines[-1][4:])
            figures["gui"] = gui
            total = gui["gui_after_inspection"]["VmRSS"] + gui["worker_after_inspection"]["VmRSS"]
            peak = gui["gui_after_inspection"]["VmHWM"] + gui["worker_after_inspection"]["VmHWM"]
            print(f"gui: process RSS {gui['gui_start']['VmRSS']:.0f} MiB at start, "
                  f"{gui['gui_imports']['VmRSS']:.0f} after imports, {gui['gui_viewer']['VmRSS']:.0f} with the viewer, "
                  f"{gui['gui_inspector']['VmRSS']:.0f} with the inspector, {gui['gui_after_inspection']['VmRSS']:.0f} "
                  f"after an inspection (peak {gui['gui_after_inspection']['VmHWM']:.0f}); worker "
                  f"{gui['worker_after_inspection']['VmRSS']:.0f} MiB (peak {gui['worker_after_inspection']['VmHWM']:.0f}); "
                  f"GUI + worker {total:.0f} MiB (sum of peaks {peak:.0f} MiB); Keras modules in the GUI process: "
                  f"{gui['torch_or_tensorflow_in_gui'] or 'none'}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
