"""Hostile files: archives that reach outside their folder or fill the disk, pickles, code in model files.

Covered elsewhere and not repeated here:

- ``tests/test_fetch.py::test_extract_refuses_hostile_members``: ``..`` and
  absolute member paths, symbolic and hard links, FIFOs and devices; nothing
  is written anywhere; ``test_extract_leaves_foreign_folder_alone``;
  ``test_fetch_refuses_hostile_archive_served_over_http``.
- ``tests/test_models_io.py::test_lambda_layer_is_refused_in_safe_mode`` and
  ``test_unregistered_custom_layer_is_reported`` (a real Keras model with a
  Lambda layer / an unknown class), ``test_truncated_file``,
  ``test_flipped_bytes_are_detected``, ``test_wrong_architecture_for_the_role``.
- ``tests/test_reliability_corpus.py``: object arrays in the CANDELS and
  blend-dataset ``.npy`` files are refused.

Added here: the unpacking limits (tar bomb, member count), a link planted at
the staging path, pickle payloads that must never run, a source scan for
unsafe loaders, and the Lambda refusal happening before Keras is imported.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_blendphot.testing.corpus import copy_input, toy_sample, tree_digest, write_valid_inputs
from napari_blendphot.errors import InputError

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_blendphot"


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _valid_members() -> dict[str, bytes]:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((1, 128, 128), np.float32))
    return {"candels-blender-data/candels_img.npy": buffer.getvalue(),
            "candels-blender-data/candels_cat.csv": b"ID\n1\n"}


# -- archives ----------------------------------------------------------------------------------

def test_tar_bomb_is_refused_before_writing(tmp_path, monkeypatch):
    from napari_blendphot.sample import fetch

    monkeypatch.setattr(fetch, "MAX_UNPACKED_BYTES", 50_000)  # the real limit is 8 GiB; same code path
    members = _valid_members()
    members["candels-blender-data/zeros.bin"] = bytes(60_000)
    archive = _archive(tmp_path / "bomb.tar.gz", members)
    target = tmp_path / "cache" / "candels-blender-data"
    target.parent.mkdir()
    before = tree_digest(tmp_path)
    with pytest.raises(InputError, match=r"bomb\.tar\.gz: refusing an archive that unpacks to more than 50,000 bytes"):
        fetch.extract_archive(archive, target)
    assert tree_digest(tmp_path) == before


def test_archive_of_too_many_members_is_refused(tmp_path, monkeypatch):
    from napari_blendphot.sample import fetch

    monkeypatch.setattr(fetch, "MAX_MEMBERS", 5)
    members = _valid_members()
    members.update({f"candels-blender-data/junk{i}": b"x" for i in range(10)})
    archive = _archive(tmp_path / "many.tar.gz", members)
    target = tmp_path / "cache" / "candels-blender-data"
    target.parent.mkdir()
    before = tree_digest(tmp_path)
    with pytest.raises(InputError, match="more than 5 members"):
        fetch.extract_archive(archive, target)
    assert tree_digest(tmp_path) == before


def test_link_planted_at_the_staging_path_is_not_followed(tmp_path):
    """A symlink where the unpacker stages its work must be removed, never followed or emptied."""
    from napari_blendphot.sample.fetch import extract_archive

    archive = _archive(tmp_path / "ok.tar.gz", _valid_members())
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".candels-blender-data.partial").symlink_to(victim, target_is_directory=True)
    before = tree_digest(victim)
    folder = extract_archive(archive, cache / "candels-blender-data")
    assert (folder / "candels_img.npy").is_file()
    assert tree_digest(victim) == before
    assert not (victim / "candels-blender-data").exists()


# -- pickles -----------------------------------------------------------------------------------

class _Payload:
    """Unpickling this calls ``open(marker, 'w')``: a file appearing means code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickled_npy(path: Path, marker: Path) -> None:
    array = np.empty(3, dtype=object)
    array[:] = [_Payload(marker)] * 3
    np.save(path, array, allow_pickle=True)


