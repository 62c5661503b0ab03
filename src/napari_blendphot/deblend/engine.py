"""Out-of-process inference: every deblending method runs in one long-lived worker process.

Why a separate process (SPEC §8): TensorFlow and napari crash when they share
a process on Mesa OpenGL (clashing LLVM symbols).  The worker is a spawned
process (:class:`~napari_blendphot.deblend.executor.IsolatedWorker`, a standard
``concurrent.futures`` process pool of one), so it is a fresh interpreter that
never saw Qt or GL, and Keras (with the backend chosen here) is imported only
there.  The same isolation gives cancellation and crash recovery: a worker
that segfaults or is killed costs the chunk in progress, not the caller; and
the worker dies with its caller, however the caller ends.

How a request runs: the caller cuts the blends into chunks and, per chunk,
submits one task per method (the chunk's pixels travel with the first; the
worker keeps them for the others), so a result arrives as soon as its method
is done and a worker that dies is known to have died in that method.
Progress is reported after each chunk; cancellation is checked between
chunks; the methods stay loaded in the worker between requests (created once
per set of options).  0/1 masks travel bit-packed (``DeblendOutput``'s own
pickling).

Example
-------
>>> with InferenceEngine(["sep", "blend2flux"]) as engine:          # doctest: +SKIP
...     outputs = engine.run(blends, context)
>>> outputs["blend2flux"].fluxes                                      # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import itertools
import os
import pickle
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.deblend.base import BlendContext, DeblendOutput, ProgressCallback, check_blends, pack_masks, unpack_masks
from napari_blendphot.deblend.executor import IsolatedWorker, RemoteFailure, describe_exit, rebuild_exception
from napari_blendphot.errors import BlendphotError, InputError, WorkerError

#: Blends per chunk: big enough to amortise the round trip, small enough for
#: fast cancel and bounded memory (~50 MiB per chunk).
DEFAULT_CHUNK_SIZE = 256
#: Keras backends the worker can use.
BACKENDS = ("tensorflow", "jax", "torch")
#: Environment set in the worker before anything imports TensorFlow.
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2"}


class Cancelled(BlendphotError, concurrent.futures.CancelledError):
    """A request was cancelled; the results of the chunks done so far are kept.

    Attributes
    ----------
    partial : dict[str, DeblendOutput]
        Per method, the outputs of the first ``done`` blends (may be empty).
    done, total : int
        Blends finished by every method, and blends requested.
    """

    def __init__(self, message: str, partial=None, done: int = 0, total: int = 0):
        super().__init__(message)
        self.partial = partial or {}
        self.done = done
        self.total = total


@dataclass
class ChunkResult:
    """Outputs of every method for blends ``start:stop`` of a request."""

    start: int
    stop: int
    outputs: dict


def cancel_requested(cancel) -> bool:
    """Whether *cancel* (None, a ``threading.Event`` or a callable) asks to stop."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def default_backend() -> str:
    """``$KERAS_BACKEND``, or tensorflow when it is unset or empty."""
    return os.environ.get("KERAS_BACKEND") or "tensorflow"


def check_backend(backend: str) -> str:
    """*backend* if Keras and it are installed; a one-line :class:`InputError` naming the way out otherwise."""
    if backend not in BACKENDS:
        raise InputError("Keras backend", f"{backend!r} is not a Keras backend", f"choose from {', '.join(BACKENDS)}")
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    missing = [name for name in ("keras", module) if importlib.util.find_spec(name) is None]
    if missing:
        others = [b for b in BACKENDS if b != backend and importlib.util.find_spec(b) is not None]
        hint = (f"choose an installed backend ({', '.join(others)}) with --backend or KERAS_BACKEND, " if others
                else "install one (pip install tensorflow, jax or torch), ")
        raise InputError(f"Keras backend {backend!r}", f"{' and '.join(missing)} is not installed",
                         hint + "or run only methods without a network, e.g. --methods sep")
    return backend


