"""Out-of-process inference: every deblending method runs in one long-lived worker.

Why a separate process (SPEC §8): TensorFlow and napari crash when they share
a process on Mesa OpenGL (clashing LLVM symbols).  The worker is started with
the ``spawn`` method, so it is a fresh interpreter that never saw Qt or GL, and
Keras (with the backend chosen here) is imported only there.  The same
isolation gives cancellation and crash recovery: a worker that segfaults or is
killed costs the chunk in progress, not the caller.

How a request runs: the parent cuts the blends into chunks, sends one chunk at
a time through a pipe, and the worker runs every requested method on it and
sends each method's output back as soon as it is done.  Progress is reported
after each chunk; cancellation is checked between chunks; models stay loaded
between requests.  Arrays travel pickled: a chunk of 256 blends is 16 MiB in
and, per mask-making method, 32 MiB back (0/1 masks travel bit-packed), a few
percent of the time a network takes on them (see ``docs/engine.md``).

Example
-------
>>> with InferenceEngine(["sep", "blend2flux"]) as engine:          # doctest: +SKIP
...     outputs = engine.run(blends, context)
>>> outputs["blend2flux"].fluxes                                      # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures
import importlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.deblend.base import BlendContext, DeblendOutput, ProgressCallback, check_blends
from napari_blendphot.errors import BlendphotError, InputError, WorkerError

#: Blends per message to the worker: big enough to amortise the round trip,
#: small enough for fast cancel and bounded memory (~50 MiB per chunk).
DEFAULT_CHUNK_SIZE = 256
#: Keras backends the worker can use.
BACKENDS = ("tensorflow", "jax", "torch")
#: Seconds to wait for a new worker to say it is ready.
START_TIMEOUT = 120.0
#: How often (s) a waiting caller checks for cancellation and worker death.
_POLL_INTERVAL = 0.05


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


CancelCheck = Callable[[], bool]


def _cancel_requested(cancel) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def _default_backend() -> str:
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def _rebuild_exception(info: dict, prefix: str) -> BaseException:
    """The worker's exception as the same type and message, for package and builtin types.

    Other types (TensorFlow's, say) are not imported here: importing them
    would load TensorFlow in this process.  They become WorkerError.
    """
    module, qualname, message = info["module"], info["qualname"], info["message"]
    exc = None
    if module == "builtins" or module.split(".")[0] == "napari_blendphot":
        try:
            cls = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
            if isinstance(cls, type) and issubclass(cls, Exception):
                exc = cls.__new__(cls)
                exc.args = (message,)
                exc.__dict__.update(info["state"])
        except Exception:
            exc = None
    if exc is None:
        exc = WorkerError(f"{prefix}: {qualname}: {message}")
    if hasattr(exc, "add_note"):
        exc.add_note(f"raised in the inference worker ({prefix}):\n{info['traceback']}")
    exc.worker_traceback = info["traceback"]
    return exc


def _describe_exit(exitcode) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            return f"was killed by signal {signal.Signals(-exitcode).name} (exit code {exitcode})"
        except ValueError:
            return f"was killed by signal {-exitcode} (exit code {exitcode})"
    hint = " (134: abort, 137: killed, e.g. out of memory, 139: segmentation fault)" if exitcode in (134, 137, 139) else ""
    return f"exited with code {exitcode}{hint}"


def _shutdown_worker(process, conn) -> None:
    """Stop a worker: politely, then by force (also used as a finalizer)."""
    if process is None:
        return
    try:
        if process.is_alive():
            try:
                conn.send(("stop",))
            except (OSError, ValueError):
                pass
            process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
    finally:
        try:
            conn.close()
        except OSError:
            pass


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
    methods : sequence of str
        Registered method names run by default (``napari_blendphot.deblend.registry``).
    method_options : dict, optional
        ``{name: {option: value}}`` passed to each method's factory in the
        worker, e.g. ``{"blend2flux": {"weights": "model.keras"}}``.  SEP gets
        ``n_jobs=None`` (all cores for big chunks) unless set here.
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
    and keeps its models loaded.  If it dies, the request in progress raises
    :class:`~napari_blendphot.errors.WorkerError` (with ``.partial``) and the
    next request starts a new worker.  Requests are served one at a time;
    :meth:`run` and :meth:`stream` block, :meth:`submit` runs in a background
    thread and returns an :class:`EngineFuture`.  Use as a context manager or
    call :meth:`close`.
    """

    def __init__(self, methods=("sep", "blend2flux", "unet", "blend2mask2flux"), method_options: dict | None = None,
                 backend: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE, environment: dict | None = None):
        from napari_blendphot.deblend.registry import method_info

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
        self.backend = backend or _default_backend()
        if self.backend not in BACKENDS:
            raise InputError("backend", f"{self.backend!r} is not a Keras backend", f"choose from {', '.join(BACKENDS)}")
        self.chunk_size = self._check_chunk_size(chunk_size)
        self.environment = {str(key): str(value) for key, value in (environment or {}).items()}
        self._process = None
        self._conn = None
        self._finalizer = None
        self._lock = threading.RLock()
        self._executor = None
        self._closed = False
        self._aborting = False
        self._request_total = 0
        self._active_cancel: set = set()
        self._futures: weakref.WeakSet = weakref.WeakSet()
        self.restarts = 0
        self._post_answer = None
        #: ``{method: seconds}`` its ``deblend`` took in the worker during the last request (IPC excluded).
        self.last_compute_seconds: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle
    @property
    def worker_pid(self) -> int | None:
        """Process id of the running worker, or None."""
        return self._process.pid if self._process is not None and self._process.is_alive() else None

    def start(self) -> int:
        """Start the worker now if it is not running; returns its pid."""
        with self._lock:
            self._ensure_worker()
            return self._process.pid

    def _ensure_worker(self) -> None:
        if self._closed:
            raise WorkerError("the inference engine is closed")
        if self._process is not None and self._process.is_alive():
            return
        if self._process is not None:  # died while idle (or aborted): forget it, start afresh
            self._discard_worker()
            if not self._aborting:
                self.restarts += 1
        self._aborting = False
        from napari_blendphot.deblend._worker import worker_main

        context = multiprocessing.get_context("spawn")
        parent_conn, child_conn = context.Pipe(duplex=True)
        # Not a daemon: SEP may start its own process pool inside the worker.
        process = context.Process(target=worker_main, args=(child_conn, self.backend, self.environment),
                                  name="blendphot-inference", daemon=False)
        process.start()
        child_conn.close()
        self._process, self._conn = process, parent_conn
        self._finalizer = weakref.finalize(self, _shutdown_worker, process, parent_conn)
        message = self._receive("starting the worker", timeout=START_TIMEOUT)
        if message[0] != "ready":
            raise WorkerError(f"the inference worker sent {message[0]!r} instead of 'ready'")

    def _discard_worker(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # runs _shutdown_worker once
        self._process = self._conn = self._finalizer = None

    def abort(self) -> bool:
        """Stop the request in progress now, without waiting for its chunk to finish.

        The worker is killed (its models are lost; the next request starts a
        new one) and the running request raises :class:`Cancelled` with the
        chunks finished before.  Use it when a chunk takes too long for a
        cancel between chunks; otherwise prefer ``cancel``.  Returns whether
        a worker was running.
        """
        process = self._process
        for event in list(self._active_cancel):
            event.set()
        if process is None or not process.is_alive():
            return False
        self._aborting = True
        process.kill()
        return True

    def close(self) -> None:
        """Stop the worker (and the background thread of :meth:`submit`)."""
        self._closed = True
        for event in list(self._active_cancel):
            event.set()
        for future in list(self._futures):  # queued ones end cancelled, the running one after its chunk
            future.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._lock.acquire(timeout=30):
            try:
                self._discard_worker()
            finally:
                self._lock.release()
        else:  # a request refuses to finish: stop the worker under it
            self._discard_worker()

    def __enter__(self) -> "InferenceEngine":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"worker pid {self.worker_pid}" if self.worker_pid else "no worker"
        return f"InferenceEngine(methods={list(self.methods)}, backend={self.backend!r}, {state})"

    def set_method_options(self, name: str, **options) -> None:
        """Replace the options of method *name* (e.g. other ``weights``) from the next request on.

        The worker recreates the method when its options change; other
        methods stay loaded.
        """
        from napari_blendphot.deblend.registry import method_info

        method_info(name)
        self.method_options[name] = dict(options)

    # ------------------------------------------------------------------ requests
    def warm_up(self, methods=None) -> dict:
        """Start the worker, load the methods and run one tiny forward pass each.

        Returns ``{name: metadata}`` (weights path, sha256... for networks).
        """
        specs = self._specs(methods)
        with self._lock:
            self._ensure_worker()
            self._send(("warm_up", specs), "warming up")
            message = self._await("warming up the methods", "warm")
            if message[0] == "error":
                raise _rebuild_exception(message[3], f"loading method {message[2]!r}")
            return message[1]

    def call(self, function, *args, **kwargs):
        """Run ``function(*args, **kwargs)`` in the worker and return its result.

        *function* must be importable by name in the worker (a module-level
        function) and its arguments and result picklable.  Use it for anything
        that needs Keras without loading Keras here (reading a model's
        summary, making models for tests).  Exceptions come back as in :meth:`run`.
        """
        name = getattr(function, "__qualname__", repr(function))
        try:
            pickle.dumps((function, args, kwargs))
        except Exception as exc:
            raise InputError(f"function {name!r}", f"cannot be sent to the worker process: {exc}") from None
        with self._lock:
            self._ensure_worker()
            self._send(("call", function, args, kwargs), f"calling {name}")
            message = self._await(f"running {name}", "result")
            if message[0] == "error":
                raise _rebuild_exception(message[3], f"calling {name}")
            return message[1]

    def run(self, blends, context: BlendContext | None = None, methods=None, progress: ProgressCallback | None = None,
            cancel=None, chunk_size: int | None = None) -> dict[str, DeblendOutput]:
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
            for chunk in self.stream(blends, context, methods, progress, cancel, chunk_size):
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
        without a second round trip and without taking the caller's CPU
        and GIL (a GUI's, busy repainting meanwhile).

        Parameters
        ----------
        blends, context, methods
            As in :meth:`run`; the blends travel as one chunk, whatever their number.
        function
            Module-level function (picklable by name); its arguments and
            result must be picklable.

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
        post = (function, args, kwargs)
        try:
            pickle.dumps(post)
        except Exception as exc:
            raise InputError(f"function {name!r}", f"cannot be sent to the worker process: {exc}") from None
        blends = self._check_batch_shape(blends)
        specs = self._specs(methods)
        total = len(blends)
        if context is not None:
            self._check_context(context, total)
        with self._lock:
            self._request_total = total
            self.last_compute_seconds = {}
            self._post_answer = None
            self._ensure_worker()
            chunk = check_blends(blends[:], source=f"blends[0:{total}]")
            try:
                outputs = self._run_chunk(0, f"blends 0-{total - 1}", chunk, context, specs, post)
            except BaseException as exc:
                exc.partial = {key: parts[0] for key, parts in getattr(exc, "_method_parts", {}).items()}
                raise
            finally:
                answer, self._post_answer = self._post_answer, None
        outputs = {spec[0]: outputs[spec[0]] for spec in specs}
        if answer is None or answer[0] != "post_done":
            exc = (_rebuild_exception(answer[2], f"calling {name} on the outputs") if answer is not None
                   else WorkerError(f"the inference worker did not answer {name}"))
            exc.partial = outputs
            exc.in_post = True  # the methods themselves succeeded
            raise exc
        return outputs, answer[2]

    def stream(self, blends, context: BlendContext | None = None, methods=None, progress: ProgressCallback | None = None,
               cancel=None, chunk_size: int | None = None) -> Iterator[ChunkResult]:
        """Like :meth:`run`, but yield a :class:`ChunkResult` per chunk (bounded memory).

        The engine stays reserved for this request until the generator is
        exhausted or closed.
        """
        blends = self._check_batch_shape(blends)
        chunk_size = self._check_chunk_size(self.chunk_size if chunk_size is None else chunk_size)
        specs = self._specs(methods)
        names = [name for name, _, _ in specs]
        total = len(blends)
        if context is not None:
            self._check_context(context, total)
        cancel_event = threading.Event()
        self._active_cancel.add(cancel_event)

        def cancelled() -> bool:
            return cancel_event.is_set() or _cancel_requested(cancel)

        with self._lock:
            self._request_total = total
            self.last_compute_seconds = {}
            try:
                self._ensure_worker()
                done = 0
                n_chunks = -(-total // chunk_size)
                for chunk_index, start in enumerate(range(0, total, chunk_size)):
                    if cancelled():
                        raise Cancelled(f"cancelled after {done} of {total} blends", done=done, total=total)
                    stop = min(start + chunk_size, total)
                    chunk = check_blends(blends[start:stop], source=f"blends[{start}:{stop}]")
                    chunk_context = None if context is None else context.subset(slice(start, stop))
                    where = f"blends {start}-{stop - 1} (chunk {chunk_index + 1} of {n_chunks})"
                    outputs = self._run_chunk(chunk_index, where, chunk, chunk_context, specs)
                    done = stop
                    result = ChunkResult(start, stop, {name: outputs[name] for name in names})
                    if progress is not None:
                        progress(done, total)
                    yield result
            finally:
                self._active_cancel.discard(cancel_event)

    def submit(self, blends, context: BlendContext | None = None, methods=None, progress: ProgressCallback | None = None,
               chunk_size: int | None = None) -> EngineFuture:
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
                result = self.run(blends, context, methods, progress, future.cancel_event, chunk_size)
            except BaseException as exc:  # delivered through the future
                future.set_exception(exc)
            else:
                future.set_result(result)

        self._executor.submit(job)
        return future

    # ------------------------------------------------------------------ internals
    def _specs(self, methods) -> list[tuple]:
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
            options = dict(self.method_options.get(name, {}))
            if name == "sep" and info.origin == "builtin":
                options.setdefault("n_jobs", None)
            spec = (name, info.factory, options)
            try:
                pickle.dumps(spec)
            except Exception as exc:
                raise InputError(f"method {name!r}", f"its factory or options cannot be sent to the worker process: {exc}",
                                 "register a module-level class or a 'module:attribute' string") from None
            specs.append(spec)
        return specs

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
    def _check_context(context: BlendContext, total: int) -> None:
        for field_name in ("companion_shift", "central_radius"):
            values = getattr(context, field_name)
            if values is not None and len(np.asarray(values)) != total:
                raise InputError(f"context.{field_name}", f"{len(np.asarray(values))} rows for {total} blends")

    def _send(self, message, doing: str) -> None:
        try:
            self._conn.send(message)
        except (OSError, ValueError) as exc:  # broken pipe: the worker is gone
            self._worker_died(doing, {}, cause=exc)

    def _receive(self, doing: str, timeout: float | None = None):
        """Next message from the worker; raises WorkerError if it dies meanwhile."""
        conn, process = self._conn, self._process
        waited = 0.0
        while True:
            ready = multiprocessing.connection.wait([conn, process.sentinel], timeout=_POLL_INTERVAL)
            if conn in ready:
                try:
                    return conn.recv()
                except (EOFError, OSError) as exc:
                    self._worker_died(doing, {}, cause=exc)
            if process.sentinel in ready:
                if conn.poll():  # it sent something just before exiting
                    continue
                self._worker_died(doing, {})
            waited += _POLL_INTERVAL
            if timeout is not None and waited > timeout:
                self._discard_worker()
                raise WorkerError(f"the inference worker did not answer within {timeout:.0f} s while {doing}")

    def _await(self, doing: str, final: str):
        """Receive until a *final* or ``error`` message; an interrupted wait retires the worker."""
        try:
            while True:
                message = self._receive(doing)
                if message[0] in (final, "error"):
                    return message
        except WorkerError:
            raise
        except BaseException:
            # Interrupted (Ctrl-C) while the worker is busy: its answer would
            # reach the next request, so this worker is not reused.
            self._discard_worker()
            raise

    def _worker_died(self, doing: str, method_parts: dict, cause=None):
        process = self._process
        process.join(timeout=5)
        exitcode = process.exitcode
        pid = process.pid
        self._discard_worker()
        if self._aborting:
            self._aborting = False
            error = Cancelled(f"aborted while {doing}; the worker (pid {pid}) was stopped")
            error._method_parts = method_parts
            raise error
        self.restarts += 1
        error = WorkerError(f"the inference worker (pid {pid}) {_describe_exit(exitcode)} while {doing}; "
                            "results of the finished chunks are kept, the next request starts a new worker")
        error.exitcode = exitcode
        error._method_parts = method_parts
        raise error from cause

    def _run_chunk(self, chunk_index, where, chunk, chunk_context, specs, post=None) -> dict:
        """Send one chunk, collect every method's output (and *post*'s answer in ``self._post_answer``)."""
        from napari_blendphot.deblend._worker import unpack_output

        self._send(("chunk", chunk_index, chunk, chunk_context, specs, post), f"receiving {where}")
        outputs: dict[str, DeblendOutput] = {}
        current = None
        while True:
            doing = f"running method {current!r} on {where}" if current else f"starting on {where}"
            try:
                message = self._receive(doing)
            except WorkerError as exc:
                exc.method = current
                exc._method_parts = {name: [output] for name, output in outputs.items()}
                raise
            except BaseException:
                # Interrupted (Ctrl-C) mid-chunk: the worker's answers would
                # reach the next request, so this worker is not reused.
                self._discard_worker()
                raise
            kind = message[0]
            if kind == "method_start":
                current = message[2]
            elif kind == "method_done":
                outputs[message[2]] = unpack_output(message[3])
                seconds = self.last_compute_seconds
                seconds[message[2]] = seconds.get(message[2], 0.0) + message[4]
            elif kind in ("post_done", "post_error"):
                self._post_answer = message
            elif kind == "chunk_done":
                return outputs
            elif kind == "error":
                exc = _rebuild_exception(message[3], f"method {message[2]!r} on {where}")
                exc._method_parts = {name: [output] for name, output in outputs.items()}
                raise exc
