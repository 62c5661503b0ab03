"""The ``blendphot`` command line on bad input: exit code 2, one line on stderr, no traceback, disk unchanged.

Most cases call :func:`napari_blendphot.cli.main` in-process (fast); two run
the real console entry point in a subprocess to check the exit status and
the absence of a Python traceback end to end.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_blendphot.testing.corpus import copy_input, set_csv_cell, tree_digest, truncate, write_valid_inputs
from napari_blendphot.cli import main


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    return write_valid_inputs(tmp_path_factory.mktemp("valid"))


def _prepare(case, valid, tmp: Path) -> list[str]:
    """Lay out the inputs of *case* under *tmp*; return its argv."""
    native = copy_input(valid["native"], tmp)
    dataset = copy_input(valid["dataset"], tmp)
    results = copy_input(valid["results"], tmp)
    existing_report = tmp / "report"
    existing_report.mkdir()
    (existing_report / "summary.csv").write_text("my earlier summary\n")
    (tmp / "taken").mkdir()
    (tmp / "taken" / "keep.txt").write_text("user data\n")
    (tmp / "a_file").write_text("user file\n")
    if case == "info-missing-path":
        return ["info", str(tmp / "nope.fits")]
    if case == "info-text-file":
        return ["info", str(tmp / "a_file")]
    if case == "info-folder-of-nothing":
        return ["info", str(tmp / "taken")]
    if case == "info-truncated-blends":
        truncate(dataset / "blends.npy", -1000)
        return ["info", str(dataset)]
    if case == "blend-truncated-sample":
        truncate(native, native.stat().st_size // 3)
        return ["blend", str(native), "-n", "4", "--seed", "1", "-o", str(tmp / "out")]
    if case == "blend-output-is-a-file":
        return ["blend", str(native), "-n", "4", "--seed", "1", "-o", str(tmp / "a_file")]
    if case == "blend-output-not-empty":
        return ["blend", str(native), "-n", "4", "--seed", "1", "-o", str(tmp / "taken")]
    if case == "blend-zero-blends":
        return ["blend", str(native), "-n", "0", "--seed", "1", "-o", str(tmp / "out")]
    if case == "blend-negative-seed":
        return ["blend", str(native), "-n", "4", "--seed", "-1", "-o", str(tmp / "out")]
    if case == "blend-test-fraction-above-one":
        return ["blend", str(native), "-n", "4", "--seed", "1", "--test-fraction", "1.5", "-o", str(tmp / "out")]
    if case == "blend-too-many-test-blends":
        return ["blend", str(native), "-n", "4", "--n-test", "9", "--seed", "1", "-o", str(tmp / "out")]
    if case == "make-sample-output-exists":
        return ["make-sample", "-n", "2", "--seed", "1", "-o", str(tmp / "a_file")]
    if case == "make-sample-zero-galaxies":
        return ["make-sample", "-n", "0", "--seed", "1", "-o", str(tmp / "new.fits")]
    if case == "make-sample-negative-quantize":
        return ["make-sample", "-n", "2", "--seed", "1", "--quantize", "-4", "-o", str(tmp / "new.fits")]
    if case == "evaluate-missing-results":
        return ["evaluate", str(tmp / "nope.csv"), "-o", str(tmp / "rep")]
    if case == "evaluate-text-in-flux":
        set_csv_cell(results, "g1_flux_sep", 1, "abc")
        return ["evaluate", str(results), "-o", str(tmp / "rep")]
    if case == "evaluate-report-exists":
        return ["evaluate", str(results), "-o", str(existing_report)]
    if case == "evaluate-output-is-a-file":
        return ["evaluate", str(results), "-o", str(tmp / "a_file")]
    if case == "predict-damaged-dataset":
        truncate(dataset / "masks.npy", 100)
        return ["predict", str(dataset), "--methods", "sep", "-o", str(tmp / "res")]
    if case == "predict-unknown-method":
        return ["predict", str(dataset), "--methods", "nosuchmethod", "-o", str(tmp / "res")]
    if case == "predict-output-exists":
        return ["predict", str(dataset), "--methods", "sep", "-o", str(results)]
    if case == "predict-weights-not-a-file":
        return ["predict", str(dataset), "--methods", "blend2flux", "--weights", f"blend2flux={tmp / 'a_file'}",
                "-o", str(tmp / "res")]
    if case.startswith("curate-export"):
        from napari_blendphot.testing.corpus import toy_sample
        from napari_blendphot.curation import DecisionStore
        from napari_blendphot.sample.io_native import read_native

        sidecar = tmp / "session.curation.jsonl"
        owner = toy_sample(12, seed=5) if case == "curate-export-sidecar-of-another-sample" else read_native(native)
        store = DecisionStore(sidecar, owner)
        store.decide(owner.ids[0], "accept")
        store.decide(owner.ids[1], "accept")
        if case == "curate-export-damaged-sidecar":
            with open(sidecar, "a", encoding="utf-8") as handle:
                handle.write('{"id": 17, "decis')
        if case == "curate-export-missing-sidecar":
            sidecar = tmp / "typo.curation.jsonl"
        output = tmp / ("a_file" if case == "curate-export-output-exists" else "curated.fits")
        return ["curate-export", str(native), str(sidecar), "-o", str(output)]
    raise KeyError(case)


CLI_CASES = {
    "info-missing-path": "not found",
    "info-text-file": "not a FITS file",
    "info-folder-of-nothing": "neither the CANDELS files",
    "info-truncated-blends": "cannot read as a .npy array",
    "blend-truncated-sample": "truncated",
    "blend-output-is-a-file": "exists and is not a folder",
    "blend-output-not-empty": "already exists",
    "blend-zero-blends": "positive integer",
    "blend-negative-seed": "non-negative",
    "blend-test-fraction-above-one": "must be in [0, 1)",
    "blend-too-many-test-blends": "n_test",
    "make-sample-output-exists": "already exists",
    "make-sample-zero-galaxies": "positive integer",
    "make-sample-negative-quantize": "positive number",
    "evaluate-missing-results": "file not found",
    "evaluate-text-in-flux": "'g1_flux_sep' is not numeric",
    "evaluate-report-exists": "already exists",
    "evaluate-output-is-a-file": "exists and is not a folder",
    "predict-damaged-dataset": "masks.npy",
    "predict-unknown-method": "nosuchmethod",
    "predict-output-exists": "already exists",
    "predict-weights-not-a-file": "a_file",
    "curate-export-sidecar-of-another-sample": "another sample",
    "curate-export-damaged-sidecar": "damaged curation sidecar",
    "curate-export-missing-sidecar": "sidecar not found",
    "curate-export-output-exists": "already exists",
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_refuses_with_one_line(case, valid, tmp_path, capsys):
    argv = _prepare(case, valid, tmp_path)
    before = tree_digest(tmp_path)
    code = main(argv)
    captured = capsys.readouterr()
    error_lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert code == 2, captured.err
    assert len(error_lines) == 1, captured.err
    line = error_lines[0]
    assert line.startswith(f"blendphot {argv[0]}: error: "), line
    assert CLI_CASES[case].lower() in line.lower(), line
    assert "Traceback" not in captured.err
    assert tree_digest(tmp_path) == before, "a refused command changed files on disk"


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["blend", "embedded", "-o", "x"])  # --seed is required
    assert info.value.code == 2
    assert "--seed" in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["info", "{tmp}/missing.fits"], "missing.fits: not found"),
    (["evaluate", "{tmp}/bad.csv", "-o", "{tmp}/out"], "bad.csv: cannot read as a table"),
], ids=["info-missing", "evaluate-garbage"])
def test_cli_subprocess_exit_code_and_message(argv, expected, tmp_path):
    (tmp_path / "bad.csv").write_bytes(bytes(range(256)) * 4)
    before = tree_digest(tmp_path)
    argv = [a.format(tmp=tmp_path) for a in argv]
    done = subprocess.run([sys.executable, "-m", "napari_blendphot.cli", *argv], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"blendphot {argv[0]}: error: "), done.stderr
    assert expected in lines[0]
    assert "Traceback" not in done.stderr
    assert tree_digest(tmp_path) == before


def test_cli_info_reads_big_endian_candels_arrays(valid, tmp_path, capsys):
    """Not an error: big-endian stamps (as FITS-minded tools write them) are accepted."""
    folder = copy_input(valid["candels"], tmp_path)
    np.save(folder / "candels_img.npy", np.load(folder / "candels_img.npy").astype(">f4"))
    assert main(["info", str(folder)]) == 0
    assert "8 isolated galaxies" in capsys.readouterr().out