class EngineFuture(concurrent.futures.Future):
    """A Future whose :meth:`cancel` also stops a request that is already running.

    A running request stops after its current chunk; the future then holds a
    :class:`Cancelled` exception (a :class:`concurrent.futures.CancelledError`)
    carrying the partial results.  :meth:`cancel` returns True in both cases.
    """

    def __init__(self):
        super().__init__()
        self.cancel_event = threading.Event()

    def cancel(self) -> bool:
        self.cancel_event.set()
        if super().cancel():
            return True
        return not self.done()


class InferenceEngine:
    """Run deblending methods in a long-lived worker process.

    Parameters
    ----------
    methods : sequence of str, optional
        Registered method names run by default (``napari_blendphot.deblend.registry``;
        default: the built-in methods).
    method_options : dict, optional
        ``{name: {option: value}}`` passed to each method's factory in the
        worker, e.g. ``{"blend2flux": {"weights": "model.keras"}}``.  Methods
        that spread over several cores (SEP) get ``n_jobs=None`` (every core)
        unless set here.  A request may give its own (``run(..., method_options=)``).
    backend : {"tensorflow", "jax", "torch"}, optional
        Keras backend of the worker (default: ``$KERAS_BACKEND`` or tensorflow).
        It is set in the worker's environment only.
    chunk_size : int
        Default blends per chunk.
    environment : dict, optional
        Environment variables set in the worker before anything loads
        (e.g. ``{"TF_NUM_INTRAOP_THREADS": "1"}``); a variable already set in
        the caller's environment keeps the caller's value.

    Notes
    -----
    The worker starts on the first request (or :meth:`start`/:meth:`warm_up`)
    and keeps its methods loaded.  If it dies, the request in progress raises
    :class:`~napari_blendphot.errors.WorkerError` (with ``.partial``) and the
    next request starts a new worker.  Requests are served one at a time;
    :meth:`run` and :meth:`stream` block, :meth:`submit` runs in a background
    thread and returns an :class:`EngineFuture`.  Use as a context manager or
    call :meth:`close`.
    """

    def __init__(self, methods=None, method_options: dict | None = None, backend: str | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, environment: dict | None = None):
        from napari_blendphot.deblend.registry import default_methods, method_info

        if methods is None:
            methods = default_methods()
        if isinstance(methods, str):
            methods = [m.strip() for m in methods.split(",") if m.strip()]
        self.methods = tuple(methods)
        if not self.methods:
            raise InputError("methods", "no method given")
        for name in self.methods:
            method_info(name)
        self.method_options = {name: dict(options) for name, options in (method_options or {}).items()}
        for name in self.method_options:
            method_info(name)
        self.backend = backend or default_backend()
        if backend is not None and self.backend not in BACKENDS:
            raise InputError("backend", f"{self.backend!r} is not a Keras backend", f"choose from {', '.join(BACKENDS)}")
        self.chunk_size = self._check_chunk_size(chunk_size)
        self.environment = {str(key): str(value) for key, value in (environment or {}).items()}
        self._worker: IsolatedWorker | None = None
        self._lock = threading.RLock()
        self._executor = None
        self._closed = False
        self._aborting = False
        self._request_total = 0
        self._active_cancel: set = set()
        self._futures: weakref.WeakSet = weakref.WeakSet()
        self._chunk_ids = itertools.count(1)
        #: Workers that died under a request or while idle (a new one is started each time).
        self.restarts = 0
        #: ``{method: seconds}`` its ``deblend`` took in the worker during the last request (IPC excluded).
        self.last_compute_seconds: dict[str, float] = {}
        self._finalizer = weakref.finalize(self, _close_worker, [None])

    # ------------------------------------------------------------------ lifecycle
    @property
    def worker_pid(self) -> int | None:
        """Process id of the running worker, or None."""
        worker = self._worker
        return worker.pid if worker is not None and worker.alive else None

    @property
    def worker_process(self):
        """The worker's :class:`multiprocessing.Process` (None before the first start)."""
        return None if self._worker is None else self._worker.process

    def start(self) -> int:
        """Start the worker now if it is not running; returns its pid."""
        with self._lock:
            self._ensure_worker()
            return self._worker.pid

    def _ensure_worker(self) -> None:
        if self._closed:
            raise WorkerError("the inference engine is closed")
        if self._worker is None:
            environment = {**QUIET_ENVIRONMENT, **self.environment}
            self._worker = IsolatedWorker(environment, overrides={"KERAS_BACKEND": self.backend})
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _close_worker, [self._worker])
        elif not self._worker.alive:
            if self._worker.process is not None and not self._aborting:
                self.restarts += 1  # died while idle
            self._worker.stop()
        self._aborting = False
        self._worker.start()

    def abort(self) -> bool:
        """Stop the request in progress now, without waiting for its chunk to finish.

        The worker is killed (its models are lost; the next request starts a
        new one) and the running request raises :class:`Cancelled` with the
        chunks finished before.  Use it when a chunk takes too long for a
        cancel between chunks; otherwise prefer ``cancel``.  Returns whether
        a worker was running.
        """
        for event in list(self._active_cancel):
            event.set()
        worker = self._worker
        if worker is None or not worker.alive:
            return False
        self._aborting = True
        return worker.kill()

    def close(self) -> None:
        """Stop the worker (and the background thread of :meth:`submit`)."""
        self._closed = True
        for event in list(self._active_cancel):
            event.set()
        for future in list(self._futures):  # queued ones end cancelled, the running one after its chunk
            future.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if not self._lock.acquire(timeout=30):  # a request refuses to finish: stop the worker under it
            self._finalizer()
            return
        try:
            self._finalizer()
        finally:
            self._lock.release()

    def __enter__(self) -> "InferenceEngine":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"worker pid {self.worker_pid}" if self.worker_pid else "no worker"
        return f"InferenceEngine(methods={list(self.methods)}, backend={self.backend!r}, {state})"

    def set_method_options(self, name: str, **options) -> None:
        """Replace the default options of method *name* (e.g. other ``weights``) from the next request on.

        The worker recreates the method when its options change; other
        methods stay loaded.
        """
        from napari_blendphot.deblend.registry import method_info

        method_info(name)
        self.method_options[name] = dict(options)

    # ------------------------------------------------------------------ requests
    def warm_up(self, methods=None, method_options: dict | None = None) -> dict:
        """Start the worker, load the methods and run one tiny forward pass each.

        Returns ``{name: metadata}`` (weights path, sha256... for networks).
        """
        specs = self._specs(methods, method_options)
        with self._lock:
            self._ensure_worker()
            return self._wait(self._worker.submit(_serve_warm_up, specs), "warming up the methods", {})

    def call(self, function, *args, **kwargs):
        """Run ``function(*args, **kwargs)`` in the worker and return its result.

        *function* must be importable by name in the worker (a module-level
        function) and its arguments and result picklable.  Use it for anything
        that needs Keras without loading Keras here (reading a model's
        summary, making models for tests).  Exceptions come back as in :meth:`run`.
        """
        name = getattr(function, "__qualname__", repr(function))
        self._check_picklable((function, args, kwargs), f"function {name!r}")
        with self._lock:
            self._ensure_worker()
            return self._wait(self._worker.submit(_serve_call, function, args, kwargs), f"running {name}", {})

    def run(self, blends, context: BlendContext | None = None, methods=None, progress: ProgressCallback | None = None,
            cancel=None, chunk_size: int | None = None, method_options: dict | None = None, *,
            true_masks=None, keep_masks: bool = True, iou_threshold: float = 0.5,
            prefetch=None) -> dict[str, DeblendOutput]:
        """Deblend *blends* with every method; blocks until done.

        Parameters
        ----------
        blends : array (N, 128, 128) or one (128, 128) stamp
            Any numeric dtype and byte order (a memory map is read chunk by chunk).
        context : BlendContext, optional
            Truth for SEP's assignment, N rows.
        methods : sequence of str, optional
            Subset or other registered methods (default: the engine's).
        progress : callable(done, total), optional
            Called after each chunk with blends done by every method.
        cancel : threading.Event or callable() -> bool, optional
            Checked between chunks; when set, :class:`Cancelled` is raised.
        chunk_size : int, optional
            Blends per chunk (default: the engine's).
        method_options : dict, optional
            ``{name: {option: value}}`` for this request, over the engine's own.
        true_masks : array (N, 2, 128, 128) or True, optional
            The true masks: every output with masks then carries ``.iou``
            (computed in the worker, where the masks are).  ``True`` with
            *blends* from :meth:`BlendDataset.worker_rows
            <napari_blendphot.blend.dataset.BlendDataset.worker_rows>`: the
            worker reads them from the dataset.
        keep_masks : bool
            False: the masks stay in the worker (only fluxes, errors, IoU and
            extra columns come back: 128 KiB less per blend and mask method).
        iou_threshold : float
            Threshold of the IoU.
        prefetch : DatasetRows, optional
            The rows the next request will read: the worker reads them while
            it computes this one.

        *blends* may also be a :class:`~napari_blendphot.blend.dataset.DatasetRows`:
        the worker reads (and checks) the pixels itself from the dataset's
        memory maps instead of receiving them through the pipe.

        Returns
        -------
        dict {name: DeblendOutput}

        Raises
        ------
        Cancelled
            With ``.partial`` (the chunks done).
        WorkerError
            The worker died; ``.partial`` holds the chunks done, and the next
            request starts a new worker.
        InputError
            Bad blends or options, or a method refused its input (raised in
            the worker, re-raised here with the same type and message).
        """
        parts: dict[str, list] = {}
        done = 0
        try:
            for chunk in self.stream(blends, context, methods, progress, cancel, chunk_size, method_options,
                                     true_masks=true_masks, keep_masks=keep_masks, iou_threshold=iou_threshold,
                                     prefetch=prefetch):
                for name, output in chunk.outputs.items():
                    parts.setdefault(name, []).append(output)
                done = chunk.stop
        except BaseException as exc:
            partial = {name: DeblendOutput.concatenate(outputs) for name, outputs in parts.items()}
            for name, outputs in getattr(exc, "_method_parts", {}).items():
                partial[name] = DeblendOutput.concatenate(parts.get(name, []) + outputs)
            exc.partial = partial
            exc.done = done
            if isinstance(exc, Cancelled):
                exc.total = self._request_total
            raise
        return {name: DeblendOutput.concatenate(outputs) for name, outputs in parts.items()}

    def run_then(self, blends, context: BlendContext | None, methods, function, *args, **kwargs):
        """Deblend *blends* (one chunk), then run ``function(outputs, *args, **kwargs)`` in the worker.

        For work on the outputs that needs no Qt (the inspector's table
        numbers, say): it runs in the worker straight after the methods,
        without sending the outputs back and forth and without taking the
        caller's CPU and GIL (a GUI's, busy repainting meanwhile).

        Returns
        -------
        (dict {name: DeblendOutput}, value)

        Raises
        ------
        Exception
            What :meth:`run` raises; or what *function* raised, with the
            methods' outputs as ``.partial`` and ``.in_post = True``.
        """
        name = getattr(function, "__qualname__", repr(function))
        self._check_picklable((function, args, kwargs), f"function {name!r}")
        blends = self._check_batch_shape(blends)
        specs = self._specs(methods)
        total = len(blends)
        if context is not None:
            self._check_context(context, total)
        with self._lock:
            self._request_total = total
            self.last_compute_seconds = {}
            self._ensure_worker()
            chunk = _checked_chunk(blends, 0, total)
            try:
                chunk_id, outputs = self._run_chunk(f"blends 0-{total - 1}", chunk, context, specs)
            except BaseException as exc:
                exc.partial = {key: parts[0] for key, parts in getattr(exc, "_method_parts", {}).items()}
                raise
            try:
                value = self._wait(self._worker.submit(_serve_post, chunk_id, function, args, kwargs),
                                   f"calling {name} on the outputs", {})
            except BaseException as exc:
                exc.partial = outputs
                exc.in_post = True  # the methods themselves succeeded
                raise
        return outputs, value

    def stream(self, blends, context: BlendContext | None = None, methods=None, progress: ProgressCallback | None = None,
               cancel=None, chunk_size: int | None = None, method_options: dict | None = None, *,
               true_masks=None, keep_masks: bool = True, iou_threshold: float = 0.5,
               prefetch=None) -> Iterator[ChunkResult]:
        """Like :meth:`run`, but yield a :class:`ChunkResult` per chunk (bounded memory).

        The engine stays reserved for this request until the generator is
        exhausted or closed.
        """
        blends = self._check_batch_shape(blends)
        chunk_size = self._check_chunk_size(self.chunk_size if chunk_size is None else chunk_size)
        specs = self._specs(methods, method_options)
        total = len(blends)
        if context is not None:
            self._check_context(context, total)
        masks_source = self._check_true_masks(blends, true_masks, total)
        cancel_event = threading.Event()
        self._active_cancel.add(cancel_event)
        with self._lock:
            self._request_total = total
            self.last_compute_seconds = {}
            try:
                self._ensure_worker()
                done = 0
                n_chunks = -(-total // chunk_size)
                for chunk_index, start in enumerate(range(0, total, chunk_size)):
                    if cancel_event.is_set() or cancel_requested(cancel):
                        raise Cancelled(f"cancelled after {done} of {total} blends", done=done, total=total)
                    stop = min(start + chunk_size, total)
                    chunk = _checked_chunk(blends, start, stop)
                    chunk_context = None if context is None else context.subset(slice(start, stop))
                    where = f"blends {start}-{stop - 1} (chunk {chunk_index + 1} of {n_chunks})"
                    reduce = None
                    if masks_source is not None or not keep_masks:
                        reduce = {"keep_masks": bool(keep_masks), "iou_threshold": float(iou_threshold),
                                  "true_masks": masks_source if isinstance(masks_source, str) or masks_source is None
                                  else pack_masks(np.asarray(masks_source[start:stop], np.float32))}
                    following = (_rows_or_none(blends, stop, stop + chunk_size) if stop < total else prefetch)
                    _, outputs = self._run_chunk(where, chunk, chunk_context, specs, reduce, following)
                    done = stop
                    if progress is not None:
                        progress(done, total)
                    yield ChunkResult(start, stop, outputs)
            finally:
                self._active_cancel.discard(cancel_event)

    def submit(self, blends, context: BlendContext | None = None, methods=None, progress: ProgressCallback | None = None,
               chunk_size: int | None = None, method_options: dict | None = None) -> EngineFuture:
        """Run a request in a background thread; returns a cancellable :class:`EngineFuture`.

        ``future.result()`` is what :meth:`run` returns; ``future.cancel()``
        stops the request after its current chunk.  The progress callback is
        called from the background thread.
        """
        if self._closed:
            raise WorkerError("the inference engine is closed")
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="blendphot-engine")
        future = EngineFuture()
        self._futures.add(future)

        def job():
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = self.run(blends, context, methods, progress, future.cancel_event, chunk_size, method_options)
            except BaseException as exc:  # delivered through the future
                future.set_exception(exc)
            else:
                future.set_result(result)

        self._executor.submit(job)
        return future

    # ------------------------------------------------------------------ internals
    def _specs(self, methods, method_options: dict | None = None) -> list[tuple]:
        """``[(name, factory, options)]`` of a request, checked to travel to the worker."""
        from napari_blendphot.deblend.registry import method_info

        if methods is None:
            methods = self.methods
        elif isinstance(methods, str):
            methods = [m.strip() for m in methods.split(",") if m.strip()]
        methods = list(methods)
        if not methods:
            raise InputError("methods", "no method given")
        if len(set(methods)) != len(methods):
            raise InputError("methods", f"a method is listed twice: {methods}")
        specs = []
        for name in methods:
            info = method_info(name)
            requested = (method_options or {}).get(name)
            options = dict(self.method_options.get(name, {}) if requested is None else requested)
            if info.parallel:
                options.setdefault("n_jobs", None)
            spec = (name, info.factory, options)
            try:
                pickle.dumps(spec)
            except Exception as exc:
                raise InputError(f"method {name!r}", f"its factory or options cannot be sent to the worker process: {exc}",
                                 "register a module-level class or a 'module:attribute' string") from None
            specs.append(spec)
        if any(method_info(spec[0]).uses_keras for spec in specs):
            check_backend(self.backend)
        return specs

    @staticmethod
    def _check_picklable(payload, what: str) -> None:
        try:
            pickle.dumps(payload)
        except Exception as exc:
            raise InputError(what, f"cannot be sent to the worker process: {exc}") from None

    @staticmethod
    def _check_chunk_size(chunk_size) -> int:
        if not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise InputError("chunk_size", f"{chunk_size!r} is not a positive number of blends")
        return int(chunk_size)

    @staticmethod
    def _check_batch_shape(blends):
        """Shape checks without reading the pixels (a memory map stays on disk)."""
        if not hasattr(blends, "shape") or not hasattr(blends, "__getitem__"):
            blends = np.asarray(blends)
        shape = tuple(blends.shape)
        if len(shape) == 2:
            blends = np.asarray(blends)[None]
            shape = blends.shape
        if len(shape) != 3 or shape[1:] != (STAMP_SIZE, STAMP_SIZE):
            raise InputError("blends", f"shape {shape}, expected (N, {STAMP_SIZE}, {STAMP_SIZE}) or a single "
                             f"({STAMP_SIZE}, {STAMP_SIZE}) stamp")
        if shape[0] == 0:
            raise InputError("blends", "the batch is empty")
        return blends

    @staticmethod
    def _check_true_masks(blends, true_masks, total: int):
        """None, ``"dataset"`` (the worker reads them) or an array of (N, 2, 128, 128) true masks."""
        from napari_blendphot.blend.dataset import DatasetRows

        if true_masks is None or true_masks is False:
            return None
        if true_masks is True:
            if not isinstance(blends, DatasetRows) or not blends.has_masks:
                raise InputError("true_masks", "True needs blends given as the rows of a dataset that has masks")
            return "dataset"
        shape = tuple(np.shape(true_masks))
        if shape != (total, 2, STAMP_SIZE, STAMP_SIZE):
            raise InputError("true masks", f"shape {shape}, expected ({total}, 2, {STAMP_SIZE}, {STAMP_SIZE})")
        return true_masks

    def worker_stats(self) -> dict:
        """``{method: {...}}`` what the worker's loaded methods count: compilations, batch size, device, shared U-Net chunks."""
        with self._lock:
            self._ensure_worker()
            return self._wait(self._worker.submit(_serve_stats), "reading the worker's counters", {})

    @staticmethod
    def _check_context(context: BlendContext, total: int) -> None:
        for field_name in ("companion_shift", "central_radius"):
            values = getattr(context, field_name)
            if values is not None and len(np.asarray(values)) != total:
                raise InputError(f"context.{field_name}", f"{len(np.asarray(values))} rows for {total} blends")

    def _run_chunk(self, where: str, chunk, chunk_context, specs, reduce=None, prefetch=None) -> tuple[int, dict]:
        """Every method's output on one chunk: one task per method, the pixels (or rows to read) sent with the first."""
        from napari_blendphot.deblend.registry import execution_order

        chunk_id = next(self._chunk_ids)
        outputs: dict[str, DeblendOutput] = {}
        by_name = {spec[0]: spec for spec in specs}
        # A method that reuses another's masks runs after it; the outputs keep the order asked for.
        for index, (name, factory, options) in enumerate(by_name[name] for name in execution_order(by_name)):
            first = index == 0
            future = self._worker.submit(_serve_method, chunk_id, chunk if first else None,
                                         chunk_context if first else None, name, factory, options,
                                         reduce if first else None, prefetch if first else None)
            parts = {key: [value] for key, value in outputs.items()}
            try:
                output, seconds = self._wait(future, f"running method {name!r} on {where}", parts, method=name,
                                             error_doing=f"method {name!r} on {where}")
            except Exception as exc:
                if isinstance(exc, BlendphotError):
                    raise
                # A method's own failure (a third-party method's ValueError, say): one line for the
                # user, the worker's traceback kept on the error for whoever debugs the method.
                error = WorkerError(f"method {name!r} failed on {where}: {type(exc).__name__}: {exc}")
                error.method, error._method_parts = name, parts
                error.worker_traceback = getattr(exc, "worker_traceback", "")
                raise error from exc
            outputs[name] = output
            self.last_compute_seconds[name] = self.last_compute_seconds.get(name, 0.0) + seconds
        return chunk_id, {name: outputs[name] for name in by_name}

    def _wait(self, future, doing: str, method_parts: dict, method: str | None = None, error_doing: str | None = None):
        """The result of a task in the worker, with its failures turned into our errors.

        A worker exception comes back with its own type and message; a dead
        worker gives :class:`WorkerError` (or :class:`Cancelled` after
        :meth:`abort`); an interrupted wait (Ctrl-C) retires the worker, whose
        late answer must not reach the next request.
        """
        try:
            return future.result()
        except RemoteFailure as failure:
            exc = rebuild_exception(failure.description, error_doing or doing)
            exc._method_parts = method_parts
            raise exc from None
        except BrokenProcessPool:
            self._worker_died(doing, method_parts, method)
        except BaseException:
            self._worker.stop(timeout=1.0)
            raise

    def _worker_died(self, doing: str, method_parts: dict, method: str | None):
        worker = self._worker
        pid = worker.pid
        exitcode = worker.exitcode()
        worker.stop()
        if self._aborting:
            self._aborting = False
            error = Cancelled(f"aborted while {doing}; the worker (pid {pid}) was stopped")
            error._method_parts = method_parts
            raise error
        self.restarts += 1
        error = WorkerError(f"the inference worker (pid {pid}) {describe_exit(exitcode)} while {doing}; "
                            "the next request starts a new worker")
        error.exitcode = exitcode
        error.method = method
        error._method_parts = method_parts
        raise error


