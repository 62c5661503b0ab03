"""``blendphot predict --scheduler ADDRESS``: a blend dataset through a Dask distributed cluster.

The dataset's blends are split into partitions of consecutive rows; each
Dask worker loads the methods once (:class:`MethodsPlugin`, a
``distributed.WorkerPlugin``), reads its partitions' pixels itself from the
dataset folder (which every worker must see: a shared file system), runs the
methods and writes the partition's results table as Parquet (pyarrow)
through :func:`napari_blendphot.atomic.atomic_output`: a partition file
exists only once it is complete.  The client gathers the partitions in order
into the usual results table: the same rows, columns and values as a local
``predict`` (the methods work blend by blend; the table is built by the same
:func:`~napari_blendphot.report.results.build_results_table`).

A partition that raises is submitted once more at once; a partition whose
worker died is submitted once more after the others, alone (a worker's death
fails every partition it held, and only alone is a second death its own).  A
partition that fails again is reported (:class:`PartitionFailures`, with the partitions done
kept on disk) and nothing is gathered.  The scheduler's own
``distributed.scheduler.allowed-failures`` retries come before ours.

Each Dask worker runs the methods in its own process (Keras loads there,
never in the client): start GPU workers one per GPU (``dask cuda`` or
``CUDA_VISIBLE_DEVICES`` per worker) and CPU workers with one thread each
(``--nthreads 1``; SEP's own pool is not used inside a worker).  Clusters on
SLURM/PBS come from dask-jobqueue (docs/scaling.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from napari_blendphot.errors import BlendphotError, InputError

__all__ = ["MethodsPlugin", "PartitionFailures", "predict_on_cluster"]

PLUGIN_NAME = "blendphot-methods"
#: Blends per partition by default: a few seconds of a GPU, a few minutes of a CPU core.
DEFAULT_PARTITION_SIZE = 4096


class PartitionFailures(BlendphotError):
    """Partitions that failed twice: ``.failures`` is ``[(index, rows 'a-b', message)]``."""

    def __init__(self, failures, done: int, total: int, folder):
        self.failures, self.done, self.total, self.folder = failures, done, total, folder
        lines = "; ".join(f"partition {index} (blends {span}): {message}" for index, span, message in failures)
        super().__init__(f"{len(failures)} partition(s) failed twice ({lines}); the {done} of {total} "
                         f"partitions done are kept in {folder}")


class MethodsPlugin:
    """Loads the methods once per Dask worker (registered with ``client.register_plugin``).

    *specs*: ``[(name, factory, options)]`` as the inference engine sends
    them; *backend*: the Keras backend to set before Keras is first imported.
    """

    name = PLUGIN_NAME

    def __init__(self, specs, backend: str | None = None):
        self.specs = list(specs)
        self.backend = backend
        self.methods = None

    def setup(self, worker=None):
        if self.backend and "keras" not in __import__("sys").modules:
            os.environ["KERAS_BACKEND"] = self.backend
        from napari_blendphot.deblend.engine import _method

        # The engine's own cache of made methods: one model per worker process, kept between partitions.
        self.methods = {name: _method(name, factory, options) for name, factory, options in self.specs}

    def teardown(self, worker=None):
        self.methods = None


def _worker_plugin_class():
    from distributed.diagnostics.plugin import WorkerPlugin

    return type("BlendphotMethodsPlugin", (MethodsPlugin, WorkerPlugin), {})


def run_partition(rows, catalog, out_file: str, iou_threshold: float):
    """Run the worker's methods on *rows* (a DatasetRows); write the results as Parquet; ``(out_file, metadata)``.

    Runs in a Dask worker.
    """
    from distributed import get_worker

    from napari_blendphot.atomic import atomic_output
    from napari_blendphot.blend.blend_set import context_from_catalog
    from napari_blendphot.deblend.base import check_blends
    from napari_blendphot.report.results import build_results_table

    plugin = get_worker().plugins[PLUGIN_NAME]
    blends = check_blends(rows.read("blends"), source=f"{rows.folder}: blends {rows.rows[0]}-{rows.rows[-1]}")
    true_masks = rows.read("masks") if rows.has_masks else None
    context = context_from_catalog(catalog)
    from napari_blendphot.deblend.registry import execution_order

    outputs = {}
    for name in execution_order(plugin.methods):
        method = plugin.methods[name]
        output = method.deblend(blends, context)
        if len(output.fluxes) != len(blends):
            raise RuntimeError(f"method {name!r} returned {len(output.fluxes)} results for {len(blends)} blends")
        output.method = name
        outputs[name] = output
    outputs = {name: outputs[name] for name in plugin.methods}  # the columns in the order asked for
    table = build_results_table(catalog, outputs, true_masks=true_masks, iou_threshold=iou_threshold)
    with atomic_output(out_file) as tmp:
        table.write(tmp, format="parquet")
    return out_file, {name: output.metadata for name, output in outputs.items()}


_PARTITION_FILE = re.compile(r"^(part-\d{5}\.parquet|\.part-\d{5}\.parquet\.partial-.*)$")


def _prepare_partitions_folder(folder: Path, overwrite: bool) -> None:
    """A new, empty partitions folder; an old one replaced only with *overwrite* and only if it holds our files."""
    if folder.exists():
        if not overwrite:
            raise InputError(folder, "exists already", "give a new folder for the partitions, or --overwrite")
        if not folder.is_dir():
            raise InputError(folder, "is not a folder of partitions: not replaced")
        foreign = [entry.name for entry in folder.iterdir() if not _PARTITION_FILE.match(entry.name)]
        if foreign:
            raise InputError(folder, f"holds files this tool did not write ({', '.join(sorted(foreign)[:3])}): "
                             "not replaced", "give a new folder for the partitions")
        for entry in folder.iterdir():
            entry.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def _remove_partial_files(folder: Path) -> None:
    """Delete the half-written partition files that a worker dying in mid-write left behind.

    Called once every attempt has ended; only names this module writes.
    """
    for entry in folder.iterdir():
        if entry.name.startswith(".part-") and _PARTITION_FILE.match(entry.name):
            entry.unlink(missing_ok=True)


def _connect(client_class, address: str):
    """A client of the scheduler at *address*; a one-line InputError when none answers.

    How long it tries: Dask's ``distributed.comm.timeouts.connect`` (30 s by default).
    """
    try:
        return client_class(address)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"--scheduler {address}", f"no Dask scheduler answers there ({type(exc).__name__}: {exc})",
                         "start one (dask scheduler, dask-jobqueue, LocalCluster) and give its tcp://HOST:PORT") from None


def predict_on_cluster(blends_dir, methods=None, *, scheduler, partitions_dir, split: str | None = None,
                       weights: dict | None = None, precision: str | None = None,
                       method_options: dict | None = None, backend: str | None = None,
                       partition_size: int = DEFAULT_PARTITION_SIZE, retries: int = 1, progress=None,
                       step: str = "predict", overwrite: bool = False):
    """:func:`napari_blendphot.predict` of a dataset folder on the Dask cluster at *scheduler*.

    *scheduler*: an address (``tcp://host:8786``) or a ``distributed.Client``.
    *partitions_dir*: a new folder for the per-partition Parquet files (kept:
    a record of the run); with *overwrite*, an existing one is emptied first
    if it holds only partition files (what this function writes).  Returns
    the gathered results table.

    Raises
    ------
    PartitionFailures
        Partitions failed ``retries + 1`` times (their rows are named).
    """
    from astropy.table import Table

    from napari_blendphot.blend.dataset import BlendDataset
    from napari_blendphot.deblend.engine import InferenceEngine, default_backend
    from napari_blendphot.deblend.registry import default_methods, method_info, parse_method_list
    from napari_blendphot.prediction import IOU_THRESHOLD, finish_results, method_options_for
    from napari_blendphot.report.results import concatenate_results

    try:
        from distributed import Client, KilledWorker, as_completed
        from distributed import wait as distributed_wait
    except ImportError:
        raise InputError("--scheduler", "needs dask.distributed", "pip install 'distributed' 'pyarrow'") from None
    dataset = BlendDataset(blends_dir)
    selection = dataset.select(split) if split not in (None, "all") else dataset
    if methods is None:
        methods = list(default_methods())
    methods = parse_method_list(methods if isinstance(methods, str) else ",".join(methods))
    options = method_options_for(methods, weights, precision, method_options)
    for name in methods:  # one core per Dask worker thread: no process pool inside a worker
        if method_info(name).parallel:
            options.setdefault(name, {})["n_jobs"] = 1
    if isinstance(partition_size, bool) or not isinstance(partition_size, (int, np.integer)) or partition_size < 1:
        raise InputError("partition size", f"must be a positive integer, got {partition_size!r}")
    total = len(selection)
    if total == 0:
        raise InputError(dataset.source, "holds no blends" + ("" if split in (None, "all") else f" of split {split!r}"))
    # The engine's checks of what travels to a worker (picklable factories and options).
    specs = InferenceEngine._specs(SimpleNamespace(method_options={}, methods=methods), methods, options)
    backend = backend or default_backend()
    folder = Path(partitions_dir)
    starts = list(range(0, total, int(partition_size)))
    spans = [(start, min(start + int(partition_size), total)) for start in starts]
    client = scheduler if isinstance(scheduler, Client) else _connect(Client, scheduler)
    try:
        _prepare_partitions_folder(folder, overwrite)  # once a scheduler answers: nothing left behind otherwise
        client.register_plugin(_worker_plugin_class()(specs, backend), name=PLUGIN_NAME)
        attempts, futures, metadata, failures = {}, {}, {}, []

        def submit(index):
            start, stop = spans[index]
            attempts[index] = attempts.get(index, 0) + 1
            future = client.submit(run_partition, selection.worker_rows(start, stop), selection.catalog[start:stop],
                                   str(folder / f"part-{index:05d}.parquet"), IOU_THRESHOLD, pure=False,
                                   key=f"blendphot-partition-{index}-{attempts[index]}-{os.getpid()}-{id(folder)}")
            futures[future.key] = index
            return future

        done = 0

        def finished(future) -> bool:
            nonlocal done
            index = futures[future.key]
            if future.status != "finished":
                return False
            _, metadata[index] = future.result()
            done += 1
            if progress is not None:
                progress(done, len(spans))
            return True

        def give_up(index, error):
            start, stop = spans[index]
            failures.append((index, f"{start}-{stop - 1}", f"{type(error).__name__}: {error}"))

        pending = as_completed([submit(index) for index in range(len(spans))], with_results=False)
        killed, killed_errors = [], {}
        for future in pending:
            if finished(future):
                continue
            index, error = futures[future.key], future.exception()
            if isinstance(error, KilledWorker):
                # A worker's death fails every partition it held, not only the one that killed it:
                # these are retried later, one at a time, where a death can only be their own.
                killed.append(index)
                killed_errors[index] = error
            elif attempts[index] <= retries:
                pending.add(submit(index))
            else:
                give_up(index, error)
        for index in sorted(killed):
            error = killed_errors[index]
            while attempts[index] <= retries:
                future = submit(index)
                distributed_wait([future])
                if finished(future):
                    break
                error = future.exception()
            else:
                give_up(index, error)
        _remove_partial_files(folder)
        if failures:
            raise PartitionFailures(sorted(failures), done, len(spans), folder)
    finally:
        if client is not scheduler:
            client.close()
    tables = []
    for index, (start, stop) in enumerate(spans):
        table = Table.read(folder / f"part-{index:05d}.parquet", format="parquet")
        if len(table) != stop - start:
            raise InputError(folder / f"part-{index:05d}.parquet", f"holds {len(table)} rows, expected {stop - start}")
        tables.append(table)
    table = concatenate_results(tables)
    first_metadata = {}
    for index in sorted(metadata):
        for name, value in metadata[index].items():
            first_metadata.setdefault(name, value)
    info = {"blend_set": selection, "methods": methods, "metadata": first_metadata, "backend": backend}
    return finish_results(table, info, step, split)
