"""One training run: run folder, epochs, plateau schedule, checkpoints, resume.

Run folder layout::

    RUN_DIR/
      config.json            the complete configuration (defaults filled in)
      run.json               seed, backend, data provenance, versions, status, timings
      log.csv                one row per epoch (losses, learning rate, times, blends/s)
      loss_curve.png         training and validation loss per epoch
      checkpoints/
        last.weights.h5      weights after the last finished epoch
        last.optimizer.npz   optimizer variables (Adam moments, iteration count)
        best.weights.h5      weights of the best validation loss so far
        state.json           epoch, best loss, plateau/early-stopping counters, learning rate
      model.keras            final model: best weights, float32, no optimizer
      unet_stage/            (blend2mask2flux without given U-Net weights) the U-Net pre-training run
      evaluation/            written by ``python -m training evaluate``

The schedule is the paper's (SPEC §6), implemented in one callback so that its
whole state can be saved and restored: the learning rate is multiplied by
``lr_plateau_factor`` after ``lr_plateau_patience`` epochs without a better
validation loss, training stops after ``early_stopping_patience`` such epochs,
and the best weights are kept.  Data order and flips depend only on
``(seed, epoch)``, so a resumed run sees exactly the batches an uninterrupted
run would have seen.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError, OutputExistsError

CHECKPOINT_DIR = "checkpoints"
LOG_FIELDS = ("epoch", "loss", "val_loss", "learning_rate", "epoch_time_s", "train_blends_per_s",
              "elapsed_s", "improved")


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
def weights_digest(model) -> str:
    """SHA-256 of all the model's weights (in order), to check that a resume restored them."""
    digest = hashlib.sha256()
    for array in model.get_weights():
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def targets_of(kind: str) -> tuple[str, ...]:
    return {"blend2flux": ("fluxes",), "unet": ("masks",), "blend2mask2flux": ("fluxes", "masks")}[kind]


def _structure_for(kind: str, uncertainty: bool = False):
    """Map ``(x, {"fluxes", "masks"})`` to what ``fit`` expects for this model's outputs.

    The flux-uncertainty output is trained on the true fluxes too (its loss,
    ``log_flux_nll``, compares them with the predicted log flux and sigma).
    """
    if kind == "unet":
        return lambda x, y: (x, y["masks"])
    if kind == "blend2flux" and not uncertainty:
        return lambda x, y: (x, y["fluxes"])

    def structure(x, y):
        out = {"fluxes": y["fluxes"]}
        if kind == "blend2mask2flux":
            out["masks"] = y["masks"]
        if uncertainty:
            out["flux_uncertainty"] = y["fluxes"]
        return x, out

    return structure


def _write_json(path, record) -> None:
    # A unique temporary beside the file: two writers never share one, and a crash leaves the old file whole.
    from napari_blendphot.atomic import atomic_output

    text = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)


def _read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(path, "not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON: {exc}") from None


def configure_backend(backend: str | None) -> str:
    """Select the Keras backend before Keras is imported; return the one in use."""
    if backend:
        if "keras" in sys.modules and os.environ.get("KERAS_BACKEND", "tensorflow") != backend:
            raise RuntimeError(f"Keras is already imported with another backend; cannot switch to {backend}")
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras.backend.backend()


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------
def model_arguments(model_config: dict) -> dict:
    """Builder arguments of a model configuration (everything but the training-side keys)."""
    skip = {"kind", "unet_config", "unet_weights", "freeze_unet", "init_weights", "head_init"}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in model_config.items() if k not in skip}


