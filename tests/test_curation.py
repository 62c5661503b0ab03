"""Curation core: the decision sidecar (atomic, resumable, guarded), the model, the export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from napari_blendphot.curation import (
    REASONS,
    CorruptSidecarError,
    CurationModel,
    DecisionStore,
    default_sidecar_path,
    export_accepted,
)
from napari_blendphot.errors import InputError, OutputExistsError


@pytest.fixture(scope="module")
def sample():
    from napari_blendphot.sample.toy import make_toy_sample

    return make_toy_sample(30, seed=7)


@pytest.fixture
def sample_file(tmp_path, sample):
    from napari_blendphot.sample.io_native import write_native

    return write_native(sample, tmp_path / "sample.fits")


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_decisions_saved_at_once_and_resumed(tmp_path, sample):
    path = tmp_path / "s.curation.jsonl"
    store = DecisionStore(path, sample, reviewer="ada")
    ids = sample.ids
    store.decide(ids[0], "accept")
    store.decide(ids[1], "reject", reason=REASONS[3], note="cosmic ray")
    # On disk before any close: header + 2 records.
    lines = _lines(path)
    header = json.loads(lines[0])
    assert header["format"] == "blendphot-curation" and header["sample"]["n_galaxies"] == len(sample)
    second = json.loads(lines[2])
    assert second["id"] == int(ids[1]) and second["decision"] == "reject" and second["reason"] == "artefacts"
    assert second["note"] == "cosmic ray" and second["reviewer"] == "ada" and second["time"].endswith("+00:00")

    again = DecisionStore(path, sample)
    assert again.resume_index() == 2
    model = CurationModel(sample, again)
    assert model.index == 2
    assert model.progress()["reviewed"] == 2 and model.progress()["undecided"] == len(sample) - 2


def test_resume_skips_to_first_never_decided(tmp_path, sample):
    store = DecisionStore(tmp_path / "c.jsonl", sample)
    for galaxy_id in sample.ids[:3]:
        store.decide(galaxy_id, "skip")
    store.decide(sample.ids[5], "accept")
    assert DecisionStore(tmp_path / "c.jsonl", sample).resume_index() == 3


def test_undo_is_persisted_and_restores_previous_decision(tmp_path, sample):
    path = tmp_path / "u.jsonl"
    model = CurationModel(sample, DecisionStore(path, sample))
    first = model.galaxy_id
    model.reject(1)
    assert model.index == 1
    model.go_to(0)
    model.accept()  # change of mind
    assert model.store.decision_of(first).decision == "accept"
    undone = model.undo()
    assert undone.decision == "accept" and model.index == 0
    reopened = DecisionStore(path, sample)
    assert reopened.decision_of(first).decision == "reject"
    assert reopened.decision_of(first).reason == REASONS[0]
    assert reopened.undo().decision == "reject"
    assert DecisionStore(path, sample).decision_of(first) is None
    assert DecisionStore(path, sample).undo() is None


def test_filters_match_numpy(tmp_path, sample):
    model = CurationModel(sample, DecisionStore(tmp_path / "f.jsonl", sample))
    model.accept()
    model.reject("my own reason")
    model.skip()
    model.reject(2)
    types = np.asarray(sample.catalog["galtype"]).astype(str)
    mags = np.asarray(sample.catalog["mag"], float)
    model.set_filter("rejected")
    assert model.filtered_rows().tolist() == [1, 3]
    model.set_filter("undecided")
    assert model.filtered_rows().tolist() == [2] + list(range(4, len(sample)))
    model.set_filter("all", galtypes=("disk", "irr"), mag_min=20.0, mag_max=22.5)
    expected = np.flatnonzero(np.isin(types, ["disk", "irr"]) & (mags >= 20.0) & (mags <= 22.5))
    assert model.filtered_rows().tolist() == expected.tolist()
    # next / previous walk the filtered rows only
    model.go_to(0)
    walked = []
    while model.next():
        walked.append(model.index)
    assert walked == [r for r in expected.tolist() if r > 0]
    while model.previous():
        pass
    assert model.index == expected[0] if expected[0] < walked[-1] else True
    with pytest.raises(InputError):
        model.set_filter("maybe")
    with pytest.raises(InputError):
        model.set_filter(galtypes=["spiral"])


def test_type_change_pending_then_saved_and_applied_on_export(tmp_path, sample, sample_file):
    from napari_blendphot.sample.io import load_sample

    store = DecisionStore(default_sidecar_path(sample_file), sample)
    assert store.path.name == "sample.fits.curation.jsonl"
    model = CurationModel(sample, store)
    original = model.galtype
    new_type = model.cycle_type()
    assert new_type != original and model.pending_galtype == new_type
    assert store.decision_of(model.galaxy_id) is None  # waits for the decision
    model.set_note("bar-like")
    changed_id = model.galaxy_id
    model.accept()
    record = store.decision_of(changed_id)
    assert record.galtype == new_type and record.note == "bar-like"
    # on a decided galaxy a type change is saved at once
    model.go_to(0)
    model.set_type(original)
    assert DecisionStore(store.path, sample).decision_of(changed_id).galtype is None
    model.set_type(new_type)
    for _ in range(4):
        model.accept()
    model.reject(4)

    out = export_accepted(sample, store, tmp_path / "curated.fits")
    curated = load_sample(out)
    accepted = [i for i, r in store.current.items() if r.decision == "accept"]
    assert sorted(curated.ids.tolist()) == sorted(accepted) and len(curated) == 4  # row 0 re-accepted, rows 1-3
    row = curated.index_of(changed_id)
    assert curated.catalog["galtype"][row] == new_type
    assert curated.catalog["galtype_original"][row] == original
    assert np.array_equal(curated.images[row], sample.images[sample.index_of(changed_id)])
    prov = curated.provenance
    assert prov["step"] == "curate-export"
    assert prov["inputs"]["sidecar"]["sha256"] == store.sha256()
    assert prov["parameters"]["counts"]["accept"] == 4 and prov["parameters"]["counts"]["reject"] == 1
    assert prov["parameters"]["type_changes"] == {str(changed_id): [original, new_type]}
    assert prov["parameters"]["reviewers"] == store.reviewers()
    with pytest.raises(OutputExistsError):
        export_accepted(sample, store, out)


def test_export_then_blend(tmp_path, sample):
    from napari_blendphot.blend.dataset import BlendDataset, write_blend_dataset
    from napari_blendphot.clean.neighbours import clean_sample
    from napari_blendphot.sample.io import load_sample

    store = DecisionStore(tmp_path / "b.jsonl", sample)
    for galaxy_id in sample.ids[:20]:
        store.decide(galaxy_id, "accept")
    out = export_accepted(sample, store, tmp_path / "curated.fits")
    curated = clean_sample(load_sample(out), seed=3)
    folder = write_blend_dataset(curated, tmp_path / "blends", n=12, test_fraction=0.25, seed=3, sample_path=out)
    dataset = BlendDataset(folder)
    assert len(dataset) == 12
    used = set(np.asarray(dataset.catalog["g1_id"]).tolist()) | set(np.asarray(dataset.catalog["g2_id"]).tolist())
    assert used <= set(sample.ids[:20].tolist())


def test_export_nothing_accepted(tmp_path, sample):
    store = DecisionStore(tmp_path / "n.jsonl", sample)
    store.decide(sample.ids[0], "reject", reason="artefacts")
    with pytest.raises(InputError, match="nothing to export"):
        export_accepted(sample, store, tmp_path / "x.fits")
    assert not (tmp_path / "x.fits").exists()


def test_sidecar_of_another_sample_is_refused_unchanged(tmp_path, sample):
    from napari_blendphot.sample.toy import make_toy_sample

    path = tmp_path / "other.jsonl"
    store = DecisionStore(path, sample)
    store.decide(sample.ids[0], "accept")
    before = path.read_bytes()
    other = make_toy_sample(25, seed=8)
    with pytest.raises(InputError, match="another sample"):
        DecisionStore(path, other)
    # same ids, other pixels
    same_ids = sample[np.arange(len(sample))]
    same_ids.images = same_ids.images + np.float32(1.0)
    with pytest.raises(InputError, match="different pixels"):
        DecisionStore(path, same_ids)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.jsonl"]


def test_not_a_sidecar_is_refused(tmp_path, sample):
    path = tmp_path / "notes.txt"
    path.write_text("shopping list\n")
    with pytest.raises(InputError, match="not a curation sidecar"):
        DecisionStore(path, sample, repair=True)
    assert path.read_text() == "shopping list\n"


def test_corrupted_sidecar_backup_and_repair(tmp_path, sample):
    path = tmp_path / "bad.jsonl"
    store = DecisionStore(path, sample)
    for galaxy_id in sample.ids[:4]:
        store.decide(galaxy_id, "accept")
    lines = _lines(path)
    lines[2] = lines[2][:25]  # a damaged record in the middle
    damaged = "\n".join(lines) + '\n{"id": 99999999, "decis'  # and a half-written tail
    path.write_text(damaged)
    with pytest.raises(CorruptSidecarError, match="damaged") as info:
        DecisionStore(path, sample)
    assert info.value.readable == 3 and info.value.unreadable == 2
    assert path.read_text() == damaged  # untouched without repair

    repaired = DecisionStore(path, sample, repair=True)
    assert repaired.backup_path.read_text() == damaged
    assert repaired.backup_path.name.startswith("bad.jsonl.damaged-")
    assert len(repaired.repair_problems) == 2
    kept = [r.id for r in repaired.records]
    assert kept == [int(sample.ids[0]), int(sample.ids[2]), int(sample.ids[3])]
    # the repaired file reads cleanly
    assert [r.id for r in DecisionStore(path, sample).records] == kept


def test_bad_decisions_are_refused(tmp_path, sample):
    store = DecisionStore(tmp_path / "r.jsonl", sample)
    with pytest.raises(InputError, match="needs a reason"):
        store.decide(sample.ids[0], "reject")
    with pytest.raises(InputError, match="not in the sample"):
        store.decide(-5, "accept")
    with pytest.raises(InputError, match="unknown decision"):
        store.decide(sample.ids[0], "maybe")
    with pytest.raises(InputError, match="galtype"):
        store.decide(sample.ids[0], "accept", galtype="spiral")
    assert store.records == []


def test_cleaned_stamp_is_seeded(tmp_path, sample):
    model = CurationModel(sample, DecisionStore(tmp_path / "c.jsonl", sample), clean_seed=11)
    first, mask = model.cleaned_stamp()
    second, _ = model.cleaned_stamp()
    assert np.array_equal(first, second) and mask.dtype == bool and mask[64, 64]


_CHILD = textwrap.dedent("""
    import sys
    from napari_blendphot.curation import DecisionStore
    from napari_blendphot.sample.io import load_sample

    sample = load_sample(sys.argv[1])
    store = DecisionStore(sys.argv[2], sample, reviewer="child")
    ids = [int(i) for i in sample.ids]
    decisions = ["accept", "reject", "skip"]
    k = 0
    print("ready", flush=True)
    while True:
        galaxy_id = ids[k % len(ids)]
        decision = decisions[(k // len(ids)) % 3]
        store.decide(galaxy_id, decision, reason="artefacts" if decision == "reject" else None, note=f"n{k}")
        print(f"saved {k} {galaxy_id} {decision}", flush=True)
        k += 1
""")


def test_sigkill_mid_session_loses_no_saved_decision(tmp_path, sample_file, sample):
    """A curation loop killed with SIGKILL: every decision reported saved is in the sidecar."""
    sidecar = tmp_path / "kill.curation.jsonl"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    process = subprocess.Popen([sys.executable, str(script), str(sample_file), str(sidecar)],
                               stdout=subprocess.PIPE, text=True, bufsize=1)
    reported = []
    try:
        assert process.stdout.readline().strip() == "ready"
        # Each decision is an fsync'ed atomic rewrite of the sidecar: on a loaded machine with a busy
        # disk 150 of them can take tens of seconds, so the deadline only guards against a hung child.
        deadline = time.monotonic() + 180
        while len(reported) < 150 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:  # the child died: its exit code says why (asserted below)
                break
            if line.startswith("saved"):
                reported.append(line.split())
        os.kill(process.pid, signal.SIGKILL)
        # lines already printed before the kill landed are reports too
        rest = process.stdout.read()
    finally:
        process.kill()
        process.wait()
    reported += [line.split() for line in rest.splitlines() if line.startswith("saved")]
    assert len(reported) >= 150
    assert process.returncode == -signal.SIGKILL

    store = DecisionStore(sidecar, sample)  # readable, no repair needed
    notes = [r.note for r in store.records]
    for _, k, galaxy_id, decision in reported:
        position = int(k)
        assert notes[position] == f"n{k}"
        assert store.records[position].id == int(galaxy_id) and store.records[position].decision == decision
    # at most the one decision in flight when killed is beyond the last report
    assert len(store.records) - len(reported) in (0, 1)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert len(leftovers) <= 1  # a temp file of the write in flight may remain; it is never read


def test_cli_curate_export(tmp_path, sample, sample_file, capsys):
    """``blendphot curate-export`` (called through its module; the lead lists it in cli/__init__)."""
    import argparse

    from napari_blendphot.cli import _curate
    from napari_blendphot.sample.io import load_sample

    parser = argparse.ArgumentParser()
    _curate.register(parser.add_subparsers())
    sidecar = default_sidecar_path(sample_file)
    store = DecisionStore(sidecar, sample, reviewer="cli")
    for galaxy_id in sample.ids[:7]:
        store.decide(galaxy_id, "accept")
    store.decide(sample.ids[7], "reject", reason="artefacts")
    out = tmp_path / "curated.fits"
    args = parser.parse_args(["curate-export", str(sample_file), str(sidecar), "-o", str(out)])
    assert args.func(args) == 0
    assert "wrote 7 accepted galaxies of 30" in capsys.readouterr().out
    assert len(load_sample(out)) == 7
    with pytest.raises(OutputExistsError):
        args.func(args)
    missing = parser.parse_args(["curate-export", str(sample_file), str(tmp_path / "nope.jsonl"), "-o",
                                 str(tmp_path / "x.fits")])
    with pytest.raises(InputError, match="not found"):
        missing.func(missing)
    assert not (tmp_path / "nope.jsonl").exists()


def test_second_session_on_the_same_sidecar_cannot_overwrite(tmp_path, sample):
    path = tmp_path / "shared.jsonl"
    first = DecisionStore(path, sample, reviewer="first")
    second = DecisionStore(path, sample, reviewer="second")
    first.decide(sample.ids[0], "accept")
    with pytest.raises(InputError, match="another curation session"):
        second.decide(sample.ids[1], "reject", reason="artefacts")
    assert second.records == []  # the refused decision is not kept in memory either
    assert [r.reviewer for r in DecisionStore(path, sample).records] == ["first"]
    first.decide(sample.ids[1], "skip")  # the session that wrote last goes on
    assert len(DecisionStore(path, sample).records) == 2


def test_export_is_reproducible(tmp_path, sample):
    store = DecisionStore(tmp_path / "r.jsonl", sample)
    store.decide(sample.ids[0], "accept", galtype="irr", note="knots")
    store.decide(sample.ids[3], "accept")
    first = export_accepted(sample, store, tmp_path / "one.fits")
    second = export_accepted(sample, store, tmp_path / "two.fits")
    assert first.read_bytes() == second.read_bytes()


def test_default_sidecar_paths(tmp_path, monkeypatch, sample_file):
    from napari_blendphot.sample.embedded import embedded_sample_path

    monkeypatch.chdir(tmp_path)
    assert default_sidecar_path(sample_file) == sample_file.with_name("sample.fits.curation.jsonl")
    assert default_sidecar_path(tmp_path) == tmp_path / "curation.jsonl"
    assert default_sidecar_path("embedded") == tmp_path / "embedded-sample.curation.jsonl"
    # the embedded file lives inside the package: never write beside it
    assert default_sidecar_path(embedded_sample_path()) == tmp_path / "embedded-sample.curation.jsonl"
    assert default_sidecar_path("toy sample (seed 7)") == tmp_path / "toy-sample-seed-7.curation.jsonl"
