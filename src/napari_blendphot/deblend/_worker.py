"""Main loop of the inference worker process (see :mod:`napari_blendphot.deblend.engine`).

This module runs in a process started with the ``spawn`` method, so it starts
from a fresh interpreter that never held Qt, OpenGL or napari.  It must stay
cheap to import (the parent imports it too, to name the process target):
Keras is imported only when a Keras method is first created, after the
backend has been put into this process's environment.

Messages are tuples over one duplex :class:`multiprocessing.connection.Connection`.

Parent -> worker:

- ``("chunk", chunk_index, blends, context, specs, post)``: run every method of
  *specs* (``[(name, factory, options), ...]``, in order) on *blends*; then,
  when *post* is ``(function, args, kwargs)``, ``function(outputs, *args, **kwargs)``
  with ``outputs = {name: DeblendOutput}``;
- ``("warm_up", specs)``: create the methods and run their ``warm_up()``;
- ``("call", function, args, kwargs)``: run a picklable function here
  (inspecting models without importing Keras in the caller, making test models);
- ``("stop",)``: leave the loop.

Worker -> parent:

- ``("ready", pid, backend)`` once, at start;
- ``("method_start", chunk_index, name)`` before each method;
- ``("method_done", chunk_index, name, payload, seconds)`` with the method's output
  and the wall time its ``deblend`` took in the worker (IPC excluded);
- ``("post_done", chunk_index, value)`` or ``("post_error", chunk_index, error_info)``
  after the methods, when the chunk has a *post* function;
- ``("chunk_done", chunk_index)``;
- ``("warm", {name: metadata})``;
- ``("result", value)`` of a call;
- ``("error", chunk_index, name, error_info)`` when a method raised.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import traceback

import numpy as np

#: Environment set in the worker before anything imports TensorFlow.
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2"}
#: Lines TensorFlow's C++ logging prints at import whatever TF_CPP_MIN_LOG_LEVEL
#: says (it logs before reading it); dropped from the worker's stderr.
IMPORT_NOISE = ("All log messages before absl::InitializeLog() is called", "oneDNN custom operations are on")


@contextlib.contextmanager
def _filter_import_noise():
    """Drop TensorFlow's import-time log lines from file descriptor 2 while Keras first loads.

    Everything else written meanwhile is passed on when the block ends.  Only
    used until Keras is imported, so later messages reach stderr directly.
    """
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


def pack_output(output):
    """A DeblendOutput as a tuple of arrays; 0/1 masks bit-packed (32x smaller)."""
    masks = output.masks
    packed = None
    if masks is not None:
        masks = np.asarray(masks)
        if masks.dtype == np.float32 and np.all((masks == 0) | (masks == 1)):
            packed = ("bits", masks.shape, np.packbits(masks.astype(bool), axis=None))
        else:
            packed = ("raw", masks.shape, np.ascontiguousarray(masks, dtype=np.float32))
    return (output.method, np.asarray(output.fluxes, dtype=np.float64), packed,
            {key: np.asarray(value) for key, value in (output.extra or {}).items()}, dict(output.metadata or {}))


def unpack_output(payload):
    """Inverse of :func:`pack_output`."""
    from napari_blendphot.deblend.base import DeblendOutput

    method, fluxes, packed, extra, metadata = payload
    masks = None
    if packed is not None:
        kind, shape, data = packed
        if kind == "bits":
            masks = np.unpackbits(data, count=int(np.prod(shape))).reshape(shape).astype(np.float32)
        else:
            masks = data
    return DeblendOutput(method, fluxes, masks, extra, metadata)


def describe_exception(exc: BaseException) -> dict:
    """What the parent needs to raise the same exception type with the same message."""
    state = {}
    for key, value in getattr(exc, "__dict__", {}).items():
        if isinstance(value, (str, int, float, bool, type(None))):
            state[key] = value
    return {
        "module": type(exc).__module__,
        "qualname": type(exc).__qualname__,
        "message": str(exc),
        "state": state,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


class _Methods:
    """Methods created in this process, by name, with the spec they were created from."""

    def __init__(self):
        self._created: dict[str, tuple] = {}

    def get(self, name, factory, options):
        key = (factory if isinstance(factory, str) else id(factory), repr(sorted(options.items())))
        cached = self._created.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        from napari_blendphot.deblend.registry import _resolve

        with _filter_import_noise():
            method = _resolve(factory, name)(**options)
        self._created[name] = (key, method)
        return method


def worker_main(conn, backend: str, environment: dict | None = None) -> None:
    """Serve requests on *conn* until ``("stop",)`` or the parent goes away."""
    os.environ["KERAS_BACKEND"] = backend
    for key, value in {**QUIET_ENVIRONMENT, **(environment or {})}.items():
        os.environ.setdefault(key, value)
    methods = _Methods()
    conn.send(("ready", os.getpid(), backend))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # parent closed the pipe or died
        kind = message[0]
        if kind == "stop":
            # Leave without the interpreter's shutdown: TensorFlow's exit
            # handlers take seconds and there is nothing left to save.
            conn.close()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        if kind == "warm_up":
            _warm_up(conn, methods, message[1])
        elif kind == "chunk":
            _run_chunk(conn, methods, *message[1:])
        elif kind == "call":
            _call(conn, *message[1:])


def _call(conn, function, args, kwargs) -> None:
    try:
        with _filter_import_noise():
            value = function(*args, **kwargs)
    except Exception as exc:
        conn.send(("error", -1, getattr(function, "__qualname__", repr(function)), describe_exception(exc)))
        return
    conn.send(("result", value))


def _warm_up(conn, methods: _Methods, specs) -> None:
    info = {}
    for name, factory, options in specs:
        try:
            method = methods.get(name, factory, options)
            if hasattr(method, "warm_up"):
                method.warm_up()
            info[name] = method.metadata() if hasattr(method, "metadata") and callable(method.metadata) else {}
        except Exception as exc:
            conn.send(("error", -1, name, describe_exception(exc)))
            return
    conn.send(("warm", info))


def _run_chunk(conn, methods: _Methods, chunk_index: int, blends, context, specs, post=None) -> None:
    outputs = {}
    for name, factory, options in specs:
        conn.send(("method_start", chunk_index, name))
        try:
            method = methods.get(name, factory, options)
            start = time.perf_counter()
            output = method.deblend(blends, context)
            seconds = time.perf_counter() - start
            if len(output.fluxes) != len(blends):
                raise RuntimeError(f"method {name!r} returned {len(output.fluxes)} results for {len(blends)} blends")
            output.method = name
            payload = pack_output(output)
        except Exception as exc:
            conn.send(("error", chunk_index, name, describe_exception(exc)))
            return
        conn.send(("method_done", chunk_index, name, payload, seconds))
        outputs[name] = output
    if post is not None:
        function, args, kwargs = post
        try:
            value = function(outputs, *args, **kwargs)
        except Exception as exc:
            conn.send(("post_error", chunk_index, describe_exception(exc)))
        else:
            conn.send(("post_done", chunk_index, value))
    conn.send(("chunk_done", chunk_index))