@pytest.mark.parametrize("where", ["candels_img.npy", "candels_seg.npy", "blends.npy", "masks.npy"])
def test_pickle_payload_in_npy_never_runs(where, tmp_path):
    from napari_blendphot.blend.dataset import BlendDataset
    from napari_blendphot.sample.io import load_sample

    valid = write_valid_inputs(tmp_path / "valid")
    kind = "candels" if where.startswith("candels") else "dataset"
    (tmp_path / "case").mkdir()
    folder = copy_input(valid[kind], tmp_path / "case")
    marker = tmp_path / "code-ran.txt"
    _pickled_npy(folder / where, marker)
    # The payload is real: numpy with allow_pickle=True would run it.
    np.load(folder / where, allow_pickle=True)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(InputError, match=where):
        (load_sample if kind == "candels" else BlendDataset)(folder)
    assert not marker.exists()


def test_no_unsafe_loader_in_the_package():
    """Every ``np.load`` forbids pickles (explicitly, or by memory-mapping); no pickle/eval/exec/yaml loaders.

    ``deblend/engine.py`` and ``deblend/_worker.py`` exchange pickles over a
    pipe with the worker process they started themselves (never with a file),
    which is why ``pickle.dumps`` appears there; nothing unpickles a file.
    """
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            where = f"{path.relative_to(SRC)}:{number}: {line.strip()}"
            if re.search(r"\bnp\.load\(|\bnumpy\.load\(", code):
                if "allow_pickle=True" in code or not ("allow_pickle=False" in code or "mmap_mode=" in code):
                    problems.append(where)
            if re.search(r"\bpickle\.loads?\(|\bmarshal\.loads?\(|\byaml\.load\(|(?<![\w.])eval\(|(?<![\w.])exec\(",
                         code):
                problems.append(where)
            if "allow_pickle=True" in code or "shell=True" in code:
                problems.append(where)
    assert not problems, "unsafe loaders:\n" + "\n".join(problems)


# -- Keras model files -------------------------------------------------------------------------

def _keras_zip(path: Path, config: dict) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
        archive.writestr("model.weights.h5", b"")
    return path


def test_lambda_layer_is_refused_before_keras_is_imported(tmp_path):
    """The safe-mode check reads the archive's config.json: a hostile file never reaches Keras."""
    config = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 128, 128]}},
        {"class_name": "Lambda", "config": {"function": {"class_name": "__lambda__",
                                                          "config": {"code": "b3Blbigndy', 'w')"}}}}]}}
    path = _keras_zip(tmp_path / "hostile.keras", config)
    code = (
        "import sys\n"
        "from napari_blendphot.errors import InputError\n"
        "from napari_blendphot.models.io import load_model\n"
        f"try:\n    load_model({str(path)!r})\nexcept InputError as e:\n    print('REFUSED', e)\n"
        "print('KERAS', 'keras' in sys.modules, 'tensorflow' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "REFUSED" in done.stdout and "Lambda layer" in done.stdout and "hostile.keras" in done.stdout, done
    assert "KERAS False False" in done.stdout, done.stdout


@pytest.mark.parametrize("case, content, problem", [
    ("html-page", b"<html>404 not found</html>", "not a zip file"),
    ("cut-download", b"PK\x03\x04" + bytes(100), "truncated or corrupted"),
    ("zip-of-other-things", None, "not a Keras model archive"),
    ("config-not-json", "config", "is corrupted"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 30 else "")
def test_weights_files_refused_without_keras(case, content, problem, tmp_path):
    """Damaged weights are caught by reading the archive, before Keras (cheap, and no Keras code runs)."""
    from napari_blendphot.models.io import read_keras_config

    path = tmp_path / "weights.keras"
    if content is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "hello")
    elif content == "config":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("config.json", b"\xff\xfe not json")
            archive.writestr("metadata.json", "{}")
    else:
        path.write_bytes(content)
    before = tree_digest(tmp_path)
    with pytest.raises(InputError, match=re.escape(problem)) as info:
        read_keras_config(path)
    assert "weights.keras" in str(info.value)
    assert tree_digest(tmp_path) == before
