"""``python -m training store``: a run folder whose model's weights are rounded to 16 bits and deflated.

The package holds its shipped weights within 40 MB.  A network larger than
the one it replaces can still fit if its large weight arrays are stored in
16 bits: :func:`~napari_blendphot.models.networks.round_weights` rounds every
array of 1,024 values or more to the nearest bfloat16 (or float16) value and
the deflated archive stores them in about half the bytes; biases and small
layers stay exact (round 4 measured why: a rounded bias shifts every flux
alike).  This command writes a new run folder -- the rounded
``model.keras``, the run's ``config.json`` and ``log.csv``, and its
``run.json`` with ``store`` and ``rounded_arrays`` added -- that
``blendphot predict --weights`` runs and ``python -m training ship`` ships
(recording ``store`` in the manifest's ``trained_on``).  Whether the rounding
changes the fluxes is for held-out blends to say before shipping.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from napari_blendphot.errors import InputError

#: 16-bit stores (the run's own model is float32).
PRECISIONS = ("bfloat16", "float16")


def store_run(run_dir, output, precision: str = "bfloat16") -> dict:
    """Write *output*: *run_dir* with its model's large weights rounded to *precision*; return its run.json.

    *output* must not exist (a run folder is a record: never replaced) and
    appears whole or not at all.
    """
    from napari_blendphot.models.io import load_model
    from napari_blendphot.models.networks import round_weights
    from napari_blendphot.provenance import sha256_file

    run_dir, output = Path(run_dir), Path(output)
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r}", f"is not one of {', '.join(PRECISIONS)}")
    for path in (run_dir / "model.keras", run_dir / "config.json", run_dir / "run.json"):
        if not path.is_file():
            raise InputError(path, "missing: a run folder has model.keras, config.json and run.json")
    if output.exists():
        raise InputError(output, "exists already", "give a new run folder")
    record = json.loads((run_dir / "run.json").read_text())
    if record.get("store") not in (None, "float32"):
        raise InputError(run_dir, f"its model is stored in {record['store']} already")
    config = json.loads((run_dir / "config.json").read_text())
    model = load_model(run_dir / "model.keras", safe_mode=True, compile=False)
    # A U-Net frozen during training is a copy of a shipped U-Net: rounded, its fingerprint would no longer
    # match that U-Net's, and `unet` could not take blend2mask2flux's masks (one U-Net pass for both).
    spec = config.get("model", {})
    frozen_unet = spec.get("kind") == "blend2mask2flux" and bool(spec.get("freeze_unet"))
    keep = (lambda path: path.startswith(("unet_", "masks/"))) if frozen_unet else None
    rounded = round_weights(model, precision, keep=keep)
    record.update(store=precision, rounded_arrays=rounded,
                  stored_from={"run": run_dir.name, "sha256": sha256_file(run_dir / "model.keras")})
    if frozen_unet:
        record["kept_exact"] = "the frozen U-Net (unet_*, masks)"
    log = run_dir / "log.csv"
    return write_model_run(output, model, config, record, compress=True, copies=[log] if log.is_file() else [])


def write_model_run(output, model, config: dict, record: dict, compress: bool, copies=()) -> dict:
    """Write a new run folder *output* -- ``model.keras``, ``config.json``, ``run.json`` and *copies* -- whole or not at all.

    ``record["model_sha256"]`` is set to the written model's; *output* must
    not exist.  Returns *record*.
    """
    from napari_blendphot.atomic import discard, install_folder, make_partial_folder
    from napari_blendphot.models.io import save_model
    from napari_blendphot.provenance import sha256_file

    staging = make_partial_folder(output)
    try:
        save_model(model, staging / "model.keras", compress=compress)
        record["model_sha256"] = sha256_file(staging / "model.keras")
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for path in copies:
            shutil.copyfile(path, staging / Path(path).name)
        (staging / "run.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        install_folder(staging, output, replace=False)
    except BaseException:
        discard(staging)
        raise
    return record
