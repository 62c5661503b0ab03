"""``blendphot predict --scheduler``: a Dask LocalCluster of two worker processes started here."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

from napari_blendphot import predict  # noqa: E402
from napari_blendphot.cli import main  # noqa: E402
from napari_blendphot.deblend.engine import InferenceEngine  # noqa: E402
from napari_blendphot.deblend.registry import register_method, unregister_method  # noqa: E402
from napari_blendphot.distributed import predict_on_cluster  # noqa: E402

pytestmark = pytest.mark.slow  # two worker processes start (~10 s here)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, toy_sample):
    from napari_blendphot.blend.dataset import write_blend_dataset

    folder = tmp_path_factory.mktemp("dask") / "blends"
    return write_blend_dataset(toy_sample, folder, n=22, test_fraction=0.5, seed=8, chunk_size=11)


@pytest.fixture(scope="module")
def client():
    import dask
    from distributed import Client, LocalCluster

    register_method("slowstandin", "napari_blendphot.testing.stand_ins:SlowDeblender", needs_worker=False)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                yield client
    unregister_method("slowstandin")


def _assert_same(a, b):
    assert a.colnames == b.colnames and len(a) == len(b)
    for name in a.colnames:
        # The same values to the bit (Parquet stores native byte order where the FITS catalogue had big-endian).
        left, right = (np.asarray(t[name]) for t in (a, b))
        left, right = (x.astype(x.dtype.newbyteorder("=")) for x in (left, right))
        assert left.dtype == right.dtype and left.tobytes() == right.tobytes(), name


def test_a_cluster_run_is_a_local_run_row_for_row(client, dataset_dir, tmp_path):
    options = {"slowstandin": {"seconds_per_blend": 0.0}}
    on_cluster = predict_on_cluster(dataset_dir, ["sep", "slowstandin"], scheduler=client, split="all",
                                    partitions_dir=tmp_path / "parts", partition_size=5, method_options=options)
    with InferenceEngine(["sep"]) as engine:
        # Chunks as the partitions: the stand-in's index_check column counts within a chunk.
        local = predict(dataset_dir, ["sep", "slowstandin"], split="all", engine=engine, method_options=options,
                        chunk_size=5)
    _assert_same(on_cluster, local)
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [f"part-{i:05d}.parquet" for i in range(5)]
    assert on_cluster.meta["provenance"]["parameters"]["methods"] == ["sep", "slowstandin"]


#: Run in a child process: a Dask worker that dies leaves the cluster's process (the nannies live there)
#: reaping children it did not start, which broke a later engine test's join() of its own killed worker.
_DEATHS = r"""
import json, sys
import dask
from distributed import Client, LocalCluster
from napari_blendphot.deblend.registry import register_method
from napari_blendphot.distributed import PartitionFailures, predict_on_cluster

if __name__ == "__main__":
    dataset, folder = sys.argv[1], sys.argv[2]
    register_method("dying", "napari_blendphot.testing.stand_ins:DyingDeblender", needs_worker=False)
    report = {}
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                once = {"dying": {"die_on_size": 2, "tally": folder + "/once", "times": 1}}
                table = predict_on_cluster(dataset, ["dying"], scheduler=client, split="all", partition_size=5,
                                           partitions_dir=folder + "/once_parts", method_options=once)
                report["once_ids"] = [int(i) for i in table["id"]]
                always = {"dying": {"die_on_size": 2, "tally": folder + "/always", "times": 9}}
                try:
                    predict_on_cluster(dataset, ["dying"], scheduler=client, split="all", partition_size=5,
                                       partitions_dir=folder + "/always_parts", method_options=always)
                except PartitionFailures as exc:
                    report["failures"] = [[index, span] for index, span, _ in exc.failures]
        # One worker with two threads: the dying partition (the last, of 4 blends) starts while
        # partition 2 runs beside it, so the death fails both; only the culprit may be reported.
        with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                beside = {"dying": {"die_on_size": 4, "tally": folder + "/beside", "times": 9,
                                    "seconds_per_blend": 0.3}}
                try:
                    predict_on_cluster(dataset, ["dying"], scheduler=client, split="all", partition_size=6,
                                       partitions_dir=folder + "/beside_parts", method_options=beside)
                except PartitionFailures as exc:
                    report["beside_failures"] = [[index, span] for index, span, _ in exc.failures]
    print("REPORT " + json.dumps(report))
"""


def test_a_dead_worker_loses_only_its_partition_retried_once_then_reported(dataset_dir, tmp_path):
    import json
    import subprocess
    import sys

    script = tmp_path / "deaths.py"
    script.write_text(_DEATHS)
    completed = subprocess.run([sys.executable, str(script), str(dataset_dir), str(tmp_path)], capture_output=True,
                               text=True, timeout=240)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("REPORT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])
    # 22 blends = 4 x 5 + 2: the last partition's worker died once, the retry finished it.
    assert report["once_ids"] == list(range(22)) and (tmp_path / "once").read_text() == "died\n"
    # Dying every time: tried twice, no more, then reported with its blends.
    assert report["failures"] == [[4, "20-21"]] and (tmp_path / "always").read_text() == "died\n" * 2
    # The four partitions done are kept; nothing half-written lies beside them.
    assert sorted(p.name for p in (tmp_path / "always_parts").iterdir()) == \
        [f"part-{i:05d}.parquet" for i in range(4)]
    # A partition that only shared the dying worker is retried alone and kept (it failed twice
    # beside the culprit before the retries went one at a time).
    assert report["beside_failures"] == [[3, "18-21"]] and (tmp_path / "beside").read_text() == "died\n" * 2
    assert sorted(p.name for p in (tmp_path / "beside_parts").iterdir()) == \
        [f"part-{i:05d}.parquet" for i in range(3)]


def test_the_cli_gathers_the_same_csv_as_a_local_run(client, dataset_dir, tmp_path):
    address = client.scheduler.address
    assert main(["predict", str(dataset_dir), "--methods", "sep", "--split", "test", "-o",
                 str(tmp_path / "local")]) == 0
    assert main(["predict", str(dataset_dir), "--methods", "sep", "--split", "test", "--scheduler", address,
                 "--partition-size", "4", "-o", str(tmp_path / "cluster")]) == 0
    from astropy.table import Table

    _assert_same(Table.read(tmp_path / "cluster.fits"), Table.read(tmp_path / "local.fits"))
    assert (tmp_path / "cluster.partitions" / "part-00002.parquet").is_file()
    again = ["predict", str(dataset_dir), "--methods", "sep", "--split", "test", "--scheduler", address,
             "--partition-size", "4", "-o", str(tmp_path / "cluster")]
    assert main(again) == 2  # the results and their partitions exist: refused
    assert main(again + ["--overwrite"]) == 0
    (tmp_path / "cluster.partitions" / "notes.txt").write_text("mine")
    assert main(again + ["--overwrite"]) == 2  # a file this tool did not write: the folder is left alone
    assert (tmp_path / "cluster.partitions" / "notes.txt").read_text() == "mine"


def test_an_address_where_no_scheduler_answers_is_one_line(dataset_dir, tmp_path, capsys):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):  # not Dask's 30 s of retries
        assert main(["predict", str(dataset_dir), "--methods", "sep", "--scheduler", f"tcp://127.0.0.1:{port}",
                     "-o", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert "no Dask scheduler answers there" in error[-1] and "Traceback" not in "\n".join(error)
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "r.partitions").exists()