def _checked_chunk(blends, start: int, stop: int):
    """Rows ``start:stop`` of *blends*, checked here, or left as rows of a dataset for the worker to read and check."""
    from napari_blendphot.blend.dataset import DatasetRows

    if isinstance(blends, DatasetRows):
        return blends[start:stop]
    return check_blends(blends[start:stop], source=f"blends[{start}:{stop}]")


def _rows_or_none(blends, start: int, stop: int):
    from napari_blendphot.blend.dataset import DatasetRows

    return blends[start:stop] if isinstance(blends, DatasetRows) else None


def _close_worker(holder) -> None:
    worker = holder[0]
    if worker is not None:
        worker.close()


# ============================================================================== in the worker
# What follows runs inside the worker process (the tasks the engine submits).

#: Lines TensorFlow's C++ logging prints at import whatever TF_CPP_MIN_LOG_LEVEL
#: says (it logs before reading it); dropped from the worker's stderr.
IMPORT_NOISE = ("All log messages before absl::InitializeLog() is called", "oneDNN custom operations are on")

_created: dict[str, tuple] = {}
_chunk: dict = {}


@contextlib.contextmanager
def _filter_import_noise():
    """Drop TensorFlow's import-time log lines from file descriptor 2 while Keras first loads."""
    if "keras" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not any(n in line for n in IMPORT_NOISE)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _method(name: str, factory, options: dict):
    """The method *name* made with *options*, created once and kept while its options stay the same."""
    key = (factory if isinstance(factory, str) else id(factory), repr(sorted(options.items())))
    cached = _created.get(name)
    if cached is not None and cached[0] == key:
        return cached[1]
    from napari_blendphot.deblend.registry import _resolve

    try:
        with _filter_import_noise():
            method = _resolve(factory, name)(**options)
    except ImportError as exc:  # a Keras backend (or a method's own dependency) that is not installed
        backend = os.environ.get("KERAS_BACKEND", "")
        raise InputError(f"method {name!r}", f"cannot be loaded: {exc}",
                         f"the Keras backend here is {backend!r}: choose an installed one with --backend "
                         "(jax, torch, tensorflow), or run only methods without a network, e.g. --methods sep"
                         ) from None
    _created[name] = (key, method)
    return method


