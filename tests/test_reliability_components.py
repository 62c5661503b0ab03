"""Bad input to the engine, the curation sidecar and the napari reader; the fuzzer itself.

The engine is also covered for crashes elsewhere: ``tests/test_engine.py``
kills the worker mid-request (SIGKILL) and checks the next request starts a
fresh one; ``tests/test_curation.py::test_sigkill_mid_session_loses_no_saved_decision``
kills a curation session and checks no saved decision is lost.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_blendphot.testing.corpus import toy_sample, tree_digest, write_valid_inputs
from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.errors import InputError

S = STAMP_SIZE


def _with(value, index=(1, 5, 7)):
    blends = np.zeros((3, S, S), np.float32)
    blends[index] = value
    return blends


# -- check_blends and the engine -----------------------------------------------------------------

BLEND_CASES = {
    "1d": (np.zeros(S * S, np.float32), "shape (16384,)"),
    "4d": (np.zeros((2, 1, S, S), np.float32), "shape (2, 1, 128, 128)"),
    "64-pixels": (np.zeros((2, 64, 64), np.float32), "shape (2, 64, 64)"),
    "not-square": (np.zeros((2, S, 64), np.float32), "shape (2, 128, 64)"),
    "channels-last": (np.zeros((2, S, S, 1), np.float32), "shape (2, 128, 128, 1)"),
    "empty-batch": (np.zeros((0, S, S), np.float32), "the batch is empty"),
    "nan-pixel": (_with(np.nan), "1 blend(s) contain NaN or infinite pixels (first: index 1)"),
    "inf-pixel": (_with(np.inf), "NaN or infinite"),
    "minus-inf-pixel": (_with(-np.inf), "NaN or infinite"),
    "complex": (np.zeros((1, S, S), np.complex64), "not numeric"),
    "boolean": (np.zeros((1, S, S), bool), "not numeric"),
    "text": (np.full((1, S, S), "a"), "not numeric"),
    "objects": (np.full((1, S, S), None, dtype=object), "not numeric"),
    "ragged-list": ([np.zeros((S, S)), np.zeros((S, 64))], "blends"),
}


@pytest.mark.parametrize("case", sorted(BLEND_CASES))
def test_check_blends_refuses(case):
    from napari_blendphot.deblend.base import check_blends

    blends, problem = BLEND_CASES[case]
    try:
        with pytest.raises(InputError) as info:
            check_blends(blends, source="blends of the test")
    except ValueError as exc:  # numpy refuses the ragged list itself, before check_blends sees an array
        assert case == "ragged-list", exc
        return
    assert str(info.value).startswith("blends of the test: ")
    assert problem in str(info.value)


def test_check_blends_accepts_what_users_have():
    """Single stamps, float64, integers and big-endian (FITS) data are normalised, not refused."""
    from napari_blendphot.deblend.base import check_blends

    stamp = np.arange(S * S, dtype=">f8").reshape(S, S) / 7
    out = check_blends(stamp)
    assert out.shape == (1, S, S) and out.dtype == np.dtype("=f4")
    np.testing.assert_array_equal(out[0], stamp.astype(np.float32))
    assert check_blends(np.zeros((2, S, S), np.uint16)).dtype == np.float32


@pytest.fixture(scope="module")
def sep_engine():
    from napari_blendphot.deblend.engine import InferenceEngine

    engine = InferenceEngine(methods=("sep",))
    yield engine
    engine.close()


@pytest.mark.parametrize("case", ["64-pixels", "empty-batch", "4d"])
def test_engine_refuses_bad_shapes_without_starting_a_worker(case):
    from napari_blendphot.deblend.engine import InferenceEngine

    blends, problem = BLEND_CASES[case]
    with InferenceEngine(methods=("sep",)) as engine:
        with pytest.raises(InputError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            engine.run(blends)
        assert engine.worker_pid is None


def test_engine_refuses_non_finite_chunk_and_stays_usable(sep_engine):
    blends = np.zeros((6, S, S), np.float32)
    blends[4, 60, 60] = np.nan
    with pytest.raises(InputError, match=r"blends\[4:6\]: 1 blend\(s\) contain NaN"):
        sep_engine.run(blends, chunk_size=2)
    # The refusal did not break the worker: a valid request still runs.
    sample = toy_sample(4, seed=2)
    out = sep_engine.run(sample.images[:2])
    assert out["sep"].fluxes.shape == (2, 2)


def test_engine_refuses_context_of_another_length(sep_engine):
    from napari_blendphot.deblend.base import BlendContext

    context = BlendContext(companion_shift=np.zeros((5, 2), int), central_radius=np.ones(5))
    with pytest.raises(InputError, match="context.companion_shift: 5 rows for 2 blends"):
        sep_engine.run(np.zeros((2, S, S), np.float32), context=context)


def test_engine_refuses_unknown_method_and_bad_chunk_size(sep_engine):
    with pytest.raises(InputError, match="nosuch"):
        sep_engine.run(np.zeros((1, S, S), np.float32), methods=("nosuch",))
    with pytest.raises(InputError, match="chunk_size"):
        sep_engine.run(np.zeros((1, S, S), np.float32), chunk_size=0)


# -- curation sidecar ----------------------------------------------------------------------------

def _sidecar_lines(tmp_path, sample):
    from napari_blendphot.curation import DecisionStore

    path = tmp_path / "reference.jsonl"
    store = DecisionStore(path, sample)
    store.decide(sample.ids[0], "accept")
    store.decide(sample.ids[1], "reject", reason="neighbour")
    lines = path.read_text().splitlines()
    path.unlink()
    return lines


SIDECAR_CASES = {
    "empty-file": (lambda lines, other: "", "not a curation sidecar"),
    "binary-garbage": (lambda lines, other: bytes(range(256)).decode("latin1"), "not a curation sidecar"),
    "shopping-list": (lambda lines, other: "eggs\nmilk\n", "not a curation sidecar"),
    "of-another-sample": (lambda lines, other: "\n".join(other[0]) + "\n", "another sample"),
    "same-ids-other-pixels": (lambda lines, other: "\n".join(other[1]) + "\n", "different pixels"),
    "newer-version": (lambda lines, other: "\n".join([lines[0].replace('"version": 1', '"version": 99'),
                                                       *lines[1:]]) + "\n", "newer than this reader"),
    "unknown-galaxy-id": (lambda lines, other: "\n".join([lines[0], lines[1].replace(
        f'"id": {lines[1].split(chr(34) + "id" + chr(34) + ": ")[1].split(",")[0]}', '"id": 999999')]) + "\n",
        "not in the sample"),
    "unknown-decision": (lambda lines, other: "\n".join([lines[0], lines[1].replace('"accept"', '"maybe"')]) + "\n",
                         "damaged curation sidecar"),
    "half-written-tail": (lambda lines, other: "\n".join(lines) + '\n{"id": 5, "deci', "damaged curation sidecar"),
}


@pytest.mark.parametrize("case", sorted(SIDECAR_CASES))
def test_curation_sidecar_refused_and_left_unchanged(case, tmp_path):
    from napari_blendphot.curation import DecisionStore

    sample = toy_sample(10, seed=1)
    (tmp_path / "ref").mkdir()
    lines = _sidecar_lines(tmp_path / "ref", sample)
    other_lines = []
    for k, other in enumerate((toy_sample(12, seed=2), toy_sample(10, seed=2))):  # other ids; same ids
        (tmp_path / f"oth{k}").mkdir()
        other_lines.append(_sidecar_lines(tmp_path / f"oth{k}", other))
    make, problem = SIDECAR_CASES[case]
    path = tmp_path / "session.jsonl"
    path.write_text(make(lines, other_lines), encoding="latin1")
    before = tree_digest(tmp_path)
    with pytest.raises(InputError, match=problem) as info:
        DecisionStore(path, sample)
    assert "session.jsonl" in str(info.value)
    assert tree_digest(tmp_path) == before


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    return write_valid_inputs(tmp_path_factory.mktemp("valid"))


# -- the fuzzer ----------------------------------------------------------------------------------

def test_fuzzer_runs_and_finds_no_crash(tmp_path):
    """A few seconds of ``scripts/fuzz_readers.py``, run as a command (the long runs are in docs/reliability.md)."""
    import re
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_readers.py"
    crashes = tmp_path / "crashes"
    done = subprocess.run([sys.executable, str(script), "--seconds", "4", "--seed", "123", "--out", str(crashes),
                           "--round-timeout", "20"], capture_output=True, text=True, timeout=600)
    total = re.search(r"fuzzed (\d+) inputs", done.stdout)
    assert total and int(total.group(1)) >= 5, done.stdout + done.stderr
    counts = re.findall(r"tried +(\d+) +accepted +(\d+) +InputError +(\d+)", done.stdout)
    assert counts and all(int(tried) == int(accepted) + int(errors) for tried, accepted, errors in counts)
    details = {path.parent.name: path.read_text()[:2000] for path in sorted(crashes.rglob("crash.txt"))}
    assert done.returncode == 0 and "distinct crashes: 0" in done.stdout, json.dumps(details, indent=1)


# -- a results table opened with another blend dataset -------------------------------------------

def test_results_of_another_dataset_are_refused_by_the_failure_browser(valid, tmp_path):
    """Same blend ids (0..5), other pairs: the failure browser must not show wrong images for the rows."""
    from napari_blendphot.blend.dataset import write_blend_dataset
    from napari_blendphot.report.results import read_results
    from napari_blendphot.app.failures import FailureModel

    other = write_blend_dataset(toy_sample(), tmp_path / "other", n=6, test_fraction=0.5, seed=77)
    before = tree_digest(tmp_path)
    model = FailureModel(read_results(valid["results"]))
    with pytest.raises(InputError, match="another blend dataset"):
        model.attach_dataset(other)
    assert model.dataset is None
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("case, value", [("all-zero", 0.0), ("constant", 5.0), ("negative", -3.0),
                                         ("huge", 1e30), ("float32-max", 3.4e38)])
def test_sep_on_degenerate_blends_reports_not_detected(case, value):
    """Blank or saturated stamps are valid input: SEP finds nothing (NaN fluxes, case -1), no crash."""
    from napari_blendphot.deblend.base import BlendContext
    from napari_blendphot.deblend.registry import create_method

    blends = np.full((2, S, S), value, np.float32)
    context = BlendContext(companion_shift=np.array([[10, 0], [0, -12]]), central_radius=np.array([3.0, 5.0]))
    out = create_method("sep").deblend(blends, context)
    assert out.fluxes.shape == (2, 2) and np.isnan(out.fluxes).all()
    assert list(out.extra["detection"]) == [-1, -1]
