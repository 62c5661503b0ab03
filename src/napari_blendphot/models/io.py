"""Saving and loading the networks as ``.keras`` files, safely and with clear errors.

:func:`load_model` registers this package's layers, refuses files that would
run arbitrary code (``Lambda`` layers, unknown classes) in safe mode, and turns
every failure -- missing file, not a ``.keras`` archive, corrupted archive,
wrong network for the job -- into an :class:`~napari_blendphot.errors.InputError`
naming the file.  :func:`save_model` never overwrites silently and writes
through a temporary file so an interrupted save leaves no half-written model.

Keras is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from napari_blendphot.errors import InputError, check_output_path

from napari_blendphot.models import ARCHITECTURES, STORED_MEMBERS_PREFIX

#: The roles a loaded model can be checked against (``expect=``): the network architectures.
ROLES = ARCHITECTURES

_KERAS_MEMBERS = ("config.json", "metadata.json")


def save_model(model, path, overwrite: bool = False, compress: bool = False) -> Path:
    """Save ``model`` to a ``.keras`` file.

    Parameters
    ----------
    model : keras.Model
    path : str or path-like
        Must end in ``.keras``; its folder must exist.
    overwrite : bool
        Replace an existing file (otherwise :class:`OutputExistsError`).
    compress : bool
        Deflate the archive's members (Keras stores them uncompressed).  Any
        zip reader, Keras included, loads it as it is; it pays for weights
        rounded to 16 bits (:func:`~napari_blendphot.models.networks.round_weights`),
        whose zero low bytes halve the file.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise InputError(path, "a model file must end in '.keras'", "Keras 3's native format")
    if not path.parent.is_dir():
        raise InputError(path, f"folder {str(path.parent)!r} does not exist")
    check_output_path(path, overwrite)
    # Write beside the target then rename: an interrupted save never leaves a
    # truncated file under the final name.
    from napari_blendphot.atomic import atomic_output

    with atomic_output(path, suffix=".keras", replace=overwrite) as temporary:
        model.save(str(temporary))
        if compress:
            deflate_archive(temporary)
    return path


