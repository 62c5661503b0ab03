"""fetch-candels end to end against a loopback HTTP server, plus hostile and corrupted archives."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading

import numpy as np
import pytest

from napari_blendphot.cli import main
from napari_blendphot.errors import InputError
from napari_blendphot.sample import fetch
from napari_blendphot.sample.fetch import ARCHIVE_NAME, extract_archive, fetch_candels
from napari_blendphot.sample.galaxy_sample import GalaxySample
from napari_blendphot.sample.io_candels import read_candels, write_candels_layout


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture()
def server(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving tmp_path/'www'; yields (base_url, folder)."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def toy_candels_archive(tmp_path_factory):
    """12 toy galaxies in the Zenodo layout (bytes-literal FIELD), packed like the real archive."""
    from napari_blendphot.sample.toy import make_toy_sample

    base = make_toy_sample(12, seed=21)
    catalog = base.catalog.copy()
    catalog["field"] = ["COSMOS", "UDS", "GOODS-S"] * 4
    sample = GalaxySample(base.images, base.segmaps, catalog)
    root = tmp_path_factory.mktemp("archive")
    write_candels_layout(sample, root / "candels-blender-data")
    archive = root / ARCHIVE_NAME
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "candels-blender-data", arcname="candels-blender-data")
    return archive, sample


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_end_to_end(server, toy_candels_archive, tmp_path):
    base_url, www = server
    archive, sample = toy_candels_archive
    (www / ARCHIVE_NAME).write_bytes(archive.read_bytes())
    url = f"{base_url}/{ARCHIVE_NAME}"
    progress = fetch.StderrProgress(stream=io.StringIO())
    folder = fetch_candels(cache_dir=tmp_path / "cache", url=url, sha256=_sha256(archive), progress=progress)
    assert folder == tmp_path / "cache" / "candels-blender-data" / "candels-blender-data"
    assert "(100%)" in progress.stream.getvalue()
    loaded = read_candels(folder)
    assert loaded.images.tobytes() == sample.images.tobytes()
    assert list(loaded.catalog["field"]) == ["COSMOS", "UDS", "GOODS-S"] * 4
    # Second call: cached, no download (the server no longer has the file).
    (www / ARCHIVE_NAME).unlink()
    assert fetch_candels(cache_dir=tmp_path / "cache", url=url, progress=False) == folder
    assert fetch_candels(cache_dir=tmp_path / "cache", url=url, sha256=_sha256(archive), progress=False) == folder


def test_fetch_cli_uses_env_cache_and_prints_summary(server, toy_candels_archive, tmp_path, monkeypatch, capsys):
    base_url, www = server
    archive, _ = toy_candels_archive
    (www / ARCHIVE_NAME).write_bytes(archive.read_bytes())
    monkeypatch.setenv("BLENDPHOT_DATA_DIR", str(tmp_path / "envcache"))
    code = main(["fetch-candels", "--url", f"{base_url}/{ARCHIVE_NAME}", "--sha256", _sha256(archive),
                 "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "12 isolated galaxies" in out
    assert (tmp_path / "envcache" / ARCHIVE_NAME).is_file()
    assert str(tmp_path / "envcache") in err
    assert fetch.unpacked_archive_sha256() == _sha256(archive)
    # --force downloads and unpacks again.
    code = main(["fetch-candels", "--url", f"{base_url}/{ARCHIVE_NAME}", "--force", "--no-progress"])
    assert code == 0
    assert f"archive sha256: {_sha256(archive)}" in capsys.readouterr().err


def test_fetch_rejects_corrupted_download(server, toy_candels_archive, tmp_path, capsys):
    base_url, www = server
    archive, _ = toy_candels_archive
    good_hash = _sha256(archive)
    corrupted = bytearray(archive.read_bytes())
    corrupted[len(corrupted) // 2] ^= 0xFF
    (www / ARCHIVE_NAME).write_bytes(bytes(corrupted))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "keep.txt").write_text("user file")
    with pytest.raises(InputError, match="checksum mismatch") as info:
        fetch_candels(cache_dir=cache, url=f"{base_url}/{ARCHIVE_NAME}", sha256=good_hash, progress=False)
    assert base_url in str(info.value)
    # The bad file is gone; nothing else was touched.
    assert sorted(p.name for p in cache.iterdir()) == ["keep.txt"]
    assert (cache / "keep.txt").read_text() == "user file"
    # The CLI turns it into one line and exit code 2.
    code = main(["fetch-candels", "--cache-dir", str(cache), "--url", f"{base_url}/{ARCHIVE_NAME}",
                 "--sha256", good_hash, "--no-progress"])
    assert code == 2
    assert "checksum mismatch" in capsys.readouterr().err


def test_fetch_reports_http_errors_and_bad_hash_argument(server, tmp_path):
    base_url, _ = server
    with pytest.raises(InputError, match="download failed") as info:
        fetch_candels(cache_dir=tmp_path / "c", url=f"{base_url}/missing.tar.gz", progress=False)
    assert "missing.tar.gz" in str(info.value)
    with pytest.raises(InputError, match="not a SHA-256"):
        fetch_candels(cache_dir=tmp_path / "c", url=f"{base_url}/x", sha256="abc", progress=False)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BLENDPHOT_DATA_DIR", str(tmp_path / "env"))
    assert fetch.default_cache_dir() == tmp_path / "env"
    assert fetch.default_cache_dir(tmp_path / "opt") == tmp_path / "opt"
    monkeypatch.delenv("BLENDPHOT_DATA_DIR")
    assert "napari-blendphot" in str(fetch.default_cache_dir())


# -- hostile archives ----------------------------------------------------------------------

def _archive_with(path, add):
    with tarfile.open(path, "w:gz") as tar:
        data = b"hello"
        info = tarfile.TarInfo("candels-blender-data/candels_cat.csv")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        add(tar)
    return path


def _file(name, data=b"evil"):
    def add(tar):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return add


def _special(name, kind, linkname=""):
    def add(tar):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        tar.addfile(info)
    return add


@pytest.mark.parametrize(
    ("add", "member", "reason"),
    [
        (_file("../evil.txt"), "../evil.txt", "outside"),
        (_file("candels-blender-data/../../evil.txt"), "candels-blender-data/../../evil.txt", "outside"),
        (_file("/tmp/blendphot-evil.txt"), "/tmp/blendphot-evil.txt", "absolute path"),
        (_special("candels-blender-data/link", tarfile.SYMTYPE, "/etc/passwd"), "candels-blender-data/link", "link"),
        (_special("candels-blender-data/hard", tarfile.LNKTYPE, "../evil.txt"), "candels-blender-data/hard", "link"),
        (_special("candels-blender-data/fifo", tarfile.FIFOTYPE), "candels-blender-data/fifo", "not a regular"),
        (_special("candels-blender-data/dev", tarfile.CHRTYPE), "candels-blender-data/dev", "not a regular"),
    ],
)
def test_extract_refuses_hostile_members(tmp_path, add, member, reason):
    archive = _archive_with(tmp_path / "hostile.tar.gz", add)
    work = tmp_path / "work"
    work.mkdir()
    target = work / "cache" / "candels-blender-data"
    target.parent.mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(InputError, match=reason) as info:
        extract_archive(archive, target)
    assert repr(member) in str(info.value) and "hostile.tar.gz" in str(info.value)
    # Nothing written anywhere: not the target, not beside it, not outside it.
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "evil.txt").exists() and not (work / "evil.txt").exists()


def test_fetch_refuses_hostile_archive_served_over_http(server, tmp_path):
    base_url, www = server
    _archive_with(www / ARCHIVE_NAME, _file("../evil.txt"))
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="'../evil.txt'"):
        fetch_candels(cache_dir=cache, url=f"{base_url}/{ARCHIVE_NAME}", progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in cache.iterdir()) == [ARCHIVE_NAME]


def test_extract_leaves_foreign_folder_alone(toy_candels_archive, tmp_path):
    archive, _ = toy_candels_archive
    target = tmp_path / "candels-blender-data"
    target.mkdir()
    (target / "mine.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(InputError, match="not made by fetch-candels"):
            extract_archive(archive, target, force=force)
    assert (target / "mine.txt").read_text() == "mine"


def test_extract_rejects_archive_without_data(tmp_path):
    archive = _archive_with(tmp_path / "empty.tar.gz", lambda tar: None)
    with pytest.raises(InputError, match="no candels_img.npy"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(InputError, match="cannot unpack"):
        extract_archive(damaged, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_stderr_progress_prints_every_five_percent():
    stream = io.StringIO()
    bar = fetch.StderrProgress("x", stream=stream)
    bar.total = 1000
    for _ in range(100):
        bar.update(10)
    lines = stream.getvalue().splitlines()
    assert lines[-1].endswith("(100%)")
    assert 15 <= len(lines) <= 21
    bar.reset()
    assert bar.count == 0
    np.testing.assert_equal(bar.total, 1000)


def test_fetch_uses_archive_copied_by_hand(toy_candels_archive, tmp_path):
    archive, sample = toy_candels_archive
    cache = tmp_path / "offline"
    cache.mkdir()
    (cache / ARCHIVE_NAME).write_bytes(archive.read_bytes())
    # Port 9 on loopback: nothing listens, so any download attempt would fail.
    folder = fetch_candels(cache_dir=cache, url=f"http://127.0.0.1:9/{ARCHIVE_NAME}",
                           sha256=_sha256(archive), progress=False)
    assert read_candels(folder).images.tobytes() == sample.images.tobytes()


def test_progress_falls_back_without_tqdm(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes "import tqdm" fail
    assert isinstance(fetch._progressbar(True), fetch.StderrProgress)
    assert fetch._progressbar(False) is False


def test_fetch_candels_sample_returns_sample(server, toy_candels_archive, tmp_path):
    base_url, www = server
    archive, sample = toy_candels_archive
    (www / ARCHIVE_NAME).write_bytes(archive.read_bytes())
    loaded = fetch.fetch_candels_sample(cache_dir=tmp_path / "c", url=f"{base_url}/{ARCHIVE_NAME}",
                                        sha256=_sha256(archive), progress=False)
    assert len(loaded) == 12 and np.array_equal(loaded.ids, sample.ids)
    assert loaded.provenance["step"] == "read-candels"
