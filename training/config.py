"""Run configurations: what to train, on what, and how.

A configuration is a JSON file with three sections (every key is optional
except ``model.kind``; missing keys take the defaults below, which are the
paper's protocol, SPEC §6)::

    {
      "name": "blend2flux_f64",
      "description": "free text",
      "model":    {"kind": "blend2flux", "filters": 64, "depth": 2, "dense_widths": [64, 64]},
      "training": {"learning_rate": 1e-4, "batch_size": 32, "max_epochs": 200, ...},
      "data":     {"mode": "fixed", "validation_fraction": 0.1, ...}
    }

``model.kind`` is ``blend2flux``, ``unet`` or ``blend2mask2flux``; the other
model keys are passed to the builders of :mod:`napari_blendphot.models.networks`.
A ``blend2mask2flux`` model takes its U-Net from ``model.unet_weights``
(a ``.keras`` file or a run folder) or, without it, trains the U-Net first
from ``model.unet_config`` (another configuration file, relative to this one)
in the sub-folder ``unet_stage`` of the run folder.

Everything that differs from the paper's protocol is a named key whose default
is the paper's choice, so that a configuration states its deviations.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from napari_blendphot.errors import InputError
from napari_blendphot.models import ARCHITECTURES
from napari_blendphot.models.precision import TRAINING_PRECISIONS

#: Where the shipped configurations live.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

MODEL_KINDS = ARCHITECTURES
DATA_MODES = ("fixed", "stream", "synth")
#: One precision vocabulary with the library ("bfloat16", not Keras' "mixed_bfloat16").
PRECISIONS = TRAINING_PRECISIONS

#: The paper's protocol (SPEC §6): Adam 1e-4, halve on plateau (patience 5),
#: stop after 10 epochs without improvement, keep the best, batch 32.
DEFAULT_TRAINING = {
    "seed": 2020,
    "learning_rate": 1e-4,
    "batch_size": 32,
    "max_epochs": 200,
    # Plateau schedule on the validation loss.
    "lr_plateau_factor": 0.5,
    "lr_plateau_patience": 5,
    "min_learning_rate": 1e-7,
    "early_stopping_patience": 10,
    # Random horizontal/vertical flips of the blend (and its masks, alike).
    "flips": True,
    # Compute precision ("float32", "bfloat16", "float16"); "bfloat16" is a named speed option
    # (measured in docs/results.md).
    "precision": "float32",
    # Stop cleanly (resumable) after this many seconds of training; None = no limit.
    "max_wall_time_s": None,
    # Batches prepared ahead of the accelerator by worker threads.
    "prefetch_batches": 8,
    "data_workers": 4,
    # Validation quantity of the schedule (plateau, early stopping, best checkpoint):
    # "val_loss" (the paper's), or e.g. "val_fluxes_loss" to follow the flux MAPE alone
    # when a model also carries an uncertainty or mask loss.
    "monitor": "val_loss",
    # blend2mask2flux end-to-end loss weights (SPEC §6).
    "loss_weights": {"fluxes": 1.0, "masks": 0.1},
}

DEFAULT_DATA = {
    # "fixed": the blend dataset folder given on the command line (train split);
    # "stream": new blends every epoch from the isolated sample (train galaxies).
    "mode": "fixed",
    # Share of the training blends held out for validation (by blend id, seeded).
    "validation_fraction": 0.1,
    # Stream mode: blends made per epoch and the fixed validation set size.
    "blends_per_epoch": 22500,
    "validation_blends": 2500,
    # Stream mode: share of galaxies kept for the test split, as in build-dataset.
    "test_fraction": 0.2,
    "split_seed": 2020,
    "rule": "published",
    # Use at most this many training blends (tests and quick runs); None = all.
    "max_train_blends": None,
    # Synth mode (training/synth.py): the galaxy bank (.npz of noiseless models) and the
    # augmentations (keys of training.synth.Augmentation; missing ones take its defaults).
    "bank": None,
    "augmentation": {},
}


def _merge(defaults: dict, given: dict, section: str, source) -> dict:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise InputError(source, f"unknown key(s) in section {section!r}: {unknown}",
                         f"known keys: {sorted(defaults)}")
    merged = copy.deepcopy(defaults)
    merged.update(copy.deepcopy(given))
    return merged


def normalise_config(raw: dict, source="configuration", base_dir: Path | None = None) -> dict:
    """Fill defaults into *raw* and check it; return a new, complete configuration."""
    if not isinstance(raw, dict):
        raise InputError(source, "a configuration must be a JSON object")
    unknown = sorted(set(raw) - {"name", "description", "model", "training", "data", "base_dir"})
    if unknown:
        raise InputError(source, f"unknown top-level key(s) {unknown}",
                         "known: name, description, model, training, data")
    model = dict(raw.get("model") or {})
    kind = model.get("kind")
    if kind not in MODEL_KINDS:
        raise InputError(source, f"model.kind is {kind!r}", f"use one of {list(MODEL_KINDS)}")
    training = _merge(DEFAULT_TRAINING, raw.get("training") or {}, "training", source)
    data = _merge(DEFAULT_DATA, raw.get("data") or {}, "data", source)
    if data["mode"] not in DATA_MODES:
        raise InputError(source, f"data.mode is {data['mode']!r}", f"use one of {list(DATA_MODES)}")
    from napari_blendphot.models.precision import canonical_precision

    if str(training["precision"]) in ("mixed_bfloat16", "mixed_float16"):  # Keras' names, in older configs
        training["precision"] = canonical_precision(training["precision"])
    if training["precision"] not in PRECISIONS:
        raise InputError(source, f"training.precision is {training['precision']!r}",
                         f"use one of {list(PRECISIONS)}")
    for key in ("batch_size", "max_epochs", "lr_plateau_patience", "early_stopping_patience"):
        value = training[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(source, f"training.{key} must be a positive integer, got {value!r}")
    if not 0 < float(training["learning_rate"]) < 1:
        raise InputError(source, f"training.learning_rate {training['learning_rate']!r} is not in (0, 1)")
    if not 0 < float(training["lr_plateau_factor"]) < 1:
        raise InputError(source, "training.lr_plateau_factor must be in (0, 1)")
    if not 0 < float(data["validation_fraction"]) < 1:
        raise InputError(source, "data.validation_fraction must be in (0, 1)")
    base = Path(raw.get("base_dir") or base_dir or CONFIG_DIR)
    if kind == "blend2mask2flux" and not model.get("unet_weights"):
        unet_config = model.get("unet_config")
        if not unet_config:
            raise InputError(source, "a blend2mask2flux model needs model.unet_weights or model.unet_config")
        path = (base / unet_config) if not Path(unet_config).is_absolute() else Path(unet_config)
        if not path.is_file():
            raise InputError(source, f"model.unet_config {unet_config!r} not found (looked at {path})")
    name = raw.get("name") or kind
    return {
        "name": str(name),
        "description": str(raw.get("description", "")),
        "base_dir": str(base),
        "model": model,
        "training": training,
        "data": data,
    }


def resolve_config_path(path) -> Path:
    """A configuration path as given, or the name of a shipped one (``blend2flux_f64``)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    for shipped in (CONFIG_DIR / candidate.name, CONFIG_DIR / f"{candidate.name}.json"):
        if shipped.is_file():
            return shipped
    raise InputError(path, "configuration file not found",
                     f"give a path or one of: {', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.json')))}")


