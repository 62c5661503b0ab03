"""Load: a 100,000-blend ``blendphot predict`` in bounded memory, and 1,000 live GUI moves without growth.

Run (from the repository root)::

    python benchmarks/bench_load.py --quick                      # CI smoke: 2,000 blends, 50 moves, SEP only
    python benchmarks/bench_load.py --dataset scratch/load100k   # existing dataset (else -n blends are made)
    python benchmarks/bench_load.py -n 100000 --network-blends 10000 --moves 1000
    python benchmarks/bench_load.py --part predict | --part gui

Part "predict": ``blendphot predict DATASET --split all --methods sep`` runs as a
child process over the whole dataset, then all four methods over
``--network-blends`` blends (a separate dataset of that many blends, same
sample and seed; the networks are ~20x slower than SEP).  Every 0.5 s the resident memory (RSS, from ``psutil``)
of the predict process, of its engine worker (the spawned child) and of the
worker's SEP process pool is sampled; the predict progress bar on stderr gives
the RSS at 10 / 50 / 90 % of the blends.  Printed: blends, wall time,
blends/s, peak RSS of each process and the RSS at those points.

Part "gui": a napari viewer (under Xvfb: the script runs that part under
``xvfb-run -a`` when there is no display) with the Blend Builder and the
Deblend Inspector docked, live mode on with SEP and the three networks; the
companion is moved ``--moves`` times, alternately through the builder's dy/dx
spin boxes (a single move, run at once) and through the builder model with
``interactive=True`` (a drag step, debounced), and every move waits until the
inspector has drawn that very blend.  Every 100 moves (10 with ``--quick``):
number of layers, GUI process RSS, worker RSS, ``len(gc.get_objects())`` and
the traced Python memory; at the end the tracemalloc lines that grew most
between the first and the last sample.

Networks: the shipped models when installed, else tiny untrained networks
built and saved by a separate Python process (said in the output).  TensorFlow
never loads in this process nor in the napari one.  The machine's load average
is printed: the machine is shared and timings are noisy.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

NETWORKS = ("blend2flux", "unet", "blend2mask2flux")
ALL_METHODS = ("sep", *NETWORKS)
MB = 1024 * 1024


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min)"


def _blendphot() -> list[str]:
    return [sys.executable, "-m", "napari_blendphot.cli"]


# ------------------------------------------------------------------ networks
def _weights(folder: Path, kind: str = "auto") -> tuple[dict, str]:
    """{network: weights path}, and what they are ({} and "none" for *kind* "none")."""
    from napari_blendphot.models.manifests import default_model

    if kind == "none":
        return {}, "none (SEP only)"

    shipped = {name: default_model(name) for name in NETWORKS}
    if kind == "auto" and all(shipped.values()):
        return ({name: str(m.path) for name, m in shipped.items()},
                "shipped models: " + ", ".join(f"{n}={m.name}" for n, m in shipped.items()))
    paths = {name: str(folder / f"{name}-tiny.keras") for name in NETWORKS}
    note = "tiny untrained networks (no shipped models installed), built in a separate process"
    if all(Path(p).is_file() for p in paths.values()):
        return paths, note  # built by the parent run
    # Keras is imported in a separate interpreter only, never here (this process may host napari).
    built = subprocess.run([sys.executable, __file__, "--build-tiny-models", str(folder)], capture_output=True,
                           text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if built.returncode != 0:
        raise SystemExit(f"building the tiny networks failed:\n{built.stderr[-3000:]}")
    missing = [p for p in paths.values() if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"building the tiny networks wrote no {', '.join(missing)}")
    return paths, note


def _build_tiny_models(folder: str) -> None:
    from bench_helpers import build_models

    build_models(folder, "tiny")


# ------------------------------------------------------------------ memory sampling
class TreeSampler:
    """Samples every *interval* s the RSS of a process, of its engine worker and of the worker's pool.

    The engine worker is the child started by multiprocessing's spawn (not the
    resource tracker); SEP's process pool are the worker's descendants.
    """

    def __init__(self, pid: int, interval: float = 0.5):
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float, float, float]] = []  # (t, parent, worker, pool) in MB
        self.progress = (0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.perf_counter()

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _rss(process) -> float:
        try:
            return process.memory_info().rss / MB
        except Exception:  # the process ended between listing and reading
            return 0.0

    def _worker(self):
        try:
            children = self.process.children()
        except Exception:
            return None
        for child in children:
            try:
                line = " ".join(child.cmdline())
            except Exception:
                continue
            if "resource_tracker" not in line and ("spawn_main" in line or "multiprocessing" in line):
                return child
        return None

    def sample(self) -> tuple[float, float, float, float]:
        parent = self._rss(self.process)
        worker = self._worker()
        worker_rss = self._rss(worker) if worker is not None else 0.0
        pool = 0.0
        if worker is not None:
            try:
                pool = sum(self._rss(p) for p in worker.children(recursive=True))
            except Exception:
                pass
        return (time.perf_counter() - self._start, parent, worker_rss, pool)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.sample()
            if value[1] > 0:
                self.samples.append((*value, *self.progress))
            self._stop.wait(self.interval)


def run_predict(dataset: Path, methods, output: Path, weights: dict | None = None) -> dict:
    """Run ``blendphot predict`` over the whole dataset, sampling memory; returns the figures."""
    import psutil  # noqa: F401  (fail early with a clear ImportError)

    command = [*_blendphot(), "predict", str(dataset), "--split", "all", "--methods", ",".join(methods),
               "-o", str(output), "--overwrite"]
    for name, path in (weights or {}).items():
        if name in methods:
            command += ["--weights", f"{name}={path}"]
    import pty

    # stderr on a pseudo-terminal: predict's progress bar then reports every percent (on a
    # pipe it writes only multiples of 10 %), which gives the RSS at 10 / 50 / 90 % of the blends.
    master, slave = pty.openpty()
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    os.close(slave)
    sampler = TreeSampler(process.pid).start()
    err_chunks = []
    progress_re = re.compile(rb"(\d+)/(\d+)")

    def read_stderr():
        buffer = b""
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            err_chunks.append(data)
            buffer = (buffer + data)[-200:]
            found = progress_re.findall(buffer.split(b"\r")[-1])
            if found:
                done, total = found[-1]
                sampler.progress = (int(done), int(total))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    stdout = process.stdout.read().decode()
    process.wait()
    reader.join(timeout=5)
    os.close(master)
    wall = time.perf_counter() - start
    sampler.stop()
    stderr = b"".join(err_chunks).decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"blendphot predict failed (exit {process.returncode}):\n{stderr[-3000:]}")
    samples = np.array(sampler.samples, float).reshape(-1, 6)
    n = int(samples[:, 5].max()) if len(samples) else 0
    match = re.search(r"(\d+) blends in ([\d.]+) s", stdout)
    n_blends = int(match.group(1)) if match else n
    engine_seconds = float(match.group(2)) if match else float("nan")
    at = {}
    running = samples[(samples[:, 5] > 0) & (samples[:, 2] > 0)]  # while the worker computes
    for fraction in (0.1, 0.5, 0.9):
        # The sample nearest to this share of the blends done (every percent on a terminal;
        # with few chunks, the nearest chunk boundary: the share reached is printed).
        if len(running):
            row = running[np.argmin(np.abs(running[:, 4] / running[:, 5] - fraction))]
            at[fraction] = (*row[1:4], row[4] / row[5])
        else:
            at[fraction] = (float("nan"),) * 4
    return {"methods": list(methods), "blends": n_blends, "wall": wall, "engine_seconds": engine_seconds,
            "peak": tuple(samples[:, 1:4].max(axis=0)) if len(samples) else (0.0, 0.0, 0.0),
            "at": at, "n_samples": len(samples), "stdout": stdout}


def print_predict(figures: dict, label: str) -> None:
    n, wall = figures["blends"], figures["wall"]
    parent, worker, pool = figures["peak"]
    print(f"\n== predict ({label}): methods {','.join(figures['methods'])}")
    print(f"blends: {n}   wall (whole command): {wall:.1f} s   blends/s: {n / wall:.1f}   "
          f"engine loop: {figures['engine_seconds']:.1f} s ({n / figures['engine_seconds']:.1f} blends/s)")
    print(f"peak RSS: predict process {parent:.0f} MB   worker {worker:.0f} MB   worker's SEP pool {pool:.0f} MB "
          f"({figures['n_samples']} samples, every 0.5 s)")
    print("RSS at progress (blends done)   predict   worker   pool (MB)")
    for fraction, (p, w, s, reached) in figures["at"].items():
        print(f"  {int(fraction * 100):3d} % ({100 * reached:5.1f} % done)     {p:8.0f} {w:8.0f} {s:7.0f}")
    (p10, w10, _, _), (p90, w90, _, _) = figures["at"][0.1], figures["at"][0.9]
    print(f"growth 10 % -> 90 %: predict {p90 - p10:+.0f} MB, worker {w90 - w10:+.0f} MB "
          f"(over {0.8 * n:.0f} blends)")


def make_dataset(blends: int, output: Path) -> None:
    subprocess.run([*_blendphot(), "blend", "embedded", "-n", str(blends), "--test-fraction", "0",
                    "--seed", "11", "-o", str(output)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def part_predict(args, workdir: Path, weights: dict, note: str) -> None:
    n = 2000 if args.quick else args.n_blends
    n_networks = 200 if args.quick else args.network_blends
    dataset = Path(args.dataset) if args.dataset else None
    if "sep" in args.runs:
        part_predict_sep(args, workdir, n, dataset)
    if "networks" in args.runs and weights and n_networks > 0:
        part_predict_networks(workdir, n_networks, weights, note)


def part_predict_sep(args, workdir: Path, n: int, dataset: Path | None) -> None:
    if dataset is None:
        dataset = workdir / f"blends{n}"
        t0 = time.perf_counter()
        make_dataset(n, dataset)
        print(f"made {n} blends (embedded sample, seed 11) in {time.perf_counter() - t0:.1f} s: {dataset}")
    print(f"machine before predict: {_load()}")
    figures = run_predict(dataset, ("sep",), workdir / "results_sep")
    print_predict(figures, f"{dataset.name}, SEP only")
    print(f"machine after: {_load()}")


def part_predict_networks(workdir: Path, n_networks: int, weights: dict, note: str) -> None:
    small = workdir / f"blends{n_networks}"
    make_dataset(n_networks, small)
    figures = run_predict(small, ("sep", *weights), workdir / "results_all", weights)
    print_predict(figures, f"{n_networks} blends, SEP and the networks; networks: {note}")
    print(f"machine after: {_load()}")
    shutil.rmtree(small, ignore_errors=True)


# ------------------------------------------------------------------ GUI session
def gui_session(moves: int, every: int, weights: dict, note: str, window: str = "1400x900",
                max_seconds: float | None = None) -> int:
    import tracemalloc

    import napari
    import psutil
    from qtpy.QtWidgets import QApplication

    from napari_blendphot.app.inspector import InspectorModel
    from napari_blendphot.widgets.blend_builder import BlendBuilderWidget
    from napari_blendphot.widgets.deblend_inspector import DeblendInspectorWidget

    print(f"networks: {note}", flush=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*(int(v) for v in window.split("x")))
    builder = BlendBuilderWidget(viewer)
    viewer.window.add_dock_widget(builder, name="Blend Builder", area="right")
    model = InspectorModel(methods=["sep", *weights])
    for name, path in weights.items():
        model.set_weights(name, path)
    inspector = DeblendInspectorWidget(viewer, model=model)
    viewer.window.add_dock_widget(inspector, name="Deblend Inspector", area="right")
    inspector.live_box.setChecked(True)
    app = QApplication.instance()
    me = psutil.Process()

    def wait(condition, timeout=300.0):
        start = time.perf_counter()
        while not condition():
            app.processEvents()
            if time.perf_counter() - start > timeout:
                raise TimeoutError("the inspector did not draw the moved blend in time")
            time.sleep(0.001)

    def drawn(count):
        return lambda: (inspector.drawn_count > count and inspector.last_inspection is not None
                        and inspector.last_inspection.state.truth is builder.model.blend)

    start = time.perf_counter()
    count = inspector.drawn_count
    builder.load_embedded(background=False)
    wait(drawn(count))
    print(f"first blend inspected (worker start, model loading) after {time.perf_counter() - start:.1f} s",
          flush=True)
    errors = inspector.last_inspection.errors
    if errors:
        print("inspector errors:", errors)
        return 1
    if "tensorflow" in sys.modules:
        print("TensorFlow was imported in the napari process")
        return 1
    rng = np.random.default_rng(0)

    def next_shift(dy, dx, axes):
        # A drag-like random walk: 1-4 px steps along *axes*, the companion kept 5-40 px from the centre.
        while True:
            step = rng.integers(-4, 5, size=2) * np.array(axes)
            ny, nx = dy + int(step[0]), dx + int(step[1])
            if (ny, nx) != (dy, dx) and 5 <= np.hypot(ny, nx) <= 40:
                return ny, nx

    def move(k):
        dy, dx = builder.model.dy, builder.model.dx
        ny, nx = next_shift(dy, dx, ((1, 0), (1, 1), (0, 1), (1, 1))[k % 4])
        count = inspector.drawn_count
        if k % 2 == 0:
            # A single move through the spin boxes: one axis per step, as a user clicking the arrows.
            if k % 4 == 0:
                builder.dy_spin.setValue(ny)
            else:
                builder.dx_spin.setValue(nx)
        else:
            builder.model.set_shift(ny, nx, interactive=True)  # one step of a drag on the canvas
        wait(drawn(count))
        app.processEvents()  # the repaint queued by the layer updates

    for k in range(5):  # warm-up: first draws of every layer
        move(k)
    gc.collect()
    tracemalloc.start(1)
    worker = lambda: psutil.Process(model.engine.worker_pid).memory_info().rss / MB  # noqa: E731
    rows = []

    def sample(k, seconds):
        gc.collect()
        traced, _ = tracemalloc.get_traced_memory()
        rows.append((k, len(viewer.layers), me.memory_info().rss / MB, worker(), len(gc.get_objects()),
                     traced / MB, seconds))
        print("  sample: moves {} layers {} GUI RSS {:.1f} MB worker RSS {:.1f} MB gc objects {} traced {:.2f} MB "
              "median move {:.0f} ms".format(*rows[-1][:6], 1000 * seconds), flush=True)
        return tracemalloc.take_snapshot()

    first_snapshot = sample(0, 0.0)
    layer_names = [layer.name for layer in viewer.layers]
    times = []
    session_start = time.perf_counter()
    for k in range(1, moves + 1):
        t0 = time.perf_counter()
        move(k)
        times.append(time.perf_counter() - t0)
        if k % every == 0:
            last_snapshot = sample(k, float(np.median(times[-every:])))
            if max_seconds is not None and time.perf_counter() - session_start > max_seconds and k < moves:
                print(f"STOPPED after {k} of {moves} moves: the time budget of {max_seconds:.0f} s is spent")
                moves = k
                break
    tracemalloc.stop()
    print(f"machine: {_load()}")
    print(f"methods: {', '.join(model.selected)}; {moves} moves (half spin-box moves, half drag steps)")
    print(f"{'moves':>6s} {'layers':>6s} {'GUI RSS MB':>10s} {'worker RSS MB':>13s} {'gc objects':>10s} "
          f"{'traced MB':>9s} {'median move ms':>14s}")
    for k, layers, gui_rss, worker_rss, objects, traced, seconds in rows:
        print(f"{k:6d} {layers:6d} {gui_rss:10.1f} {worker_rss:13.1f} {objects:10d} {traced:9.2f} "
              f"{1000 * seconds:14.0f}")
    table = np.array([r[:6] for r in rows], float)
    per = 100.0
    if len(table) >= 3:
        # Slopes over the samples after the first (layer creation and first draws settle there).
        slopes = [np.polyfit(table[1:, 0], table[1:, col], 1)[0] * per for col in (2, 3, 4, 5)]
    else:
        slopes = [(table[-1, col] - table[0, col]) / max(table[-1, 0], 1) * per for col in (2, 3, 4, 5)]
    print(f"growth per {per:.0f} moves (least-squares slope from move {int(table[1, 0]) if len(table) > 2 else 0}): "
          f"GUI RSS {slopes[0]:+.2f} MB, worker RSS {slopes[1]:+.2f} MB, gc objects {slopes[2]:+.0f}, "
          f"traced {slopes[3]:+.3f} MB")
    print(f"total over {moves} moves: GUI RSS {table[-1, 2] - table[0, 2]:+.1f} MB, "
          f"worker RSS {table[-1, 3] - table[0, 3]:+.1f} MB, gc objects {int(table[-1, 4] - table[0, 4]):+d}, "
          f"traced {table[-1, 5] - table[0, 5]:+.2f} MB")
    constant = len(set(int(r[1]) for r in rows)) == 1 and [layer.name for layer in viewer.layers] == layer_names
    print(f"layers: {int(table[0, 1])} -> {int(table[-1, 1])} ({'constant' if constant else 'CHANGED'}): "
          f"{', '.join(layer_names)}")
    print("tracemalloc: lines that grew most between the first and the last sample:")
    for stat in last_snapshot.compare_to(first_snapshot, "lineno")[:8]:
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  {frame.filename}:{frame.lineno}")
    print(f"move times: median {1000 * np.median(times):.0f} ms, p95 {1000 * np.percentile(times, 95):.0f} ms, "
          f"max {1000 * max(times):.0f} ms (tracemalloc on: slower than without)")
    print(f"tensorflow in the napari process: {'tensorflow' in sys.modules}")
    inspector.close_inspector()
    viewer.close()
    return 0 if constant else 1


def part_gui(args, weights_folder: Path, networks: str) -> int:
    moves = 50 if args.quick else args.moves
    every = 10 if args.quick else 100
    command = [sys.executable, __file__, "--gui-child", str(weights_folder), "--moves", str(moves),
               "--every", str(every), "--networks", networks, "--window", "1000x700" if args.quick else args.window]
    if args.max_seconds:
        command += ["--max-seconds", str(args.max_seconds)]
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        if shutil.which("xvfb-run") is None:
            raise SystemExit("no display and no xvfb-run: install xvfb or run under a display")
        command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", *command]
    print(f"\n== GUI session: {moves} companion moves, sampled every {every}")
    sys.stdout.flush()
    return subprocess.call(command)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2,000 blends, 50 moves, SEP only unless --networks is given (CI smoke)")
    parser.add_argument("--part", choices=("predict", "gui", "both"), default="both")
    parser.add_argument("-n", "--n-blends", type=int, default=100_000,
                        help="blends made when no --dataset is given (default 100,000)")
    parser.add_argument("--dataset", help="an existing blend dataset for the SEP-only predict")
    parser.add_argument("--network-blends", type=int, default=10_000,
                        help="blends of the all-methods predict (default 10,000)")
    parser.add_argument("--moves", type=int, default=1000)
    parser.add_argument("--runs", default="sep,networks",
                        help="predict runs: 'sep' (SEP over the whole dataset), 'networks' (all methods "
                             "over --network-blends), or both (default)")
    parser.add_argument("--networks", choices=("auto", "tiny", "none"),
                        help="auto: the shipped models, else tiny untrained ones; none: SEP only "
                             "(default auto; none with --quick, which must stay under ~40 s)")
    parser.add_argument("--workdir", help="folder for the datasets and results (default a temporary one)")
    parser.add_argument("--build-tiny-models", help=argparse.SUPPRESS)
    parser.add_argument("--gui-child", help=argparse.SUPPRESS)
    parser.add_argument("--every", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--window", default="1400x900", help="GUI window size WxH")
    parser.add_argument("--max-seconds", type=float,
                        help="stop the GUI session at the next sample after this many seconds of moves")
    args = parser.parse_args(argv)
    if args.build_tiny_models:
        _build_tiny_models(args.build_tiny_models)
        return 0
    networks = args.networks or ("none" if args.quick else "auto")
    if args.gui_child:
        folder = Path(args.gui_child)
        return gui_session(args.moves, args.every, *_weights(folder, networks), window=args.window,
                           max_seconds=args.max_seconds)

    workdir = Path(tempfile.mkdtemp(prefix="bench_load_", dir=args.workdir))
    try:
        print(f"machine: {_load()}")
        weights, note = _weights(workdir, networks)
        print(f"networks: {note}")
        status = 0
        if args.part in ("predict", "both"):
            part_predict(args, workdir, weights, note)
        if args.part in ("gui", "both"):
            status = part_gui(args, workdir, networks)
        return status
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