def build_network(config: dict, precision: str = "float32"):
    """Build the configured network under a dtype policy.

    With a mixed policy, the input normalisation and the flux output layer are
    kept in float32: the per-stamp RMS and the exponential of the log fluxes
    would lose two significant digits in bfloat16.
    """
    import keras

    from napari_blendphot.models.networks import build_model

    previous = keras.config.dtype_policy()
    from napari_blendphot.models.precision import keras_policy

    keras.config.set_dtype_policy(keras_policy(precision))
    try:
        model = build_model(config["model"]["kind"], **model_arguments(config["model"]))
    finally:
        keras.config.set_dtype_policy(previous)
    if precision != "float32":
        from napari_blendphot.models.precision import FLOAT32_LAYERS

        for layer in model.layers:
            if layer.name in FLOAT32_LAYERS:
                layer.dtype_policy = keras.DTypePolicy("float32")
    return model


def freeze_unet_layers(model, frozen: bool = True) -> int:
    """(Un)freeze the U-Net part of a blend2mask2flux model; returns the number of layers changed.

    A frozen U-Net keeps the masks of its own training (the paper's end-to-end
    stage cost 0.12 in IoU, ours 0.27): the flux head learns to read masks that
    stay good.  Recompile after calling.
    """
    changed = 0
    for layer in model.layers:
        if layer.name.startswith("unet_") or layer.name == "masks":
            if layer.weights:
                layer.trainable = not frozen
                changed += 1
    return changed


def compile_network(model, config: dict, learning_rate: float | None = None):
    from napari_blendphot.models.losses import compile_model

    training = config["training"]
    if config["model"]["kind"] == "blend2mask2flux" and config["model"].get("freeze_unet"):
        freeze_unet_layers(model, True)
    lr = float(training["learning_rate"] if learning_rate is None else learning_rate)
    compile_model(model, config["model"]["kind"], learning_rate=lr,
                  mask_weight=float(training["loss_weights"]["masks"]) / float(training["loss_weights"]["fluxes"]))
    if config["model"]["kind"] == "blend2mask2flux" and float(training["loss_weights"]["fluxes"]) != 1.0:
        raise InputError("training.loss_weights", "the flux loss weight is the unit: keep 'fluxes' at 1.0")
    return model


