"""IsolatedWorker.stop() when another thread reaps the worker at the same instant (the executor's own thread)."""

from __future__ import annotations

import concurrent.futures
import os
import time
from concurrent.futures.process import BrokenProcessPool

import pytest

from napari_blendphot.deblend import executor
from napari_blendphot.deblend.executor import IsolatedWorker
from napari_blendphot.errors import WorkerError


class _ReapedElsewhere:
    """A process that has ended (its sentinel is ready) but whose exit code another thread records late.

    This is what ``multiprocessing.Process`` shows when the executor's thread
    won the ``waitpid`` race: ``is_alive()`` says True until that thread has
    stored the code.
    """

    def __init__(self, code_after: float, code: int = 0):
        self._code = code
        read_end, write_end = os.pipe()
        os.close(write_end)  # the child is gone: its end of the pipe is closed
        self.sentinel, self._known_at, self.signals = read_end, time.monotonic() + code_after, []

    @property
    def exitcode(self):
        return self._code if time.monotonic() >= self._known_at else None

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


class _PoolWhoseWorkerDiedAtStart(_Pool):
    """What an unguarded script's pool shows: its one process exited with code 1 while importing ``__main__``."""

    def __init__(self, process):
        self._processes = {1: process}

    def submit(self, function, *args):
        future = concurrent.futures.Future()
        future.set_exception(BrokenProcessPool("a process in the pool was terminated abruptly"))
        return future


def test_a_worker_dead_at_start_is_reported_with_its_exit_code_even_when_reaped_elsewhere(monkeypatch):
    process = _ReapedElsewhere(code_after=0.05, code=1)
    monkeypatch.setattr(executor, "process_pool", lambda *args, **kwargs: _PoolWhoseWorkerDiedAtStart(process))
    worker = IsolatedWorker()
    try:
        # Before: a single join() then exitcode read None ("stopped answering while starting", without
        # the hint to guard the main module): seen once in 30 runs of an unguarded script.
        with pytest.raises(WorkerError, match=r"exited with code 1 while starting .*if __name__ == "):
            worker.start(timeout=5.0)
    finally:
        os.close(process.sentinel)
        worker.close()


class _BrokenPoolStillClosing(_Pool):
    """A broken pool whose own thread is still closing its wake-up pipe when stop() comes."""

    def __init__(self):
        import threading
        self._executor_manager_thread = threading.Thread(target=time.sleep, args=(0.2,))
        self._executor_manager_thread.start()
        self.manager_alive_at_shutdown = None

    def shutdown(self, wait=True, cancel_futures=False):
        self.manager_alive_at_shutdown = self._executor_manager_thread.is_alive()


def test_stop_lets_a_broken_pools_thread_finish_before_shutting_it_down():
    worker = IsolatedWorker()
    pool = _BrokenPoolStillClosing()
    worker._pool, worker.process = pool, None
    try:
        worker.stop(timeout=5.0)
        # Before: shutdown() woke the thread through a pipe that thread was closing at the same
        # moment (Python 3.11's wakeup() takes no lock): "OSError: [Errno 9] Bad file descriptor",
        # seen once as the last line of an unguarded script's output in a CI run.
        assert pool.manager_alive_at_shutdown is False
    finally:
        worker.close()