def load_config(path, overrides: dict | None = None) -> dict:
    """Read, complete and check a configuration file.

    Parameters
    ----------
    path : path-like or str
        A JSON file, or the name of a configuration in ``training/configs``.
    overrides : dict, optional
        ``{"training.max_epochs": 3, ...}`` dotted keys applied before the checks.
    """
    path = resolve_config_path(path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON: {exc}") from None
    raw.setdefault("base_dir", str(path.resolve().parent))
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raw[section] = value
        else:
            raw.setdefault(section, {})[key] = value
    return normalise_config(raw, source=path)


def unet_stage_config(config: dict) -> dict:
    """The configuration of the U-Net pre-training stage of a blend2mask2flux run."""
    model = config["model"]
    base = Path(config["base_dir"])
    path = Path(model["unet_config"])
    stage = load_config(path if path.is_absolute() else base / path)
    if stage["model"]["kind"] != "unet":
        raise InputError(path, f"model.unet_config must describe a unet, not {stage['model']['kind']!r}")
    # The stage sees the same data, seed and run-time limits as its parent.
    stage["data"] = copy.deepcopy(config["data"])
    for key in ("seed", "precision", "data_workers", "prefetch_batches"):
        stage["training"][key] = config["training"][key]
    return stage


def save_config(config: dict, path) -> None:
    from napari_blendphot.atomic import atomic_output

    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)