def save_optimizer(optimizer, path) -> None:
    from keras import ops

    arrays = {f"v{i:04d}": ops.convert_to_numpy(v) for i, v in enumerate(optimizer.variables)}
    from napari_blendphot.atomic import atomic_output

    with atomic_output(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def restore_optimizer(model, path) -> None:
    """Build the model's optimizer and set its variables from :func:`save_optimizer`'s file."""
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    with np.load(path) as saved:
        arrays = [saved[k] for k in sorted(saved.files)]
    if len(arrays) != len(optimizer.variables):
        raise InputError(path, f"holds {len(arrays)} optimizer variables, the model's optimizer has "
                               f"{len(optimizer.variables)}")
    for variable, value in zip(optimizer.variables, arrays):
        if tuple(variable.shape) != value.shape:
            raise InputError(path, f"optimizer variable {variable.path} has shape {tuple(variable.shape)}, "
                                   f"saved {value.shape}")
        variable.assign(value)


def export_model(trained, config: dict, path) -> None:
    """Save *trained*'s weights in a plain float32 copy of the network (no optimizer)."""
    from napari_blendphot.models.io import save_model

    plain = build_network(config, "float32")
    plain.set_weights(trained.get_weights())
    from napari_blendphot.atomic import atomic_output

    with atomic_output(path, suffix=".keras") as tmp:
        save_model(plain, tmp, overwrite=True)


# ---------------------------------------------------------------------------
# The schedule: plateau LR, early stopping, checkpoints, log
# ---------------------------------------------------------------------------
def _controller_class():
    import keras

    class ScheduleController(keras.callbacks.Callback):
        """The paper's schedule with a savable state; writes checkpoints and the log each epoch."""

        def __init__(self, run_dir: Path, config: dict, state: dict, steps_per_epoch: int, batch_size: int,
                     started: float):
            super().__init__()
            self.run_dir = run_dir
            self.training = config["training"]
            self.state = state
            self.steps_per_epoch = steps_per_epoch
            self.batch_size = batch_size
            self.started = started
            self._epoch_start = None

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            state = self.state
            duration = time.perf_counter() - self._epoch_start
            monitor = self.training.get("monitor") or "val_loss"
            val = float(logs.get(monitor, logs.get("val_loss", np.nan)))
            if not np.isfinite(val):
                state["stopped"] = "non-finite validation loss"
                self.model.stop_training = True
            improved = bool(np.isfinite(val) and val < state["best_val_loss"])
            ckpt = self.run_dir / CHECKPOINT_DIR
            state["elapsed_s"] = state.get("elapsed_s", 0.0) + duration
            if improved:
                state.update(best_val_loss=val, best_epoch=epoch, epochs_without_improvement=0, plateau_wait=0,
                             elapsed_at_best_s=state["elapsed_s"])
                self.model.save_weights(ckpt / "best.weights.h5", overwrite=True)
            else:
                state["epochs_without_improvement"] += 1
                state["plateau_wait"] += 1
            lr_used = float(state["learning_rate"])
            if state["plateau_wait"] >= self.training["lr_plateau_patience"]:
                new_lr = max(lr_used * float(self.training["lr_plateau_factor"]),
                             float(self.training["min_learning_rate"]))
                if new_lr < lr_used:
                    self.model.optimizer.learning_rate.assign(new_lr)
                    state["learning_rate"] = new_lr
                    print(f"epoch {epoch}: validation loss on a plateau, learning rate {lr_used:.3g} -> {new_lr:.3g}",
                          flush=True)
                state["plateau_wait"] = 0
            state["epochs_completed"] = epoch + 1
            if state["epochs_without_improvement"] >= self.training["early_stopping_patience"]:
                state["stopped"] = f"early stopping: no improvement for {state['epochs_without_improvement']} epochs"
                self.model.stop_training = True
            limit = self.training.get("max_wall_time_s")
            if limit and not self.model.stop_training:
                # Stop before an epoch that would not finish in time (resumable).
                if time.perf_counter() - self.started + duration > float(limit):
                    state["stopped"] = f"wall-time limit of {float(limit):.0f} s"
                    self.model.stop_training = True
            self.model.save_weights(ckpt / "last.weights.h5", overwrite=True)
            save_optimizer(self.model.optimizer, ckpt / "last.optimizer.npz")
            state["last_weights_sha256"] = weights_digest(self.model)
            _write_json(ckpt / "state.json", state)
            row = {
                "epoch": epoch,
                "loss": float(logs.get("loss", np.nan)),
                "val_loss": val,
                "learning_rate": lr_used,
                "epoch_time_s": round(duration, 3),
                "train_blends_per_s": round(self.steps_per_epoch * self.batch_size / max(duration, 1e-9), 1),
                "elapsed_s": round(state["elapsed_s"], 3),
                "improved": int(improved),
            }
            extra = {k: float(v) for k, v in sorted(logs.items()) if k not in row and k not in ("learning_rate",)}
            _append_log(self.run_dir / "log.csv", {**row, **extra})
            print(f"epoch {epoch}: loss {row['loss']:.4g} val_loss {val:.4g} lr {lr_used:.3g} "
                  f"{duration:.1f} s ({row['train_blends_per_s']:.0f} blends/s)"
                  + (" *best*" if improved else ""), flush=True)

    return ScheduleController


def _append_log(path: Path, row: dict) -> None:
    fields = list(row)
    if path.exists():
        with open(path, newline="") as handle:
            header = next(csv.reader(handle), None)
        if header:
            fields = header + [k for k in row if k not in header]
            if fields != header:
                # A new column appeared (rare): rewrite with the wider header.
                from napari_blendphot.atomic import atomic_output

                with open(path, newline="") as handle:
                    rows = list(csv.DictReader(handle))
                with atomic_output(path) as tmp, open(tmp, "w", newline="") as handle:
                    writer = csv.DictWriter(handle, fields)
                    writer.writeheader()
                    writer.writerows(rows)
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_log(run_dir) -> list[dict]:
    path = Path(run_dir) / "log.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def plot_loss_curve(run_dir) -> Path | None:
    """``loss_curve.png``: training and validation loss per epoch, best epoch marked."""
    rows = read_log(run_dir)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [float(r["loss"]) for r in rows], label="training")
    ax.plot(epochs, [float(r["val_loss"]) for r in rows], label="validation")
    best = min(rows, key=lambda r: float(r["val_loss"]) if r["val_loss"] not in ("", "nan") else np.inf)
    ax.axvline(int(best["epoch"]), color="0.6", ls=":", label=f"best (epoch {best['epoch']})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(Path(run_dir).name)
    ax.legend()
    fig.tight_layout()
    from napari_blendphot.atomic import atomic_output

    out = Path(run_dir) / "loss_curve.png"
    try:
        with atomic_output(out, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return out


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def prepare_data(config: dict, blends_dir=None, sample_path=None):
    """Training source, validation arrays and data provenance for a run.

    Returns ``(source, (x_val, y_val), provenance)``.
    """
    from . import data as tdata

    data_cfg = config["data"]
    training = config["training"]
    targets = targets_of(config["model"]["kind"])
    seed = int(training["seed"])
    if data_cfg["mode"] == "synth":
        return _prepare_synth(config, targets)
    if data_cfg["mode"] == "fixed":
        if blends_dir is None:
            raise InputError("--blends", "a fixed-dataset run needs a blend dataset folder",
                             "pass --blends DIR (make one with `python -m training build-dataset`)")
        train = tdata.read_split(blends_dir, "train", with_masks="masks" in targets)
        if data_cfg["max_train_blends"]:
            train = train.subset(np.arange(min(len(train), int(data_cfg["max_train_blends"]))))
        fit_pos, val_pos = tdata.validation_split(len(train), float(data_cfg["validation_fraction"]), seed)
        fit_part = train.subset(fit_pos).load()
        val_part = train.subset(val_pos)
        source = tdata.FixedBlends(fit_part, int(training["batch_size"]), seed, targets, training["flips"])
        validation = tdata.validation_arrays(val_part, targets)
        provenance = {"mode": "fixed", "dataset": tdata.dataset_digest(blends_dir),
                      "n_train": int(len(fit_part)), "n_validation": int(len(val_part)),
                      "validation_ids_sha256": hashlib.sha256(
                          np.asarray(val_part.catalog["id"], np.int64).tobytes()).hexdigest()}
        return source, validation, provenance
    # Stream mode: the training galaxies of the same split build-dataset makes.
    if sample_path is None:
        raise InputError("--sample", "a stream run needs the isolated sample file", "pass --sample SAMPLE")
    from napari_blendphot.blend.split import split_indices
    from napari_blendphot.blend.stream import BlendStream
    from napari_blendphot.clean.neighbours import clean_sample
    from napari_blendphot.provenance import sha256_file
    from napari_blendphot.sample.io import load_sample

    split_seed = int(data_cfg["split_seed"])
    sample = clean_sample(load_sample(sample_path), split_seed)
    spawn = np.random.SeedSequence(split_seed).spawn(3)
    train_rows, _ = split_indices(len(sample), float(data_cfg["test_fraction"]), np.random.default_rng(spawn[0]))
    train_sample = sample[train_rows]
    n_val_gal = max(2, int(round(float(data_cfg["validation_fraction"]) * len(train_sample))))
    val_rows = np.sort(np.random.default_rng([seed, 7919]).permutation(len(train_sample))[:n_val_gal])
    fit_rows = np.setdiff1d(np.arange(len(train_sample)), val_rows)
    # Validation galaxies never appear in the training stream: a fixed, held-out set.
    stream = BlendStream(train_sample[fit_rows], seed=seed, rule=data_cfg["rule"])
    val_stream = BlendStream(train_sample[val_rows], seed=seed + 1, rule=data_cfg["rule"])
    n_val = int(data_cfg["validation_blends"])
    val_batch = val_stream.assemble(val_stream.epoch_pairs(0, n_val))
    x_val, y_val_masks = tdata.to_network_layout(val_batch.blends, val_batch.masks if "masks" in targets else None)
    y_val = {"fluxes": np.asarray(val_batch.fluxes, np.float32)} if "fluxes" in targets else {}
    if "masks" in targets:
        y_val["masks"] = y_val_masks
    source = tdata.StreamBlends(stream, int(data_cfg["blends_per_epoch"]), int(training["batch_size"]), seed,
                                targets, training["flips"])
    provenance = {"mode": "stream", "sample": {"path": os.path.basename(os.fspath(sample_path)),
                                               "sha256": sha256_file(sample_path)} if os.path.isfile(sample_path)
                  else str(sample_path),
                  "split_seed": split_seed, "n_train_galaxies": int(len(fit_rows)),
                  "n_validation_galaxies": int(len(val_rows)),
                  "validation_galaxy_ids": [int(i) for i in np.asarray(train_sample.catalog["id"])[val_rows]],
                  "blends_per_epoch": int(data_cfg["blends_per_epoch"]),
                  "n_validation": n_val}
    return source, (x_val, y_val), provenance


def _prepare_synth(config: dict, targets):
    """Synthesised blends from a galaxy bank (training/synth.py): source, fixed validation set, provenance."""
    from .synth import Augmentation, SynthBlends, load_bank

    data_cfg = config["data"]
    training = config["training"]
    seed = int(training["seed"])
    bank_path = data_cfg.get("bank")
    if not bank_path:
        raise InputError("data.bank", "a synth run needs a galaxy bank (.npz)", "pass --bank FILE or --set data.bank=...")
    bank_path = Path(bank_path)
    if not bank_path.is_absolute() and not bank_path.exists():
        bank_path = Path(config["base_dir"]) / bank_path
    bank = load_bank(bank_path)
    n = len(bank["models"])
    n_val = max(2, int(round(float(data_cfg["validation_fraction"]) * n)))
    val_rows = np.sort(np.random.default_rng([seed, 7919]).permutation(n)[:n_val])
    fit_rows = np.setdiff1d(np.arange(n), val_rows)

    def part(rows):
        return {key: value[rows] for key, value in bank.items() if getattr(value, "shape", ())[:1] == (n,)}

    augmentation = Augmentation.from_config(data_cfg.get("augmentation"))
    source = SynthBlends(part(fit_rows), int(data_cfg["blends_per_epoch"]), int(training["batch_size"]), seed,
                         targets, augmentation, data_cfg["rule"])
    # Validation: held-out galaxies, blends made once (fixed noise), same augmentation distribution.
    validator = SynthBlends(part(val_rows), int(training["batch_size"]), int(training["batch_size"]), seed + 1,
                            targets, augmentation, data_cfg["rule"])
    validation = validator.fixed_set(int(data_cfg["validation_blends"]), seed + 1)
    from napari_blendphot.provenance import sha256_file

    provenance = {"mode": "synth", "bank": {"path": bank_path.name, "sha256": sha256_file(bank_path)},
                  "n_train_galaxies": int(len(fit_rows)), "n_validation_galaxies": int(len(val_rows)),
                  "validation_galaxy_ids": [int(i) for i in bank["ids"][val_rows]],
                  "blends_per_epoch": int(data_cfg["blends_per_epoch"]),
                  "n_validation": int(data_cfg["validation_blends"]), "augmentation": augmentation.to_dict()}
    if "provenance" in bank:
        provenance["bank"]["made_by"] = json.loads(str(bank["provenance"]))
    return source, validation, provenance


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------
def _initial_state(config: dict) -> dict:
    return {"epochs_completed": 0, "best_val_loss": float("inf"), "best_epoch": None,
            "epochs_without_improvement": 0, "plateau_wait": 0,
            "learning_rate": float(config["training"]["learning_rate"]), "stopped": None, "elapsed_s": 0.0,
            "elapsed_at_best_s": None, "last_weights_sha256": None}


def train(config: dict, run_dir, blends_dir=None, sample_path=None, backend: str | None = None,
          overwrite: bool = False, verbose: int = 2) -> dict:
    """Start a new run of *config* in *run_dir*; return the final ``run.json`` record."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(run_dir)
        import shutil

        shutil.rmtree(run_dir)
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    from .config import save_config

    save_config(config, run_dir / "config.json")
    record = {
        "name": config["name"],
        "seed": int(config["training"]["seed"]),
        "blends_dir": None if blends_dir is None else os.path.abspath(blends_dir),
        "sample_path": None if sample_path is None else os.path.abspath(sample_path),
        "status": "created",
    }
    _write_json(run_dir / "run.json", record)
    _write_json(run_dir / CHECKPOINT_DIR / "state.json", _initial_state(config))
    return _run(run_dir, backend=backend, verbose=verbose)


def resume(run_dir, backend: str | None = None, max_epochs: int | None = None, verbose: int = 2,
           max_wall_time_s: float | None = None, bank=None) -> dict:
    """Continue a run from its last checkpoint (model, optimizer, epoch, schedule, data position).

    ``bank`` gives a synth run's galaxy bank at a new path (another machine):
    it must be the same file (sha256 of the run's data provenance).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise InputError(run_dir, "not a training run folder (config.json missing)")
    if bank is not None:
        _move_bank(run_dir, Path(bank))
    return _run(run_dir, backend=backend, max_epochs=max_epochs, verbose=verbose, resuming=True,
                max_wall_time_s=max_wall_time_s)


def _move_bank(run_dir: Path, bank: Path) -> None:
    """Point a synth run (and its U-Net stage) at the same bank file at another path."""
    from napari_blendphot.provenance import sha256_file
    from .config import save_config

    if not bank.is_file():
        raise InputError(bank, "galaxy bank not found")
    digest = sha256_file(bank)
    for folder in (run_dir, run_dir / "unet_stage"):
        if not (folder / "config.json").is_file():
            continue
        config = _read_json(folder / "config.json")
        if config["data"].get("mode") != "synth":
            raise InputError(folder, "--bank is for synth-mode runs only")
        recorded = (_read_json(folder / "run.json").get("data") or {}).get("bank", {}).get("sha256")
        if recorded and recorded != digest:
            raise InputError(bank, f"is not the bank this run trained on (sha256 {digest[:12]}..., run: {recorded[:12]}...)")
        config["data"]["bank"] = str(bank.resolve())
        save_config(config, folder / "config.json")


def _run(run_dir: Path, backend=None, max_epochs=None, verbose=2, resuming=False, max_wall_time_s=None) -> dict:
    backend = configure_backend(backend)
    import keras

    from napari_blendphot.provenance import make_provenance

    config = _read_json(run_dir / "config.json")
    record = _read_json(run_dir / "run.json")
    state = _read_json(run_dir / CHECKPOINT_DIR / "state.json")
    if max_epochs is not None:
        config["training"]["max_epochs"] = int(max_epochs)
    if max_wall_time_s is not None:
        config["training"]["max_wall_time_s"] = float(max_wall_time_s)
    if resuming and max_epochs is not None:
        from .config import save_config

        save_config(config, run_dir / "config.json")
    training = config["training"]
    kind = config["model"]["kind"]

    # blend2mask2flux: the U-Net first (its own resumable run), unless weights are given.
    unet_path = None
    if kind == "blend2mask2flux":
        unet_path = _unet_for(run_dir, config, record, backend, verbose)

    seed = int(training["seed"])
    keras.utils.set_random_seed(seed)
    model = build_network(config, training["precision"])
    if kind == "blend2mask2flux" and state["epochs_completed"] == 0 and not (run_dir / CHECKPOINT_DIR / "last.weights.h5").exists():
        from napari_blendphot.models.io import load_model
        from napari_blendphot.models.networks import load_unet_weights

        copied = load_unet_weights(model, load_model(unet_path))
        record["unet_layers_copied"] = len(copied)
    fresh = state["epochs_completed"] == 0 and not (run_dir / CHECKPOINT_DIR / "last.weights.h5").exists()
    if fresh:
        record.update(_initial_weights(model, config))
    compile_network(model, config, learning_rate=state["learning_rate"])
    ckpt = run_dir / CHECKPOINT_DIR
    if state["epochs_completed"] > 0:
        with warnings.catch_warnings():
            # The checkpoint also holds the optimizer's variables, which Keras skips (with a warning) because
            # the optimizer is not built yet; restore_optimizer builds it and sets every one of them just below.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(ckpt / "last.weights.h5")
        restore_optimizer(model, ckpt / "last.optimizer.npz")
        model.optimizer.learning_rate.assign(float(state["learning_rate"]))
        digest = weights_digest(model)
        if digest != state["last_weights_sha256"]:
            raise InputError(ckpt / "last.weights.h5", "restored weights differ from the checkpoint's digest")
        print(f"resumed {run_dir} at epoch {state['epochs_completed']} (weights sha256 {digest[:16]}, "
              f"learning rate {state['learning_rate']:.3g})", flush=True)
        record.setdefault("resumes", []).append({"epoch": state["epochs_completed"], "weights_sha256": digest,
                                                 "backend": backend})
        if state["stopped"] and state["stopped"].startswith("wall-time"):
            state["stopped"] = None  # a time limit pauses the run; other stops are final
        elif state["stopped"] and max_epochs is not None:
            state["stopped"] = None  # asked explicitly for more epochs
            state["epochs_without_improvement"] = 0

    source, (x_val, y_val), data_provenance = prepare_data(config, record.get("blends_dir"), record.get("sample_path"))
    structure = _structure_for(kind, bool(config["model"].get("uncertainty")))
    _, y_val_fit = structure(x_val, y_val)
    from .data import BatchFeeder

    feeder = BatchFeeder(source, start_epoch=state["epochs_completed"], workers=int(training["data_workers"]),
                         prefetch=int(training["prefetch_batches"]), structure=structure)
    record.update(
        status="training", backend=backend, kind=kind, parameters=int(model.count_params()),
        data=data_provenance, steps_per_epoch=int(source.steps_per_epoch),
        provenance=make_provenance("train", seed, config=config["name"], precision=training["precision"],
                                   backend=backend),
        devices=_devices(),
    )
    _write_json(run_dir / "run.json", record)
    controller = _controller_class()(run_dir, config, state, source.steps_per_epoch, int(training["batch_size"]),
                                     time.perf_counter())
    start_epoch = int(state["epochs_completed"])
    stop_epoch = int(training["max_epochs"])
    wall = time.perf_counter()
    try:
        if start_epoch < stop_epoch and not state["stopped"]:
            model.fit(iter(feeder), steps_per_epoch=source.steps_per_epoch, epochs=stop_epoch,
                      initial_epoch=start_epoch, validation_data=(x_val, y_val_fit),
                      validation_batch_size=max(64, int(training["batch_size"])), callbacks=[controller],
                      verbose=0 if verbose < 2 else 2 if not sys.stdout.isatty() else 1)
    finally:
        feeder.close()
    state = controller.state
    if not state["stopped"] and state["epochs_completed"] >= stop_epoch:
        state["stopped"] = f"reached max_epochs = {stop_epoch}"
    _write_json(ckpt / "state.json", state)
    record["wall_time_s"] = record.get("wall_time_s", 0.0) + (time.perf_counter() - wall)
    finished = state["stopped"] is not None and not state["stopped"].startswith("wall-time")
    if (ckpt / "best.weights.h5").exists():
        model.load_weights(ckpt / "best.weights.h5")
        export_model(model, config, run_dir / "model.keras")
    rows = read_log(run_dir)
    record.update(
        status="finished" if finished else "paused",
        stopped=state["stopped"], epochs_completed=state["epochs_completed"], best_epoch=state["best_epoch"],
        best_val_loss=state["best_val_loss"], time_to_best_s=state["elapsed_at_best_s"],
        train_time_s=state["elapsed_s"],
        median_train_blends_per_s=float(np.median([float(r["train_blends_per_s"]) for r in rows])) if rows else None,
    )
    _write_json(run_dir / "run.json", record)
    plot_loss_curve(run_dir)
    print(f"{run_dir}: {record['status']} ({state['stopped']}); best val_loss {state['best_val_loss']:.4g} "
          f"at epoch {state['best_epoch']}", flush=True)
    return record


def _model_path(given, config: dict, key: str) -> Path:
    path = Path(given)
    if not path.is_absolute():
        path = Path(config["base_dir"]) / path
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise InputError(given, f"model.{key}: no such .keras file or run folder")
    return path


def _initial_weights(model, config: dict) -> dict:
    """Warm starts named in the configuration (recorded in run.json with the files' sha256).

    ``model.init_weights``: continue from a saved model of the same architecture;
    ``model.head_init``: blend2mask2flux's head from a trained blend2flux
    (:func:`napari_blendphot.models.networks.init_head_from_blend2flux`).
    """
    from napari_blendphot.models.io import load_model
    from napari_blendphot.models.networks import copy_matching_weights, init_head_from_blend2flux
    from napari_blendphot.provenance import sha256_file

    record = {}
    given = config["model"].get("init_weights")
    if given:
        path = _model_path(given, config, "init_weights")
        copied = copy_matching_weights(model, load_model(path))
        record["init_weights"] = {"file": path.name, "sha256": sha256_file(path), "layers": len(copied)}
    given = config["model"].get("head_init")
    if given:
        if config["model"]["kind"] != "blend2mask2flux":
            raise InputError("model.head_init", "is for blend2mask2flux models only")
        path = _model_path(given, config, "head_init")
        copied = init_head_from_blend2flux(model, load_model(path, expect="blend2flux"))
        record["head_init"] = {"file": path.name, "sha256": sha256_file(path), "layers": len(copied)}
    return record


def _unet_for(run_dir: Path, config: dict, record: dict, backend: str, verbose: int) -> Path:
    """The trained U-Net a blend2mask2flux run starts from (training it first if needed)."""
    given = config["model"].get("unet_weights")
    if given:
        path = Path(given)
        if not path.is_absolute():
            path = Path(config["base_dir"]) / path
        if path.is_dir():
            path = path / "model.keras"
        if not path.is_file():
            raise InputError(given, "model.unet_weights: no such .keras file or run folder")
        return path
    from .config import save_config, unet_stage_config

    stage_dir = run_dir / "unet_stage"
    if not (stage_dir / "config.json").is_file():
        stage = unet_stage_config(config)
        (stage_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        save_config(stage, stage_dir / "config.json")
        _write_json(stage_dir / "run.json", {"name": stage["name"], "seed": int(stage["training"]["seed"]),
                                             "blends_dir": record.get("blends_dir"),
                                             "sample_path": record.get("sample_path"), "status": "created",
                                             "stage_of": config["name"]})
        _write_json(stage_dir / CHECKPOINT_DIR / "state.json", _initial_state(stage))
    stage_record = _read_json(stage_dir / "run.json")
    if stage_record.get("status") != "finished":
        print(f"blend2mask2flux: training the U-Net first in {stage_dir}", flush=True)
        stage_record = _run(stage_dir, backend=backend, verbose=verbose, resuming=True,
                            max_wall_time_s=config["training"].get("max_wall_time_s"))
        if stage_record["status"] != "finished":
            raise _Paused(f"U-Net stage paused ({stage_record.get('stopped')}); resume the run to continue")
    return stage_dir / "model.keras"


class _Paused(Exception):
    """A stage stopped on its time limit: the parent run stops too, resumable."""


def _devices() -> list[str]:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    return []