def deflate_archive(path) -> None:
    """Rewrite the zip archive *path* with every member deflated (same names, same bytes once read)."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info.filename)) for info in archive.infolist()]
    rewritten = path.with_name(path.name + ".deflating")
    try:
        with zipfile.ZipFile(rewritten, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for info, data in members:
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
        rewritten.replace(path)
    finally:
        rewritten.unlink(missing_ok=True)


def read_keras_config(path) -> dict:
    """The model configuration stored in a ``.keras`` archive, without loading weights.

    Raises :class:`InputError` naming the file if it is missing or is not a
    readable Keras 3 archive.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "model file not found", "give the path of a '.keras' file or a shipped model name")
    if not path.is_file():
        raise InputError(path, "is not a file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            starts_like_zip = handle.read(4) == b"PK\x03\x04"
        if starts_like_zip:
            # A zip whose central directory (at the end) is gone: a cut download.
            raise InputError(path, "is a truncated or corrupted '.keras' archive", "download or save it again")
        raise InputError(
            path, "is not a Keras 3 '.keras' archive (not a zip file)",
            "old '.h5' / SavedModel files must be re-saved with Keras 3 as '.keras'",
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [member for member in _KERAS_MEMBERS if member not in names]
            if missing:
                raise InputError(path, f"is a zip file but not a Keras model archive (no {', '.join(missing)})")
            bad_member = archive.testzip()
            if bad_member is not None:
                raise InputError(path, f"is corrupted (bad CRC in {bad_member!r})", "download or save it again")
            return json.loads(archive.read("config.json"))
    except InputError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise InputError(path, f"is corrupted ({error})", "download or save it again") from error


def _layer_classes(config) -> list[tuple[str, str | None, str | None]]:
    """All (class_name, module, registered_name) of serialised objects in a config tree."""
    found = []
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "class_name" in node and isinstance(node["class_name"], str):
                found.append((node["class_name"], node.get("module"), node.get("registered_name")))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def load_model(path, safe_mode: bool = True, compile: bool = False, expect: str | None = None,
               stored_members_ok: bool = False):
    """Load a ``.keras`` model saved by this package (any Keras backend).

    Parameters
    ----------
    path : str or path-like
    safe_mode : bool
        Refuse anything that would run code stored in the file (Lambda
        layers, pickled functions).  Leave it on for files you did not make.
    compile : bool
        Restore the optimiser and losses too (same backend only; ``False`` is
        what prediction and cross-backend loading need).
    expect : {"blend2flux", "unet", "blend2mask2flux"}, optional
        Check that the model has that network's inputs and outputs.
    stored_members_ok : bool
        Load a file that holds only part of an ensemble (the members it does
        not share with other shipped models; :data:`~napari_blendphot.models.STORED_MEMBERS_PREFIX`).
        Only :func:`~napari_blendphot.models.manifests.load_manifest_model`,
        which adds the shared members, asks for it: anything else would run
        a partial ensemble without knowing it.

    Returns
    -------
    keras.Model
    """
    if expect is not None and expect not in ROLES:
        raise ValueError(f"expect must be one of {ROLES}, got {expect!r}")
    path = Path(path)
    config = read_keras_config(path)
    stored_name = str((config.get("config") or {}).get("name") or "") if isinstance(config, dict) else ""
    if stored_name.startswith(STORED_MEMBERS_PREFIX) and not stored_members_ok:
        raise InputError(
            path, f"holds only the members that ensemble {stored_name[len(STORED_MEMBERS_PREFIX):]!r} stores "
                  "itself, not the shipped members it shares",
            "load it by its manifest (its shipped name or its .json), which adds them",
        )
    if safe_mode:
        lambdas = sorted({cls for cls, _, _ in _layer_classes(config) if cls == "Lambda"})
        if lambdas:
            raise InputError(
                path, "contains a Lambda layer, which would run code stored in the file; refused in safe mode",
                "only load such a file if you trust it, with safe_mode=False",
            )

    import keras

    # Registers StampNormalization, FluxOutput, ... and the losses before Keras resolves names.
    from napari_blendphot.models import layers as _layers  # noqa: F401
    from napari_blendphot.models import losses as _losses  # noqa: F401

    unknown = sorted(
        {
            registered
            for _, module, registered in _layer_classes(config)
            # Functions (losses in compile_config) are module "builtins" and resolved by name by Keras.
            if registered and module != "builtins" and not str(module or "").startswith("keras")
            and keras.saving.get_registered_object(registered) is None
        }
    )
    if unknown:
        raise InputError(
            path, f"uses classes this package does not know ({', '.join(unknown)})",
            "was it saved by napari-blendphot? Custom layers must be registered before loading",
        )
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=safe_mode)
    except InputError:
        raise
    except Exception as error:  # Keras raises many types (TypeError, ValueError, OSError...)
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "lambda" in message.lower() and "safe" in message.lower():
            raise InputError(path, "stores Python code (lambda); refused in safe mode",
                             "only load such a file if you trust it, with safe_mode=False") from error
        if "could not locate" in message.lower() or "unknown layer" in message.lower():
            raise InputError(path, f"uses a class this package does not know ({message})",
                             "was it saved by napari-blendphot?") from error
        raise InputError(path, f"is corrupted or unreadable ({type(error).__name__}: {message})",
                         "download or save it again") from error
    if expect is not None:
        check_role(model, expect, source=path)
    return model


def _shape(tensor) -> tuple:
    return tuple(None if d is None else int(d) for d in tensor.shape)


def describe_outputs(model) -> dict:
    """``{output name: shape}`` of a functional model (dict outputs keep their keys)."""
    structure = model.output
    if isinstance(structure, dict):
        return {key: _shape(value) for key, value in structure.items()}
    if isinstance(structure, (list, tuple)):
        return {tensor.name if hasattr(tensor, "name") else str(i): _shape(tensor) for i, tensor in enumerate(structure)}
    return {getattr(model.layers[-1], "name", "output"): _shape(structure)}


def check_role(model, role: str, source=None) -> None:
    """Raise :class:`InputError` unless ``model`` has the inputs/outputs of ``role``.

    blend2flux: one (N, H, W) input, one (N, 2) output.  unet: one (N, H, W)
    input, one (N, H, W, 2 or 3) output.  blend2mask2flux: one (N, H, W)
    input, outputs ``{"masks": (N, H, W, 2 or 3), "fluxes": (N, 2)}``.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    source = source if source is not None else f"model '{model.name}'"
    inputs = model.inputs
    outputs = describe_outputs(model)
    hint = f"this file does not hold a {role} network"
    if len(inputs) != 1 or len(_shape(inputs[0])) != 3:
        raise InputError(source, f"expected one input of raw stamps (N, H, W), found {[_shape(t) for t in inputs]}", hint)
    height, width = _shape(inputs[0])[1:]
    mask_shapes = {(None, height, width, 2), (None, height, width, 3)}
    # The optional flux-uncertainty output (N, 4) of the flux networks (docs/uncertainty.md).
    errors_ok = outputs.get("flux_uncertainty", (None, 4)) == (None, 4)
    if role == "blend2flux":
        if set(outputs) == {"fluxes", "flux_uncertainty"}:
            ok = outputs["fluxes"] == (None, 2) and errors_ok
        else:
            ok = len(outputs) == 1 and list(outputs.values())[0] == (None, 2)
        wanted = "one output of fluxes (N, 2) (and optionally 'flux_uncertainty' (N, 4))"
    elif role == "unet":
        ok = len(outputs) == 1 and list(outputs.values())[0] in mask_shapes
        wanted = f"one output of masks (N, {height}, {width}, 2 or 3)"
    else:
        ok = (set(outputs) - {"flux_uncertainty"} == {"masks", "fluxes"} and outputs["fluxes"] == (None, 2)
              and outputs["masks"] in mask_shapes and errors_ok)
        wanted = (f"outputs {{'masks': (N, {height}, {width}, 2 or 3), 'fluxes': (N, 2)}} "
                  "(and optionally 'flux_uncertainty' (N, 4))")
    if not ok:
        raise InputError(source, f"expected {wanted}, found {outputs}", hint)
