"""Run any picklable, in-process deblender over a large batch in a process pool.

The batch is cut into chunks that worker processes deblend independently; the
parent reassembles them in order, reports progress and can cancel.  It works
with the ``fork`` and the ``spawn`` start methods (the worker entry point is a
module-level function and the method travels pickled).

Methods that parallelise themselves expose an ``n_jobs`` attribute; the copy
sent to the workers gets ``n_jobs=1`` so that workers never start pools.
Methods that need the inference worker (Keras) are refused: they have their
own process.

Inside the inference worker (which deblends a large batch chunk by chunk, 256
blends at a time) the pool is kept alive between calls (one per number of
processes and start method) and reused, so the start-up is paid once, not per
chunk.  That matters most where ``spawn`` is the only safe start method (a
process with TensorFlow, jax or Qt loaded): spawning two workers costs ~0.35 s
of CPU each, more than SEP needs for a whole 256-blend chunk.  Elsewhere (a
script, the tests) each call starts a private pool and stops it before
returning, unless ``keep_pool=True``.  Pool workers are made by
:func:`napari_blendphot.deblend.executor.process_pool`: they exit when the
process that started them ends, even if it is killed, and ignore Ctrl-C (the
caller stops them); :func:`shutdown_pools` stops kept pools at once.

Transfer cost: a chunk of 256 blends is 16 MiB in and, with masks, 32 MiB of
float32 back.  Masks that hold only 0 and 1 are bit-packed in the worker
(32x smaller, :func:`napari_blendphot.deblend.base.pack_masks`) and unpacked
in the parent, so pickling stays a few percent of the work; shared memory was
not needed (see ``benchmarks/bench_sep.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import multiprocessing
import os
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from napari_blendphot.deblend.base import (BlendContext, DeblendOutput, ProgressCallback, check_blends, pack_masks,
                                           unpack_masks)
from napari_blendphot.deblend.executor import PARENT_CHECK_SECONDS, in_isolated_worker, parent_gone, process_pool
from napari_blendphot.errors import InputError


class DeblendCancelled(RuntimeError):
    """The batch was cancelled through the cancel event."""


def _serial_copy(method):
    """The method as it should run inside a worker: without its own pool."""
    if not hasattr(method, "n_jobs"):
        return method
    if dataclasses.is_dataclass(method) and not isinstance(method, type):
        return dataclasses.replace(method, n_jobs=1)
    clone = copy.copy(method)
    clone.n_jobs = 1
    return clone


class _Assembler:
    """The output arrays of the whole batch, filled chunk by chunk as results arrive.

    Filling in place while the workers still compute keeps the parent's share of
    the work (unpacking masks, copying) off the critical path, and never holds
    the chunks and their concatenation at once.
    """

    def __init__(self, total: int):
        self.total = total
        self.method = None
        self.fluxes = None
        self.masks = None
        self.extra = None
        self.metadata = None
        self.flux_errors = None

    def add(self, start: int, result) -> None:
        name, fluxes, packed, extra, metadata, errors = result
        stop = start + len(fluxes)
        if self.fluxes is None:
            self.method, self.metadata = name, dict(metadata)
            self.fluxes = np.empty((self.total,) + fluxes.shape[1:], fluxes.dtype)
            if packed is not None:
                self.masks = np.empty((self.total,) + tuple(packed[1][1:]), np.float32)
            self.extra = {key: np.empty((self.total,) + value.shape[1:], value.dtype) for key, value in extra.items()}
            if errors is not None:
                self.flux_errors = np.empty((self.total,) + errors.shape[1:], errors.dtype)
        self.fluxes[start:stop] = fluxes
        if self.flux_errors is not None:
            self.flux_errors[start:stop] = errors
        if self.masks is not None:
            unpack_masks(packed, out=self.masks[start:stop])
        for key, value in extra.items():
            self.extra[key][start:stop] = value

    def output(self) -> DeblendOutput:
        return DeblendOutput(self.method, self.fluxes, self.masks, self.extra, self.metadata, self.flux_errors)


def _run_chunk(method, blends, context):
    """Worker entry point: deblend one chunk in this process."""
    output = method.deblend(blends, context)
    return (output.method, output.fluxes, pack_masks(output.masks), output.extra, output.metadata,
            output.flux_errors)


_QT_MODULES = ("PyQt5", "PyQt6", "PySide2", "PySide6")


_THREADED_RUNTIMES = ("tensorflow", "jax", "torch")


def default_start_method() -> str:
    """``"fork"`` where it is safe and fast, ``"spawn"`` otherwise.

    Forking is ~4x faster to start here (0.4 s against 1.6 s for two workers)
    but copies a process mid-flight: with other threads running (a napari GUI,
    Qt's threads, a thread worker) a lock held at fork time can deadlock the
    child.  So fork only from a single-threaded process without Qt, on a
    platform that has it.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    if threading.active_count() > 1 or any(name in sys.modules for name in _QT_MODULES):
        return "spawn"
    # Deep-learning runtimes run native thread pools that the threading module
    # does not see (TensorFlow in the inference worker): never fork them.
    if any(name in sys.modules for name in _THREADED_RUNTIMES):
        return "spawn"
    return "fork"


_pools_lock = threading.Lock()
#: Live pools by (processes, start method).
_pools: dict[tuple[int, str], ProcessPoolExecutor] = {}
#: Calls in progress on each kept pool (a discarded pool stops when its last call ends).
_pool_users: dict[ProcessPoolExecutor, int] = {}

#: Whether pools are kept when a call does not say (None: only inside the inference worker).
_keep_by_default: bool | None = None


def set_keep_pools(keep: bool | None) -> None:
    """Keep pools between calls by default in this process (True), never (False), or only in the worker (None).

    A benchmark that deblends chunk after chunk, as the inference worker does,
    sets True to measure what the worker does.
    """
    global _keep_by_default
    _keep_by_default = keep


#: A pool worker's test of a lost parent (see :func:`napari_blendphot.deblend.executor.parent_gone`).
_pool_parent_gone = parent_gone
__all__ = ["DeblendCancelled", "PARENT_CHECK_SECONDS", "deblend_in_processes", "default_start_method",
           "set_keep_pools", "shutdown_pools"]


def _acquire_pool(n_jobs: int, start_method: str | None) -> tuple[ProcessPoolExecutor, tuple[int, str]]:
    """A live pool of *n_jobs* workers, started on first use and then reused; release it after the call.

    Without an explicit *start_method*, any live pool of that size is reused:
    its workers were started safely when it was made, whatever threads this
    process runs now (the pool's own manager thread would otherwise rule out
    ``fork`` for every later call).
    """
    with _pools_lock:
        executor = key = None
        if start_method is None:
            for candidate_key, candidate in _pools.items():
                if candidate_key[0] == n_jobs and not getattr(candidate, "_broken", False):
                    executor, key = candidate, candidate_key
                    break
            else:
                start_method = default_start_method()
        if executor is None:
            key = (n_jobs, start_method)
            executor = _pools.get(key)
            if executor is None or getattr(executor, "_broken", False):
                executor = process_pool(n_jobs, start_method)
                _pools[key] = executor
        _pool_users[executor] = _pool_users.get(executor, 0) + 1
        return executor, key


def _release_pool(key, executor, discard: bool) -> None:
    """End a call's use of a kept pool; *discard* drops the pool from reuse (broken, or busy after a failure).

    A discarded pool stops once no other call uses it, so a failing call never
    cancels the chunks of another thread's call on the same pool.
    """
    with _pools_lock:
        users = _pool_users.get(executor, 1) - 1
        if discard and _pools.get(key) is executor:
            del _pools[key]
        stop = users <= 0 and _pools.get(key) is not executor
        if users <= 0:
            _pool_users.pop(executor, None)
        else:
            _pool_users[executor] = users
    if stop:
        executor.shutdown(wait=False, cancel_futures=True)


def shutdown_pools(wait: bool = True) -> None:
    """Stop every pool kept alive by :func:`deblend_in_processes` (they restart on demand)."""
    with _pools_lock:
        executors = list(_pools.values())
        _pools.clear()
        _pool_users.clear()
    for executor in executors:
        executor.shutdown(wait=wait, cancel_futures=True)


def _default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def deblend_in_processes(method, blends, context: BlendContext | None = None, n_jobs: int | None = None,
                         chunk_size: int = 256, progress: ProgressCallback | None = None,
                         cancel_event: threading.Event | None = None, start_method: str | None = None,
                         keep_pool: bool | None = None) -> DeblendOutput:
    """Deblend *blends* with *method* in ``n_jobs`` worker processes.

    Parameters
    ----------
    method : Deblender
        Picklable, with ``needs_worker`` false.
    blends : array (N, 128, 128)
        Validated with :func:`~napari_blendphot.deblend.base.check_blends`.
    context : BlendContext, optional
        Split alongside the blends.
    n_jobs : int, optional
        Number of processes (default: the cores this process may use).
    chunk_size : int
        Most blends per task (large enough that pickling and scheduling are
        cheap); smaller batches are cut into about four chunks per process.
    progress : callable(done, total), optional
        Called in the parent as chunks complete; an exception from it cancels
        the remaining chunks and propagates.
    cancel_event : threading.Event, optional
        Set it (from another thread) to cancel; raises :class:`DeblendCancelled`.
    start_method : str, optional
        ``"fork"``, ``"spawn"`` or ``"forkserver"``; default:
        :func:`default_start_method` (fork unless threads or Qt are about)
        for a new pool; a live pool of ``n_jobs`` workers is reused as it is.
    keep_pool : bool, optional
        Keep the worker processes for the next call; ``False`` starts a
        private pool and stops it before returning.  Default: kept inside the
        inference worker (chunk after chunk), private elsewhere.

    Returns
    -------
    DeblendOutput
        Identical to ``method.deblend(blends, context)`` run in one process,
        in the input order; the metadata is the first chunk's.
    """
    if getattr(method, "needs_worker", False):
        raise InputError(f"method {getattr(method, 'name', method)!r}",
                         "needs the inference worker and cannot run in a process pool")
    if chunk_size < 1:
        raise InputError("argument chunk_size", f"{chunk_size} is not a positive number of blends")
    blends = check_blends(blends)
    n_jobs = _default_jobs() if n_jobs is None else int(n_jobs)
    if n_jobs < 1:
        raise InputError("argument n_jobs", f"{n_jobs} is not a positive number of processes")
    total = len(blends)
    # Several chunks per process even for modest batches, so a slow chunk (many hot
    # passes) does not leave the other processes idle at the end.
    chunk_size = max(1, min(chunk_size, -(-total // (4 * n_jobs))))
    starts = list(range(0, total, chunk_size))
    worker_method = _serial_copy(method)
    if keep_pool is None:
        keep_pool = in_isolated_worker() if _keep_by_default is None else _keep_by_default
    if keep_pool:
        executor, pool_key = _acquire_pool(n_jobs, start_method)
    else:
        executor = process_pool(min(n_jobs, len(starts)), start_method or default_start_method())
        pool_key = None
    assembler = _Assembler(total)
    done = 0
    # Keep a bounded number of chunks in flight so memory does not grow with N.
    max_in_flight = 2 * n_jobs
    pending = {}
    try:
        next_chunk = 0
        while next_chunk < len(starts) or pending:
            while next_chunk < len(starts) and len(pending) < max_in_flight:
                start = starts[next_chunk]
                stop = min(start + chunk_size, total)
                chunk_context = None if context is None else context.subset(slice(start, stop))
                future = executor.submit(_run_chunk, worker_method, blends[start:stop], chunk_context)
                pending[future] = (start, stop - start)
                next_chunk += 1
            finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            if cancel_event is not None and cancel_event.is_set():
                raise DeblendCancelled(f"cancelled after {done} of {total} blends")
            for future in finished:
                start, size = pending.pop(future)
                assembler.add(start, future.result())
                done += size
                if progress is not None:
                    progress(done, total)
    except BaseException as error:
        for future in pending:
            future.cancel()
        if pool_key is None:
            executor.shutdown(wait=False, cancel_futures=True)
        else:
            # A kept pool still busy with this call's chunks (or broken) would delay or
            # fail the next call: let it finish them alone and start a fresh one then.
            broken = isinstance(error, BrokenProcessPool)
            _release_pool(pool_key, executor, discard=broken or any(not future.done() for future in pending))
        raise
    if pool_key is None:
        executor.shutdown(wait=True)
    else:
        _release_pool(pool_key, executor, discard=False)
    return assembler.output()
