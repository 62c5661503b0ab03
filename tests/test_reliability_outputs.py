"""Outputs (issue 19): what --overwrite may replace, full disks, races, atomic files, checks before computing.

Each test names the defect it covers (item numbers of issue 19); each failed
before the fix.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_blendphot.testing.corpus import copy_input, tree_digest, write_valid_inputs
from napari_blendphot.cli import main


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    from napari_blendphot.sample.io_native import write_native
    from napari_blendphot.sample.toy import make_toy_sample

    root = tmp_path_factory.mktemp("valid")
    inputs = write_valid_inputs(root)
    # The corpus's 8-galaxy sample is too small to blend after cleaning: 40 toy galaxies.
    inputs["native"] = write_native(make_toy_sample(40, seed=1234), root / "sample40.fits")
    return inputs


def _refused(argv, capsys, expected: str) -> str:
    """Run *argv* in-process; it must exit 2 with one error line holding *expected*."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"blendphot {argv[0]}: error: "), err
    assert expected.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err
    return lines[0]


# -- item 1: --overwrite replaces only what the project made -----------------------------------

def test_blend_overwrite_of_a_project_folder_holding_the_input_is_refused(valid, tmp_path, capsys):
    """Issue 19 item 1, the reproduction: proj/ holds the sample, a README and results/; all must survive."""
    proj = tmp_path / "proj"
    proj.mkdir()
    sample = copy_input(valid["native"], proj)
    (proj / "README").write_text("my notes\n")
    (proj / "results").mkdir()
    (proj / "results" / "r.txt").write_text("results\n")
    before = tree_digest(tmp_path)
    _refused(["blend", sample, "-n", "4", "--seed", "1", "-o", proj, "--overwrite"], capsys, "lies in this output")
    assert tree_digest(tmp_path) == before
    # Without the input inside, the foreign files alone are enough to refuse, naming the folder's content.
    outside = copy_input(valid["native"], tmp_path)
    sample.unlink()
    before = tree_digest(tmp_path)
    _refused(["blend", outside, "-n", "4", "--seed", "1", "-o", proj, "--overwrite"], capsys,
             "not a blend dataset written by blendphot")
    assert tree_digest(tmp_path) == before


def test_blend_overwrite_replaces_a_dataset_and_deletes_only_its_files(valid, tmp_path, capsys):
    from napari_blendphot.blend.dataset import BlendDataset

    out = tmp_path / "ds"
    assert main(["blend", str(valid["native"]), "-n", "4", "--seed", "1", "--no-clean", "-o", str(out)]) == 0
    (out / "notes.txt").write_text("mine\n")  # a user's file inside a dataset
    before = tree_digest(tmp_path)
    line = _refused(["blend", valid["native"], "-n", "6", "--seed", "2", "--no-clean", "-o", out, "--overwrite"],
                    capsys, "notes.txt")
    assert "is not part of a blend dataset" in line
    assert tree_digest(tmp_path) == before
    (out / "notes.txt").unlink()
    assert main(["blend", str(valid["native"]), "-n", "6", "--seed", "2", "--no-clean", "-o", str(out),
                 "--overwrite"]) == 0
    assert len(BlendDataset(out)) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # nothing left beside it


