"""End to end: the 5,000-blend test set through every method with the CLI, then the evaluation.

Run:
    python benchmarks/bench_evaluate_testset.py BLENDS_DIR          # an existing blend dataset (its test split)
    python benchmarks/bench_evaluate_testset.py --make-from scratch/mock2000.fits -n 6000 --n-test 5000
    python benchmarks/bench_evaluate_testset.py --quick             # 200 test blends of the embedded sample

Stages, each a real ``blendphot`` command run as a subprocess and timed
(wall clock):

0. (without BLENDS_DIR) ``blendphot blend SAMPLE -n N --test-fraction 0.2
   --n-test NT --seed 0``: making the dataset, reported but not part of the
   target;
1. weights: the shipped models under ``src/napari_blendphot/models/weights/``
   when a method has one; otherwise random-weight models of the shipped
   configurations (``training/configs/blend2flux_f64.json``,
   ``unet_d4_f16.json``, ``blend2mask2flux_compact.json``; tiny ones with
   ``--quick``; any configuration with ``--model "unet:depth=4,filters=8"``)
   are built in a subprocess, saved to temporary ``.keras`` files and
   passed with ``--weights`` (the output says which);
2. ``blendphot predict DIR --methods sep,blend2flux,unet,blend2mask2flux``
   (all methods, test split, default chunk size);
3. ``blendphot evaluate results.csv -o report/``;

and compares predict + evaluate with the target (``--target-seconds``,
120 s for 5,000 blends).  ``--per-method`` also runs predict once per
method, to show where the time goes.

Peak memory: for every process of a stage (the ``blendphot`` process, the
engine's worker, SEP's process pool) the peak resident set ``VmHWM`` is read
from ``/proc/PID/status`` while it runs (polled every 0.1 s; psutil is used
to find the descendants when installed), plus ``ru_maxrss`` of
``RUSAGE_CHILDREN`` (the largest single descendant waited for).  RSS counts
pages shared between processes (a pool forked from the TensorFlow worker
shares its TensorFlow pages) in every one of them, so the peak of the summed
*proportional* set size (``Pss`` of ``/proc/PID/smaps_rollup``) over all the
processes of the stage is printed too: that is the memory the stage really
takes.  The machine
is shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLENDPHOT = [sys.executable, "-m", "napari_blendphot.cli"]
METHODS = ("sep", "blend2flux", "unet", "blend2mask2flux")


# --------------------------------------------------------------------------- memory
def _children_of(pid: int) -> list[int]:
    """All descendants of *pid* (psutil if installed, else /proc/*/stat)."""
    try:
        import psutil

        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:  # the process has just exited
        return []
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current:
                found.append(child)
                frontier.append(child)
    return found


def _status(pid: int) -> dict:
    """Name and VmHWM / VmRSS (MiB) of a process from /proc, or {} if it is gone."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("Name", "VmHWM", "VmRSS"):
                    fields[key] = value.strip()
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            fields["cmdline"] = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return {}
    for key in ("VmHWM", "VmRSS"):
        if key in fields:
            fields[key] = int(fields[key].split()[0]) / 1024
    try:
        # Proportional set size: shared pages (a forked pool's copy-on-write TensorFlow) split between sharers.
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    fields["Pss"] = int(line.split()[1]) / 1024
                    break
    except OSError:
        pass
    return fields


def describe_process(cmdline: str) -> str:
    if "spawn_main" in cmdline or "multiprocessing" in cmdline:
        return "worker/pool"
    if "napari_blendphot.cli" in cmdline:
        return "blendphot"
    return cmdline[:60]


def record_peak(peaks: dict[int, dict], pid: int, status: dict) -> None:
    """Fold one /proc reading of *pid* into *peaks* (peak VmHWM and the newest non-empty command line).

    The first reading of a just-started child can come before its exec(): its command line is then
    empty or still the parent's, so the command line is refreshed on every reading, not kept from the first.
    """
    record = peaks.setdefault(pid, {"cmdline": "", "peak_mb": 0.0})
    if status.get("cmdline"):
        record["cmdline"] = status["cmdline"]
    record["peak_mb"] = max(record["peak_mb"], status["VmHWM"])


def summarise_peaks(peaks: dict[int, dict], root_pid: int, root_command: list[str], largest: int = 4):
    """(label, peak MiB, pid) of the stage's own process, then of its *largest* biggest descendants.

    The stage's own process is always listed and labelled from the command that started it, not
    from /proc: with several pool processes (SEP's process pool) and the worker, the
    ``blendphot`` process can be smaller than four of its descendants, and would otherwise drop
    out of the list depending on which processes the poller happened to see.
    """
    root = peaks.get(root_pid, {"peak_mb": 0.0})
    listed = [(describe_process(" ".join(root_command)), root["peak_mb"], root_pid)]
    others = sorted(((describe_process(r["cmdline"]), r["peak_mb"], pid) for pid, r in peaks.items()
                     if pid != root_pid), key=lambda item: -item[1])
    return listed + others[:largest]


#: Seconds between two readings of /proc.  Not 0.1 (rounds 1-10): reading ``smaps_rollup`` of the
#: 1.6 GiB worker ten times a second walks its page tables under its memory-map lock and slowed the
#: predict stage it measured by ~20 s (118.9 s against 97.0-102.0; docs/benchmarks.md, "Round 11").
#: Peak RSS (VmHWM) is the kernel's own high-water mark, exact at any interval; only the summed PSS is a sample.
DEFAULT_POLL_SECONDS = 1.0


def run_stage(name: str, command: list[str], log: Path, poll_s: float = DEFAULT_POLL_SECONDS) -> dict:
    """Run *command*, polling the peak RSS of it and its descendants; returns timings and peaks."""
    print(f"[{name}] {' '.join(command)}", flush=True)
    peaks: dict[int, dict] = {}
    total_pss_peak = 0.0
    # CPU time of every descendant that has been waited for (the CLI waits for its worker, the
    # worker for its pools): the stage's load-independent cost.
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=REPO)
        stop = threading.Event()

        def poll() -> None:
            nonlocal total_pss_peak
            while not stop.is_set():
                total_pss = 0.0
                for pid in [process.pid] + _children_of(process.pid):
                    status = _status(pid)
                    if "VmHWM" in status:
                        record_peak(peaks, pid, status)
                        total_pss += status.get("Pss", 0.0)
                total_pss_peak = max(total_pss_peak, total_pss)
                stop.wait(poll_s)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        returncode = process.wait()
        stop.set()
        poller.join()
    elapsed = time.perf_counter() - start
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (children_after.ru_utime - children_before.ru_utime
                   + children_after.ru_stime - children_before.ru_stime)
    if returncode != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise SystemExit(f"[{name}] failed with exit code {returncode} (log: {log})")
    processes = summarise_peaks(peaks, process.pid, command, largest=len(peaks))  # all of them, for the JSON
    summary = ", ".join(f"{label} {peak:.0f} MiB" for label, peak, _ in processes[:5])
    print(f"[{name}] {elapsed:.1f} s wall, {cpu_seconds:.1f} s CPU (all its processes; / {os.cpu_count()} cores = "
          f"{cpu_seconds / (os.cpu_count() or 1):.1f} s on an idle machine if fully parallel); "
          f"peak RSS per process: {summary}; peak of the summed PSS of all its processes: {total_pss_peak:.0f} MiB",
          flush=True)
    return {"stage": name, "seconds": elapsed, "cpu_seconds": cpu_seconds, "command": command,
            "peak_total_pss_mb": total_pss_peak,
            "peaks_mb": [{"process": label, "pid": pid, "peak_mb": peak} for label, peak, pid in processes]}


# --------------------------------------------------------------------------- weights
def parse_model_option(text: str) -> tuple[str, dict]:
    """``"unet:depth=4,filters=8"`` -> ("unet", {"depth": 4, "filters": 8}); lists with ';' (``dense_widths=32;32``)."""
    from bench_helpers import NETWORKS
    from bench_helpers import parse_value as value  # the same value syntax as bench_cpu_inference's --config

    method, _, rest = text.partition(":")
    if method.strip() not in NETWORKS:
        raise SystemExit(f"--model {text!r}: the method must be one of {', '.join(NETWORKS)}")
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, _, raw = item.partition("=")
        kwargs[key.strip()] = value(raw.strip())
    return method.strip(), kwargs


# --------------------------------------------------------------------------- main
def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv=None) -> int:
    from bench_helpers import NETWORKS, build_random_models, shipped_weights

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("blends_dir", nargs="?", type=Path, help="existing blend dataset folder")
    parser.add_argument("--make-from", default="scratch/mock2000.fits",
                        help="sample to make the dataset from when no BLENDS_DIR is given")
    parser.add_argument("-n", "--n-blends", type=int, default=6000, help="blends made (with --make-from)")
    parser.add_argument("--n-test", type=int, default=5000, help="test blends made (with --make-from)")
    parser.add_argument("--quick", action="store_true",
                        help="200 test blends of the embedded sample, tiny random networks")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--chunk-size", type=int, default=None, help="passed to predict (default: its own)")
    parser.add_argument("--precision", choices=("float32", "bfloat16", "auto"), default=None,
                        help="passed to predict: the networks' compute precision (default: predict's, float32)")
    parser.add_argument("--per-method", action="store_true", help="also run predict once per method")
    parser.add_argument("--random-weights", action="store_true",
                        help="random-weight models of the shipped configs even if shipped models exist")
    parser.add_argument("--model", action="append", default=[], metavar="METHOD:KEY=VALUE,...",
                        help='random-weight model of this configuration for a method, e.g. '
                             '"unet:depth=4,filters=8" (repeatable; replaces the shipped model)')
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary folder goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--target-seconds", type=float, default=120.0)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--poll-seconds", type=float, default=DEFAULT_POLL_SECONDS,
                        help="seconds between two memory readings of the stage's processes (default %(default)s; "
                             "shorter intervals slow the processes measured)")
    args = parser.parse_args(argv)
    if not args.poll_seconds > 0:
        parser.error(f"--poll-seconds: {args.poll_seconds} is not a positive number of seconds")
    if args.quick:
        args.make_from, args.n_blends, args.n_test = "embedded", 250, 200
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    if args.workdir is not None:
        if args.workdir.exists() and not args.workdir.is_dir():
            parser.error(f"--workdir {args.workdir}: exists and is not a folder")
        args.workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bench_testset_", dir=args.workdir))
    figures = {"load_average_start": load_average(), "cpus": os.cpu_count(), "stages": [],
               "poll_seconds": args.poll_seconds}
    print(f"bench_evaluate_testset: {os.cpu_count()} CPUs, load average {figures['load_average_start']}, "
          f"work folder {folder}", flush=True)
    try:
        blends_dir = args.blends_dir
        if blends_dir is None:
            blends_dir = folder / "blends"
            figures["stages"].append(run_stage("blend", BLENDPHOT + [
                "blend", str(args.make_from), "-n", str(args.n_blends), "--test-fraction", "0.2",
                "--n-test", str(args.n_test), "--seed", "0", "-o", str(blends_dir)], folder / "blend.log",
                args.poll_seconds))

        weights_args = []
        networks = [m for m in methods if m in NETWORKS]
        overrides = dict(parse_model_option(text) for text in args.model)
        shipped = {} if (args.quick or args.random_weights) else shipped_weights()
        shipped = {method: name for method, name in shipped.items() if method not in overrides}
        missing = [m for m in networks if m not in shipped]
        for method in networks:
            if method in shipped:
                print(f"weights: {method}: shipped model {shipped[method]}", flush=True)
        if missing:
            start = time.perf_counter()
            paths = build_random_models(missing, folder, tiny=args.quick, overrides=overrides)
            kind = "tiny" if args.quick else ("given-config" if overrides else "shipped-config")
            for method in missing:
                if method in overrides:
                    print(f"weights: {method}: random-weight model of {overrides[method]}", flush=True)
            print(f"weights: no shipped model used for {', '.join(missing)}: random-weight {kind} models built in "
                  f"{time.perf_counter() - start:.1f} s (speed only; the metrics below mean nothing for them)",
                  flush=True)
            for method, path in paths.items():
                weights_args += ["--weights", f"{method}={path}"]
        figures["weights"] = {"shipped": shipped, "random": missing, "tiny": bool(args.quick), "configs": overrides}

        results = folder / "results.csv"
        predict = BLENDPHOT + ["predict", str(blends_dir), "--methods", ",".join(methods), "-o", str(results),
                               "--split", "test"] + weights_args
        if args.chunk_size:
            predict += ["--chunk-size", str(args.chunk_size)]
        precision_args = ["--precision", args.precision] if args.precision else []
        predict += precision_args
        figures["precision"] = args.precision or "float32"
        predict_stage = run_stage("predict", predict, folder / "predict.log", args.poll_seconds)
        figures["stages"].append(predict_stage)
        for line in (folder / "predict.log").read_text().splitlines():
            if "blends in" in line or line.startswith("  "):
                print(f"    {line.strip()}")
        evaluate_stage = run_stage("evaluate", BLENDPHOT + ["evaluate", str(results), "-o", str(folder / "report")],
                                   folder / "evaluate.log", args.poll_seconds)
        figures["stages"].append(evaluate_stage)

        if args.per_method:
            for method in methods:
                extra = [a for pair in zip(weights_args[::2], weights_args[1::2]) if pair[1].startswith(method + "=")
                         for a in pair]
                command = BLENDPHOT + ["predict", str(blends_dir), "--methods", method, "-o",
                                       str(folder / f"results_{method}.csv"), "--split", "test"] + extra
                if method != "sep":
                    command += precision_args
                figures["stages"].append(run_stage(f"predict {method}", command, folder / f"predict_{method}.log",
                                                      args.poll_seconds))

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        figures["ru_maxrss_children_mb"] = children.ru_maxrss / 1024
        figures["load_average_end"] = load_average()
        total = predict_stage["seconds"] + evaluate_stage["seconds"]
        figures["predict_plus_evaluate_s"] = total
        print(f"\nload average at the end {figures['load_average_end']}; "
              f"largest single child process (ru_maxrss, RUSAGE_CHILDREN): {figures['ru_maxrss_children_mb']:.0f} MiB")
        cpu_total = predict_stage["cpu_seconds"] + evaluate_stage["cpu_seconds"]
        print(f"CPU time of predict + evaluate: {cpu_total:.1f} s")
        print(f"predict {predict_stage['seconds']:.1f} s + evaluate {evaluate_stage['seconds']:.1f} s = {total:.1f} s "
              f"for the test split with {', '.join(methods)}; target {args.target_seconds:.0f} s "
              f"-> {total / args.target_seconds:.2f} x target ({'met' if total <= args.target_seconds else 'MISSED'})")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
