"""IsolatedWorker.stop() when another thread reaps the worker at the same instant (the executor's own thread)."""

from __future__ import annotations

import os
import time

from napari_blendphot.deblend.executor import IsolatedWorker


class _ReapedElsewhere:
    """A process that has ended (its sentinel is ready) but whose exit code another thread records late.

    This is what ``multiprocessing.Process`` shows when the executor's thread
    won the ``waitpid`` race: ``is_alive()`` says True until that thread has
    stored the code.
    """

    def __init__(self, code_after: float):
        read_end, write_end = os.pipe()
        os.close(write_end)  # the child is gone: its end of the pipe is closed
        self.sentinel, self._known_at, self.signals = read_end, time.monotonic() + code_after, []

    @property
    def exitcode(self):
        return 0 if time.monotonic() >= self._known_at else None

    def is_alive(self):
        return self.exitcode is None

    def join(self, timeout=None):
        pass  # waitpid finds nothing to reap: returns at once, no code

    def terminate(self):
        self.signals.append("SIGTERM")

    def kill(self):
        self.signals.append("SIGKILL")


class _Pool:
    _broken = True  # no goodbye task: the process has ended

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def test_stop_signals_no_ended_process_and_returns_once_its_code_is_known():
    worker = IsolatedWorker()
    process = _ReapedElsewhere(code_after=0.05)
    worker._pool, worker.process = _Pool(), process
    try:
        worker.stop(timeout=5.0)
        # Before: terminate() and kill() were sent to a pid another thread had reaped, and stop()
        # returned while is_alive() still said True.
        assert process.signals == [] and not process.is_alive()
        assert worker.process is None and worker.pid is None
    finally:
        os.close(process.sentinel)
        worker.close()