def test_blend_into_the_current_folder_is_refused(valid, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = tree_digest(tmp_path)
    _refused(["blend", valid["native"], "-n", "4", "--seed", "1", "-o", "."], capsys, "is the current folder")
    _refused(["blend", valid["native"], "-n", "4", "--seed", "1", "-o", ".", "--overwrite"], capsys,
             "is the current folder")
    assert tree_digest(tmp_path) == before


def test_blend_builder_save_overwrite_refuses_a_users_folder(toy_sample, tmp_path):
    from napari_blendphot.blend.assemble import make_blend
    from napari_blendphot.errors import InputError
    from napari_blendphot.app.builder import write_built_blends

    blend = make_blend(toy_sample[0], toy_sample[1], 5, 5)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious\n")
    with pytest.raises(InputError, match="not a blend dataset written by blendphot"):
        write_built_blends([blend], folder, overwrite=True)
    assert (folder / "thesis.tex").read_text() == "precious\n"
    saved = write_built_blends([blend], tmp_path / "set")
    write_built_blends([blend, blend], saved, overwrite=True)  # its own save: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "set"]


def test_make_sample_overwrite_on_a_folder_or_a_users_file(tmp_path, capsys):
    folder = tmp_path / "DIR"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    user_file = tmp_path / "notes.fits"
    user_file.write_text("not a sample")
    before = tree_digest(tmp_path)
    _refused(["make-sample", "-n", "2", "--seed", "1", "-o", folder, "--overwrite"], capsys, "is a folder")
    _refused(["make-sample", "-n", "2", "--seed", "1", "-o", user_file, "--overwrite"], capsys,
             "not a native sample file written by blendphot")
    assert tree_digest(tmp_path) == before


def test_curate_export_never_overwrites_its_input_sample(valid, tmp_path, capsys):
    from napari_blendphot.curation import DecisionStore
    from napari_blendphot.sample.io_native import read_native

    native = copy_input(valid["native"], tmp_path)
    sample = read_native(native)
    store = DecisionStore(tmp_path / "s.curation.jsonl", sample)
    store.decide(sample.ids[0], "accept")
    before = tree_digest(tmp_path)
    _refused(["curate-export", native, tmp_path / "s.curation.jsonl", "-o", native, "--overwrite"], capsys,
             "lies in this output")
    assert tree_digest(tmp_path) == before


def test_evaluate_overwrite_replaces_only_its_own_files_and_drops_its_stale_figures(valid, tmp_path, capsys):
    from napari_blendphot.report.results import read_results, write_results

    report = tmp_path / "report"
    with_iou = read_results(valid["results"])
    with_iou["g1_iou_sep"] = np.full(len(with_iou), 0.5)
    with_iou["g2_iou_sep"] = np.full(len(with_iou), 0.25)
    write_results(with_iou, tmp_path / "iou")
    assert main(["evaluate", str(tmp_path / "iou.csv"), "-o", str(report)]) == 0
    assert (report / "fig_iou.png").is_file()
    (report / "my_notes.md").write_text("keep me\n")
    assert main(["evaluate", str(valid["results"]), "-o", str(report), "--overwrite"]) == 0
    names = sorted(p.name for p in report.iterdir())
    assert "fig_iou.png" not in names, "a stale figure of the older report was kept"
    assert (report / "my_notes.md").read_text() == "keep me\n"
    assert not [n for n in names if n.startswith(".")], names
    # A report.md that the report did not write is never replaced.
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.md").write_text("my own report\n")
    before = tree_digest(tmp_path)
    _refused(["evaluate", valid["results"], "-o", other, "--overwrite"], capsys, "not written by blendphot evaluate")
    assert tree_digest(tmp_path) == before
    # Its input is one of the report's files (a results table copied over summary.csv): refused too.
    (report / "summary.csv").write_bytes(Path(valid["results"]).read_bytes())
    before = tree_digest(tmp_path)
    _refused(["evaluate", report / "summary.csv", "-o", report, "--overwrite"], capsys, "lies in this output")
    assert tree_digest(tmp_path) == before


def test_demo_screenshot_overwrite_replaces_only_its_own_png(tmp_path):
    from matplotlib.image import imsave

    from napari_blendphot.cli._demo import check_screenshot_output
    from napari_blendphot.errors import InputError
    from napari_blendphot.outputs import PNG_SOFTWARE

    users = tmp_path / "holiday.png"
    imsave(users, np.zeros((4, 4, 3)), format="png")
    with pytest.raises(InputError, match="not a screenshot written by blendphot"):
        check_screenshot_output(users, overwrite=True)
    ours = tmp_path / "demo.png"
    imsave(ours, np.zeros((4, 4, 3)), format="png", metadata={"Software": PNG_SOFTWARE})
    check_screenshot_output(ours, overwrite=True)


@pytest.mark.parametrize("how", ["env", "argument"])
def test_fetch_cache_folder_that_is_a_file(tmp_path, capsys, monkeypatch, how):
    a_file = tmp_path / "cache"
    a_file.write_text("not a folder")
    if how == "env":
        monkeypatch.setenv("BLENDPHOT_DATA_DIR", str(a_file))
        argv = ["fetch-candels", "--url", "http://127.0.0.1:9/none.tar.gz"]
    else:
        argv = ["fetch-candels", "--cache-dir", str(a_file), "--url", "http://127.0.0.1:9/none.tar.gz"]
    line = _refused(argv, capsys, "is a file, not a folder")
    assert ("error: $BLENDPHOT_DATA_DIR (" in line) == (how == "env")
    assert ("error: argument --cache-dir" in line) == (how == "argument")
    assert a_file.read_text() == "not a folder"


# -- item 2: a full disk -------------------------------------------------------------------------

def test_blend_refuses_before_computing_when_the_disk_is_too_small(valid, tmp_path, capsys, monkeypatch):
    import napari_blendphot.outputs as outputs
    import napari_blendphot.sample.io as sample_io

    monkeypatch.setattr(outputs, "free_bytes", lambda folder: 3 * 1024**2)

    def must_not_load(*args):
        raise AssertionError("the sample was read before the output was checked")

    monkeypatch.setattr(sample_io, "load_sample", must_not_load)
    _refused(["blend", valid["native"], "-n", "100", "--seed", "1", "-o", tmp_path / "ds"], capsys,
             "not enough free space")
    # -n far beyond any disk: refused at once, not after drawing pairs
    monkeypatch.undo()
    _refused(["blend", valid["native"], "-n", str(10**20), "--seed", "1", "-o", tmp_path / "ds"], capsys,
             "not enough free space")
    assert list(tmp_path.iterdir()) == []


def test_blend_reserves_its_arrays_and_turns_enospc_into_one_line(valid, tmp_path, capsys, monkeypatch):
    """The disk fills during the run: posix_fallocate says so before any page is written (no SIGBUS)."""
    calls = []

    def full_disk(fd, offset, length):
        calls.append(length)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    line = _refused(["blend", valid["native"], "-n", "4", "--seed", "1", "-o", tmp_path / "ds"], capsys,
                    "not enough free space on the disk")
    assert calls, "the arrays were not reserved"
    assert str(tmp_path / "ds") in line and ".partial-" not in line
    assert list(tmp_path.iterdir()) == [], "the partial folder was left behind"


def test_enospc_anywhere_is_one_line_naming_the_output_not_the_temporary(valid, tmp_path, capsys, monkeypatch):
    import napari_blendphot.tables as tables

    def full(table, path, fmt):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(tables, "write_table_file", full)
    line = _refused(["blend", valid["native"], "-n", "4", "--seed", "1", "-o", tmp_path / "ds"], capsys,
                    "No space left on device")
    assert ".partial-" not in line and str(tmp_path / "ds" / "catalog.csv") in line
    assert list(tmp_path.iterdir()) == []


def test_stale_partial_folders_of_killed_runs_are_removed_by_the_next_run(valid, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = tmp_path / f".ds.partial-{dead}-0badf00d"
    stale.mkdir()
    (stale / "blends.npy").write_bytes(b"\0" * 4096)
    live = tmp_path / f".ds.partial-{os.getpid()}-00c0ffee"  # a run still going: left alone
    live.mkdir()
    assert main(["blend", str(valid["native"]), "-n", "4", "--seed", "1", "--no-clean", "-o",
                 str(tmp_path / "ds")]) == 0
    assert not stale.exists() and live.exists()


# -- item 3: two runs at once ---------------------------------------------------------------------

def test_a_dataset_made_by_another_run_during_this_one_is_not_replaced(toy_sample, tmp_path):
    from napari_blendphot.blend.dataset import BlendDataset, write_blend_dataset
    from napari_blendphot.errors import OutputExistsError

    out = tmp_path / "X"

    def other_run_finishes_first(done, total):
        if not out.exists():
            write_blend_dataset(toy_sample, out, n=5, seed=9)

    with pytest.raises(OutputExistsError):
        write_blend_dataset(toy_sample, out, n=20, seed=1, chunk_size=5, progress=other_run_finishes_first)
    assert len(BlendDataset(out)) == 5, "the other run's dataset was replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X"]


def test_two_blend_processes_on_one_output_one_writes_the_other_fails_cleanly(valid, tmp_path):
    from napari_blendphot.blend.dataset import BlendDataset

    out = tmp_path / "X"
    command = [sys.executable, "-m", "napari_blendphot.cli", "blend", str(valid["native"]), "-n", "300",
               "--seed", "1", "-o", str(out)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(run.wait(timeout=180), run.stderr.read()) for run in runs]
    wrote = [err for code, err in results if code == 0 and "wrote" in err]
    failed = [err for code, err in results if code == 2]
    assert len(wrote) == 1 and len(failed) == 1, results
    assert "already exists" in failed[0] and "Traceback" not in failed[0]
    assert len(BlendDataset(out)) == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X"]


# -- item 5: atomic outputs ------------------------------------------------------------------------

def test_no_fixed_temporary_names_in_the_package():
    """Every writer goes through napari_blendphot.atomic (unique names): no '.tmp' spelled out anywhere."""
    root = Path(__file__).resolve().parents[1] / "src" / "napari_blendphot"
    offenders = []
    for path in root.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if (".tmp\"" in line or ".tmp'" in line or ".tmp.png" in line or "mkstemp(" in line
                    or "mkdtemp(" in line):
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def _results_table(valid):
    from napari_blendphot.report.results import read_results

    return read_results(valid["results"])


def test_results_pair_killed_between_the_files_is_completed_by_a_rerun(valid, tmp_path, monkeypatch):
    import napari_blendphot.atomic as atomic
    from napari_blendphot.report.results import read_results, write_results

    table = _results_table(valid)
    real_install = atomic.install_file

    def killed_at_the_fits(tmp, path, replace=True):
        if str(path).endswith(".fits"):
            raise KeyboardInterrupt
        real_install(tmp, path, replace)

    monkeypatch.setattr(atomic, "install_file", killed_at_the_fits)
    with pytest.raises(KeyboardInterrupt):
        write_results(table, tmp_path / "res")
    monkeypatch.undo()
    # half a pair (the CSV and its metadata file), no temporaries
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.csv", "res.csv.meta.json"]
    assert len(read_results(tmp_path / "res.csv")) == len(table)  # what is there reads back
    write_results(table, tmp_path / "res")  # the rerun, without overwrite, completes the pair
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.csv", "res.csv.meta.json", "res.fits"]
    # An overwrite killed between the files: never a CSV of one run beside a FITS of another.
    changed = table.copy()
    changed["g1_flux_sep"] = changed["g1_flux_sep"] * 2
    monkeypatch.setattr(atomic, "install_file", killed_at_the_fits)
    with pytest.raises(KeyboardInterrupt):
        write_results(changed, tmp_path / "res", overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.csv", "res.csv.meta.json"]
    np.testing.assert_array_equal(read_results(tmp_path / "res.csv")["g1_flux_sep"], changed["g1_flux_sep"])


def test_a_lone_file_that_blendphot_did_not_write_is_not_taken_for_half_a_pair(valid, tmp_path):
    from napari_blendphot.errors import OutputExistsError
    from napari_blendphot.report.results import write_results

    (tmp_path / "res.csv").write_text("a,b\n1,2\n")
    with pytest.raises(OutputExistsError):
        write_results(_results_table(valid), tmp_path / "res")
    assert (tmp_path / "res.csv").read_text() == "a,b\n1,2\n"


def test_evaluate_killed_while_drawing_keeps_the_old_report(valid, tmp_path, monkeypatch):
    import napari_blendphot.report.figures as figures
    from napari_blendphot.report.evaluate import evaluate
    from napari_blendphot.report.results import write_results

    report = tmp_path / "report"
    evaluate(valid["results"], report)
    before = tree_digest(report)
    newer = _results_table(valid)
    newer["g1_flux_sep"] = newer["g1_flux_sep"] * 1.5  # another run: other numbers, other bytes
    write_results(newer, tmp_path / "newer")
    real_save = figures.save_figure
    count = []

    def killed_on_the_third(figure, path, dpi=110):
        count.append(path)
        if len(count) == 3:
            raise KeyboardInterrupt
        real_save(figure, path, dpi)

    monkeypatch.setattr(figures, "save_figure", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        evaluate(tmp_path / "newer.csv", report, overwrite=True)
    assert tree_digest(report) == before


def test_evaluate_killed_while_installing_is_replaced_by_a_plain_rerun(valid, tmp_path, monkeypatch):
    import napari_blendphot.atomic as atomic
    from napari_blendphot.report.evaluate import evaluate, read_manifest

    report = tmp_path / "report"
    real_install = atomic.install_file
    installed = []

    def killed_after_two(tmp, path, replace=True):
        if len(installed) == 2:
            raise KeyboardInterrupt
        installed.append(path)
        real_install(tmp, path, replace)

    monkeypatch.setattr(atomic, "install_file", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        evaluate(valid["results"], report)
    monkeypatch.undo()
    manifest = read_manifest(report)
    assert manifest is not None and not manifest["complete"]
    assert not [p for p in report.iterdir() if p.name.startswith(".")]
    written = evaluate(valid["results"], report)  # no --overwrite needed: the killed run's files are its own
    assert read_manifest(report)["complete"] and all(p.is_file() for p in written.paths)


def test_failure_browser_montage_and_figures_are_tagged_pngs(tmp_path):
    from matplotlib.figure import Figure

    from napari_blendphot.outputs import is_project_png
    from napari_blendphot.report.figures import save_figure

    figure = Figure()
    figure.add_subplot().plot([0, 1])
    save_figure(figure, tmp_path / "f.png")
    assert is_project_png(tmp_path / "f.png")


# -- item 6: evaluate on valid edge cases ---------------------------------------------------------

def _edge_tables(valid):
    table = _results_table(valid)
    cases = {"no-rows": table[:0], "one-row": table[:1]}
    every_one = table.copy()
    every_one["detection_sep"] = 1  # no central galaxy in the 'detected' selection
    cases["detection-all-1"] = every_one
    none_assigned = table.copy()
    none_assigned["detection_sep"] = -1
    cases["detection-all-minus-1"] = none_assigned
    undetected = table.copy()
    undetected["g1_flux_sep"] = np.nan
    undetected["g2_flux_sep"] = np.nan
    cases["nothing-detected"] = undetected
    return cases


@pytest.mark.parametrize("case", ["no-rows", "one-row", "detection-all-1", "detection-all-minus-1",
                                  "nothing-detected"])
def test_evaluate_writes_a_complete_report_on_empty_selections(valid, tmp_path, case):
    from napari_blendphot.report.evaluate import evaluate, read_manifest
    from napari_blendphot.report.results import write_results

    table = _edge_tables(valid)[case]
    write_results(table, tmp_path / "res")
    assert main(["evaluate", str(tmp_path / "res.csv"), "-o", str(tmp_path / "report")]) == 0
    report = evaluate(tmp_path / "res.csv", tmp_path / "again")
    assert read_manifest(tmp_path / "report")["complete"]
    assert len(report.figures) >= 5 and all(p.is_file() and p.stat().st_size > 0 for p in report.paths)
    text = report.markdown_path.read_text()
    assert "## Provenance" in text
    if case != "one-row":
        assert "no data" in text


def test_evaluate_on_a_one_blend_test_split(valid, tmp_path):
    """A dataset whose test split holds one blend: blend -> predict (SEP) -> evaluate."""
    from napari_blendphot.blend.dataset import BlendDataset
    from napari_blendphot.deblend.base import DeblendOutput
    from napari_blendphot.report.evaluate import evaluate
    from napari_blendphot.report.results import build_results_table

    dataset = BlendDataset(valid["dataset"])
    view = dataset.select(split="test", index=[int(dataset.indices("test")[0])])
    output = DeblendOutput("sep", view.fluxes * 1.1, extra={"detection": np.array([0], np.int8)})
    table = build_results_table(view.catalog, [output], provenance={"step": "test"})
    report = evaluate(table, tmp_path / "report")
    assert all(p.is_file() for p in report.paths)
    assert "no data" in report.markdown_path.read_text()  # companions: none in the selection


# -- item 7: one line instead of a traceback; checks before computing -----------------------------

def test_read_only_output_location_is_one_line_before_computing(valid, tmp_path, capsys, monkeypatch):
    import napari_blendphot.outputs as outputs
    import napari_blendphot.sample.io as sample_io

    # /proc takes no new files, for root as well: a real read-only location.
    _refused(["blend", valid["native"], "-n", "4", "--seed", "1", "-o", "/proc/blendphot-out"], capsys,
             "cannot write in '/proc'")
    _refused(["evaluate", valid["results"], "-o", "/proc/blendphot-report"], capsys, "cannot write in '/proc'")
    _refused(["make-sample", "-n", "2", "--seed", "1", "-o", "/proc/x.fits"], capsys, "cannot write in '/proc'")
    # A read-only file system (EROFS) answers the probe: refused before the sample is read.
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(outputs.os, "open", read_only)
    monkeypatch.setattr(sample_io, "load_sample", lambda *a: pytest.fail("computed before checking the output"))
    _refused(["blend", valid["native"], "-n", "4", "--seed", "1", "-o", tmp_path / "ds"], capsys,
             "Read-only file system")


def test_output_under_a_file_is_refused_before_computing(valid, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    before = tree_digest(tmp_path)
    for argv in (["blend", valid["native"], "-n", "4", "--seed", "1", "-o", a_file / "ds"],
                 ["evaluate", valid["results"], "-o", a_file / "report"],
                 ["make-sample", "-n", "2", "--seed", "1", "-o", a_file / "s.fits"]):
        _refused(argv, capsys, "is a file, not a folder")
    assert tree_digest(tmp_path) == before


def test_any_oserror_of_a_command_is_one_line(valid, tmp_path, capsys, monkeypatch):
    import napari_blendphot.report.evaluate as evaluate_module

    def broken(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "report" / "summary.csv"))

    monkeypatch.setattr(evaluate_module, "summary_table", broken)
    _refused(["evaluate", valid["results"], "-o", tmp_path / "report"], capsys, "summary.csv: Permission denied")


def test_output_piped_into_a_closed_pipe_ends_quietly(valid):
    process = subprocess.Popen([sys.executable, "-m", "napari_blendphot.cli", "info", str(valid["dataset"])],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # `| head -0`: the reader is gone before the first line
    code = process.wait(timeout=120)
    err = process.stderr.read().decode()
    assert code == 141, err
    assert err == "", err


def test_info_on_a_fifo_is_not_called_a_folder(tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _refused(["info", fifo], capsys, "neither a file nor a folder")
    _refused(["blend", fifo, "-n", "4", "--seed", "1", "-o", tmp_path / "ds"], capsys, "neither a file nor a folder")


def test_huge_or_non_integer_blend_counts_are_refused_at_once(valid, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["blend", str(valid["native"]), "-n", "1e20", "--seed", "1", "-o", str(tmp_path / "ds")])
    assert info.value.code == 2 and "invalid int value" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_fetch_checks_free_space_before_downloading(tmp_path, capsys, monkeypatch):
    import napari_blendphot.outputs as outputs

    monkeypatch.setattr(outputs, "free_bytes", lambda folder: 50 * 1000**2)
    _refused(["fetch-candels", "--cache-dir", tmp_path / "cache", "--url", "http://127.0.0.1:9/none.tar.gz"], capsys,
             "not enough free space")
    assert not (tmp_path / "cache" / "candels-blender-data.tar.gz").exists()
