"""napari_blendphot.atomic: unique temporaries, no-replace installs, folder swaps, stale-partial clean-up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from napari_blendphot import atomic
from napari_blendphot.atomic import (
    atomic_output,
    display_path,
    final_name,
    install_file,
    install_folder,
    is_partial_name,
    make_partial_folder,
    partial_name,
    remove_stale_partials,
    write_text_atomic,
)
from napari_blendphot.errors import OutputExistsError


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def test_partial_names_are_unique_hidden_and_map_back_to_the_output(tmp_path):
    names = {partial_name(tmp_path / "report.md").name for _ in range(50)}
    assert len(names) == 50
    name = partial_name(tmp_path / "fig.png", ".png").name
    assert name.startswith(".fig.png.partial-") and name.endswith(".png") and is_partial_name(name)
    assert final_name(name) == "fig.png" and final_name("fig.png") == "fig.png"
    assert display_path(tmp_path / ".ds.partial-12-ab" / "blends.npy") == str(tmp_path / "ds" / "blends.npy")


def test_atomic_output_installs_on_success_and_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "first\n")
    assert target.read_text() == "first\n"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temporary left


def test_atomic_output_keeps_the_extension_for_format_detection(tmp_path):
    with atomic_output(tmp_path / "t.fits") as tmp:
        assert tmp.suffix == ".fits" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")


def test_no_replace_refuses_a_file_that_appeared_meanwhile(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(OutputExistsError):
        with atomic_output(target, replace=False) as tmp:
            tmp.write_text("mine")
            target.write_text("the other run's")  # another process won the race
    assert target.read_text() == "the other run's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_install_file_without_hard_links_falls_back_to_check_then_rename(tmp_path, monkeypatch):
    def no_links(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    tmp = tmp_path / "a.partial"
    tmp.write_text("new")
    install_file(tmp, tmp_path / "a", replace=False)
    assert (tmp_path / "a").read_text() == "new" and not tmp.exists()
    tmp.write_text("newer")
    with pytest.raises(OutputExistsError):
        install_file(tmp, tmp_path / "a", replace=False)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_install_folder(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "rename2", lambda *args: False)

    def staged(text):
        folder = make_partial_folder(tmp_path / "out")
        (folder / "data.txt").write_text(text)
        return folder

    out = tmp_path / "out"
    install_folder(staged("one"), out, replace=False)
    assert (out / "data.txt").read_text() == "one"
    # Without replace a non-empty folder is never touched.
    second = staged("two")
    with pytest.raises(OutputExistsError):
        install_folder(second, out, replace=False)
    assert (out / "data.txt").read_text() == "one" and second.is_dir()
    # With replace: swapped, and the old content handed to remove_old under a temporary name.
    seen = []

    def remove_old(old):
        seen.append((old.name, (old / "data.txt").read_text()))
        (old / "data.txt").unlink()
        old.rmdir()

    install_folder(second, out, replace=True, remove_old=remove_old)
    assert (out / "data.txt").read_text() == "two"
    assert seen and is_partial_name(seen[0][0]) and seen[0][1] == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # An empty folder is replaced without replace=True: nothing to lose.
    empty = tmp_path / "empty"
    empty.mkdir()
    install_folder(staged("three"), empty, replace=False)
    assert (empty / "data.txt").read_text() == "three"


def test_remove_stale_partials_removes_only_dead_writers_temporaries(tmp_path):
    dead = _dead_pid()
    stale_file = tmp_path / f".out.csv.partial-{dead}-00aa.csv"
    stale_folder = tmp_path / f".ds.partial-{dead}-00bb"
    live = tmp_path / f".out.csv.partial-{os.getpid()}-00cc.csv"
    other = tmp_path / ".ds.partial-notapid"
    user = tmp_path / "notes.partial-1-2.txt"  # not hidden: not ours
    for path in (stale_file, live, user):
        path.write_text("x")
    for path in (stale_folder, other):
        path.mkdir()
    (stale_folder / "blends.npy").write_bytes(b"\0" * 10)
    removed = remove_stale_partials(tmp_path)
    assert sorted(p.name for p in removed) == sorted([stale_file.name, stale_folder.name])
    assert live.exists() and other.exists() and user.exists()
    # limited to one output's temporaries
    again = tmp_path / f".other.partial-{dead}-00dd"
    again.write_text("x")
    assert remove_stale_partials(tmp_path, "ds") == [] and again.exists()