_prefetched: dict = {}


def _read_rows(rows):
    """Blends of a :class:`~napari_blendphot.blend.dataset.DatasetRows`, checked (prefetched if they were asked next)."""
    future = _prefetched.pop("future", None)
    pending = _prefetched.pop("rows", None)
    if future is not None and _same_rows(pending, rows):
        return future.result()
    return _read_and_check(rows)


def _read_and_check(rows):
    return check_blends(rows.read("blends"), source=f"{rows.folder}: blends {rows.rows[0]}-{rows.rows[-1]}")


def _start_prefetch(rows) -> None:
    """Read the next chunk's rows in a thread while this chunk computes (numpy's copies release the GIL)."""
    import concurrent.futures as futures

    pool = _prefetched.get("pool") or futures.ThreadPoolExecutor(1, thread_name_prefix="blendphot-prefetch")
    _prefetched.update(pool=pool, rows=rows, future=pool.submit(_read_and_check, rows))


def _same_rows(a, b) -> bool:
    return (a is not None and b is not None and a.folder == b.folder and len(a.rows) == len(b.rows)
            and bool(np.array_equal(a.rows, b.rows)))


def _serve_method(chunk_id: int, blends, context, name: str, factory, options: dict, reduce=None, prefetch=None):
    """Run one method on the current chunk (sent with the chunk's first method); ``(output, seconds)``.

    The chunk's first task carries its pixels, or the rows of a dataset the
    worker reads itself (:class:`~napari_blendphot.blend.dataset.DatasetRows`,
    with *prefetch*: the next chunk's rows, read in a thread meanwhile), and
    *reduce*: the true masks to compute the IoU with, and whether the masks
    go back at all.
    """
    from napari_blendphot.blend.dataset import DatasetRows

    if blends is not None:
        rows = blends if isinstance(blends, DatasetRows) else None
        if rows is not None:
            blends = _read_rows(rows)
        if prefetch is not None:
            _start_prefetch(prefetch)
        _chunk.clear()
        _chunk.update(id=chunk_id, blends=blends, context=context, outputs={}, rows=rows, reduce=reduce)
    elif _chunk.get("id") != chunk_id:
        raise WorkerError(f"chunk {chunk_id} is not the one this worker holds")
    method = _method(name, factory, options)
    start = time.perf_counter()
    output = method.deblend(_chunk["blends"], _chunk["context"])
    if len(output.fluxes) != len(_chunk["blends"]):
        raise RuntimeError(f"method {name!r} returned {len(output.fluxes)} results for {len(_chunk['blends'])} blends")
    output.method = name
    _chunk["outputs"][name] = output
    reduce = _chunk.get("reduce")
    if reduce is not None and output.masks is not None:
        output = _reduced(output, reduce)
    seconds = time.perf_counter() - start
    return output, seconds


