"""No process outlives its parent: the inference worker, SEP's pool in it and the resource tracker.

The caller is a separate Python process that starts an engine (which starts
SEP's pool inside its worker), lists its descendants and is then ended the
hard way.  Every descendant must be gone within 5 s.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

psutil = pytest.importorskip("psutil")

#: Seconds within which no process may be left (the chaos test's invariant).
ORPHAN_DEADLINE_S = 5.0

_CALLER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import psutil
    from napari_blendphot.deblend.engine import InferenceEngine
    from napari_blendphot.testing.stand_ins import toy_blends

    if __name__ == "__main__":
        blends = np.repeat(toy_blends(4, seed=1), 65, axis=0)  # 260 blends: SEP starts its pool (>= 256)
        engine = InferenceEngine(["sep"], method_options={"sep": {"n_jobs": 2}})
        engine.run(blends, chunk_size=len(blends))
        with open(sys.argv[2], "w") as handle:
            handle.write(" ".join(str(p.pid) for p in psutil.Process().children(recursive=True)))
        os.kill(os.getpid(), int(sys.argv[1]))
        engine.run(blends[:1])  # only reached if the signal did not end this process
""")


def _alive(processes) -> list:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_no_process_outlives_a_killed_caller(signum, tmp_path):
    # Files, not pipes: a process left behind would hold a pipe open and hang the test instead of failing it.
    pid_file, log = tmp_path / "pids", tmp_path / "stderr"
    with open(log, "w") as stderr:
        code = subprocess.run([sys.executable, "-c", _CALLER, str(int(signum)), str(pid_file)],
                              stdout=subprocess.DEVNULL, stderr=stderr, timeout=300).returncode
    assert code == -signum, log.read_text()
    pids = [int(pid) for pid in pid_file.read_text().split()]
    # The worker, SEP's two pool processes and multiprocessing's resource tracker.
    assert len(pids) >= 4, (pids, log.read_text())
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))  # remembers its start time: a recycled pid is another process
        except psutil.NoSuchProcess:
            continue
    deadline = time.monotonic() + ORPHAN_DEADLINE_S
    while _alive(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [(p.pid, p.name(), p.cmdline()[-2:]) for p in _alive(processes)]
    assert not left, f"still running {ORPHAN_DEADLINE_S} s after the caller was killed: {left}"
