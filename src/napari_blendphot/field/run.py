"""The one place where field mode runs deblending methods.

Everything field mode measures with a deblending method (the CLI's
``blendphot measure``, :func:`napari_blendphot.field.measure.measure_field`,
the Field widget's model) goes through :class:`MethodRunner.run`: a batch of
128x128 training-domain stamps and their :class:`~napari_blendphot.deblend.base.BlendContext`
in, ``{method: DeblendOutput}`` out.  When the project's single
``napari_blendphot.predict(...)`` entry point lands, only :meth:`MethodRunner.run`
(and the engine set-up in :meth:`MethodRunner._engine_for`) change.

Today it runs on :class:`~napari_blendphot.deblend.engine.InferenceEngine`:
methods that need the worker process (Keras networks) run there, in one
long-lived worker started on first use; methods that do not (SEP) run in this
process at the same time when ``in_process=True`` (the CLI: two cores busy
instead of one), or in the worker too when ``in_process=False`` (the napari
process, which must stay free of heavy work).
"""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np

from napari_blendphot.errors import InputError

#: Poll interval (s) while waiting for the worker, to notice a cancel.
_POLL = 0.05


def _cancel_requested(cancel) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


class MethodRunner:
    """Run deblending methods on training-domain stamps (module docstring).

    Parameters
    ----------
    methods : sequence of str
        Registered method names (``napari_blendphot.deblend.registry``).
    method_options : dict, optional
        ``{name: {option: value}}`` given to each method's factory (``weights``, ``precision``...).
    in_process : bool
        Run methods that need no worker (SEP) in this process, concurrently with the worker.
    backend : str, optional
        Keras backend of the worker.
    chunk_size : int
        Stamps per message to the worker.
    """

    def __init__(self, methods, method_options: dict | None = None, in_process: bool = True,
                 backend: str | None = None, chunk_size: int = 256):
        from napari_blendphot.deblend.registry import method_info

        if isinstance(methods, str):
            methods = [m.strip() for m in methods.split(",") if m.strip()]
        self.methods = tuple(methods)
        if not self.methods:
            raise InputError("methods", "no method given")
        if len(set(self.methods)) != len(self.methods):
            raise InputError("methods", f"a method is listed twice: {', '.join(self.methods)}")
        infos = {name: method_info(name) for name in self.methods}
        self.method_options = {name: dict(options) for name, options in (method_options or {}).items()}
        self.local_methods = tuple(n for n in self.methods if in_process and not infos[n].needs_worker)
        self.worker_methods = tuple(n for n in self.methods if n not in self.local_methods)
        self.backend = backend
        self.chunk_size = int(chunk_size)
        self._engine = None
        self._warming = None
        self._local = {}
        self._lock = threading.Lock()
        #: ``{method: metadata}`` of the last outputs (weights digest, precision...).
        self.metadata: dict = {}

    # ------------------------------------------------------------------ lifecycle
    def _engine_for(self):
        if self._engine is None:
            from napari_blendphot.deblend.engine import InferenceEngine

            options = {name: self.method_options[name] for name in self.worker_methods if name in self.method_options}
            self._engine = InferenceEngine(self.worker_methods, method_options=options, backend=self.backend,
                                           chunk_size=self.chunk_size)
        return self._engine

    def warm_up_in_background(self) -> None:
        """Start the worker and load the networks now, in a background thread (no-op without a network).

        Field mode calls it before detecting, so that the worker's start
        (TensorFlow's import: 10-30 s on a busy machine) overlaps the detection
        instead of following it.  A failure here is not reported: the first
        :meth:`run` raises it again with its own message.
        """
        if not self.worker_methods or self._warming is not None:
            return
        engine = self._engine_for()

        def warm():
            try:
                engine.warm_up(list(self.worker_methods))
            except Exception:  # reported by the first run
                pass

        self._warming = threading.Thread(target=warm, name="blendphot-field-warm-up", daemon=True)
        self._warming.start()

    def _local_method(self, name):
        if name not in self._local:
            from napari_blendphot.deblend.registry import create_method, method_info

            options = dict(self.method_options.get(name, {}))
            if name == "sep" and method_info(name).origin == "builtin":
                options.setdefault("n_jobs", 1)  # the other core runs the worker
            self._local[name] = create_method(name, **options)
        return self._local[name]

    def close(self) -> None:
        if self._warming is not None:
            self._warming.join()
            self._warming = None
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> "MethodRunner":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def backend_used(self) -> str | None:
        """The worker's Keras backend when a worker method ran, else None."""
        return self._engine.backend if self._engine is not None else None

    # ------------------------------------------------------------------ running
    def run(self, stamps: np.ndarray, context=None, progress=None, cancel=None, methods=None) -> dict:
        """Every method (or those of *methods*) on *stamps* (N, 128, 128) with *context*; ``{method: DeblendOutput}``.

        *progress(done, total)* is called with the stamps finished by every
        method; *cancel* (an Event or a callable) stops the request between
        chunks with :class:`napari_blendphot.deblend.engine.Cancelled`.
        """
        from napari_blendphot.deblend.engine import Cancelled

        stamps = np.asarray(stamps, np.float32)
        total = len(stamps)
        chosen = self.methods if methods is None else tuple(m for m in self.methods if m in set(methods))
        if total == 0 or not chosen:
            return {}
        local_methods = [m for m in self.local_methods if m in chosen]
        worker_methods = [m for m in self.worker_methods if m in chosen]
        done = {name: 0 for name in chosen}
        report_lock = threading.Lock()

        def report(name):
            def callback(finished, _total):
                with report_lock:
                    done[name] = finished
                    least = min(done.values())
                if progress is not None:
                    progress(least, total)
            return callback

        outputs = {}
        with self._lock:
            future = None
            if worker_methods:
                engine = self._engine_for()
                future = engine.submit(stamps, context, worker_methods,
                                       progress=self._worker_progress(report, total, worker_methods))
            try:
                for name in local_methods:
                    if _cancel_requested(cancel):
                        raise Cancelled(f"cancelled before method {name!r}", done=0, total=total)
                    method = self._local_method(name)

                    def local_progress(finished, _total, _name=name):
                        if _cancel_requested(cancel):
                            raise Cancelled(f"cancelled during method {_name!r}", done=finished, total=total)
                        report(_name)(finished, total)

                    outputs[name] = method.deblend(stamps, context, progress=local_progress)
                    report(name)(total, total)
                if future is not None:
                    while True:
                        try:
                            worker_outputs = future.result(timeout=_POLL)
                            break
                        except concurrent.futures.TimeoutError:
                            if _cancel_requested(cancel):
                                future.cancel()
                    outputs.update(worker_outputs)
            except BaseException:
                if future is not None:
                    future.cancel()
                raise
        for name, output in outputs.items():
            self.metadata.setdefault(name, dict(output.metadata or {}))
        return {name: outputs[name] for name in chosen}

    def _worker_progress(self, report, total, names):
        callbacks = {name: report(name) for name in names}

        def progress(finished, _total):
            for callback in callbacks.values():
                callback(finished, total)
        return progress


def pair_trained(name: str) -> bool:
    """Whether method *name* is a network trained on pairs (a central and a companion): its registry
    capability ``network``.  Field mode runs such methods on blend members only, unless asked
    (``networks_on_isolated``)."""
    from napari_blendphot.deblend.registry import method_info

    return method_info(name).network is not None


def run_methods(stamps, context, methods, options: dict | None = None, progress=None, cancel=None,
                in_process: bool = True, backend: str | None = None) -> dict:
    """One-off :meth:`MethodRunner.run` (starts and stops a worker when a network is asked for)."""
    with MethodRunner(methods, options, in_process=in_process, backend=backend) as runner:
        return runner.run(stamps, context, progress, cancel)