def _true_masks():
    """The current chunk's true masks (read from the dataset, or sent packed), read once per chunk."""
    if "true_masks" not in _chunk:
        source = _chunk["reduce"].get("true_masks")
        if source is None:
            _chunk["true_masks"] = None
        elif isinstance(source, str):
            _chunk["true_masks"] = _chunk["rows"].read("masks")
        else:
            _chunk["true_masks"] = unpack_masks(source)
    return _chunk["true_masks"]


def _reduced(output: DeblendOutput, reduce: dict) -> DeblendOutput:
    """*output* with its IoU against the true masks, without its masks unless they are to go back."""
    import copy

    from napari_blendphot.metrics.masks import iou

    true_masks = _true_masks()
    reduced = copy.copy(output)
    if true_masks is not None:
        reduced.iou = iou(output.masks, true_masks, reduce["iou_threshold"], source=f"{output.method} masks")
    if not reduce["keep_masks"]:
        reduced.masks = None
    return reduced


def _serve_stats() -> dict:
    stats = {}
    for name, (_, method) in _created.items():
        stats[name] = {key: getattr(method, key) for key in ("compilations", "batch_size", "device", "precision",
                                                             "pad_batches", "reused_passes")
                       if hasattr(method, key)}
    return stats


def _serve_post(chunk_id: int, function, args, kwargs):
    """``function(outputs of the current chunk, *args, **kwargs)``."""
    if _chunk.get("id") != chunk_id:
        raise WorkerError(f"chunk {chunk_id} is not the one this worker holds")
    return function(dict(_chunk["outputs"]), *args, **kwargs)


def _serve_warm_up(specs) -> dict:
    info = {}
    for name, factory, options in specs:
        method = _method(name, factory, options)
        if hasattr(method, "warm_up"):
            method.warm_up()
        info[name] = method.metadata() if callable(getattr(method, "metadata", None)) else {}
    return info


def _serve_call(function, args, kwargs):
    with _filter_import_noise():
        return function(*args, **kwargs)
