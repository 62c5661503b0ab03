"""Registry of trained network weights: shipped models and the user's own files.

A model is a ``<name>.keras`` file with a ``<name>.json`` manifest beside it.
Shipped models live in ``napari_blendphot/models/weights/``.  The manifest
says what the file is and how it was made::

    {
      "format": "blendphot-model-manifest", "format_version": 1,
      "name": "blend2flux_mock_f64",
      "method": "blend2flux",                  # or "unet", "blend2mask2flux"
      "architecture": {"filters": 64, ...},    # the builder's keyword arguments
      "trained_on": {"description": ..., "sample_sha256": ..., "seed": ...},
      "test_metrics": {"flux_mape_percent": ..., ...},
      "file": "blend2flux_mock_f64.keras",
      "sha256": "<sha256 of the .keras file>",
      "keras_version": "3.15.1", "backend": "jax",
      "default": false, "notes": ""
    }

The sha256 is checked before a model is loaded (:func:`verify`), so a
truncated download or an edited file is reported, not silently used.

Shared members: a deep ensemble one of whose members is itself a shipped
network stores only its other members in its file (the package's weights
must stay within 40 MB, and a blend2flux member is ~5 MB); its manifest's
``architecture.shared_members`` lists the shared ones -- ``{"name", "file",
"sha256", "position"}``, position being the 0-based index in the member
order -- whose files lie in the same folder.  :func:`verify` checks them too
and :func:`load_manifest_model` puts the whole ensemble back together.

Importing this module does not import Keras; only :func:`load_registered_model`
does, when it loads.  (It was ``models/registry.py``; the method registry is
:mod:`napari_blendphot.deblend.registry`.)
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from napari_blendphot.errors import InputError, check_output_path
from napari_blendphot.models import ARCHITECTURES
from napari_blendphot.provenance import sha256_file

#: Folder of the shipped models.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Networks a manifest can describe (its ``method`` field, a name kept for the files already written).
METHODS = ARCHITECTURES
MANIFEST_FORMAT = "blendphot-model-manifest"
MANIFEST_VERSION = 1

_REQUIRED = ("name", "method", "architecture", "trained_on", "test_metrics", "file", "sha256", "keras_version", "backend")


@dataclass(frozen=True)
class Manifest:
    """What a ``.keras`` file holds and how it was made (one JSON file beside it).

    ``path`` (the ``.keras`` file) and ``manifest_path`` are not stored in the
    JSON; they are set when the manifest is read.
    """

    name: str
    method: str
    architecture: dict
    trained_on: dict
    test_metrics: dict
    file: str
    sha256: str
    keras_version: str
    backend: str
    default: bool = False
    notes: str = ""
    #: How the network's predicted errors are calibrated (``metrics.calibration``'s model per galaxy
    #: role: ``{"model", "parameters": {"central": {"a", "b", "k95", ...}, "companion": {...}},
    #: "provenance"}``); empty for a model without one (errors as the network predicts them).
    flux_error_calibration: dict = field(default_factory=dict)
    #: A correction of the method's fluxes before its errors are calibrated (``metrics.flux_correction``:
    #: ``{"model", "parameters": {"dmag_edges", "factors", "n"}, "provenance"}``); empty for none.
    flux_correction: dict = field(default_factory=dict)
    manifest_path: Path | None = field(default=None, compare=False)

    @property
    def path(self) -> Path:
        """The ``.keras`` file (beside the manifest)."""
        folder = self.manifest_path.parent if self.manifest_path is not None else Path.cwd()
        return folder / self.file

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): the same manifest gives the same bytes."""
        record = asdict(self)
        record.pop("manifest_path")
        if not record["flux_correction"]:  # manifests without one keep the bytes they had before the field
            record.pop("flux_correction")
        record = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, **record}
        return json.dumps(record, sort_keys=True, indent=2) + "\n"

    @classmethod
    def read(cls, manifest_path) -> "Manifest":
        """Read and validate a manifest; :class:`InputError` naming the file if it is bad."""
        manifest_path = Path(manifest_path)
        try:
            record = json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(manifest_path, "model manifest not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(manifest_path, f"is not a readable JSON manifest ({error})") from error
        if not isinstance(record, dict) or record.get("format") != MANIFEST_FORMAT:
            raise InputError(manifest_path, f"is not a napari-blendphot model manifest (format != {MANIFEST_FORMAT!r})")
        if record.get("format_version") != MANIFEST_VERSION:
            raise InputError(
                manifest_path, f"manifest format_version {record.get('format_version')!r} is not supported",
                f"this version reads format_version {MANIFEST_VERSION}",
            )
        missing = [key for key in _REQUIRED if key not in record]
        if missing:
            raise InputError(manifest_path, f"manifest lacks {', '.join(missing)}")
        if record["method"] not in METHODS:
            raise InputError(manifest_path, f"unknown method {record['method']!r}", f"one of {', '.join(METHODS)}")
        for key in ("architecture", "trained_on", "test_metrics", "flux_error_calibration", "flux_correction"):
            if key in record and not isinstance(record[key], dict):
                raise InputError(manifest_path, f"manifest field {key!r} must be an object")
        if Path(record["file"]).name != record["file"]:
            raise InputError(manifest_path, f"manifest 'file' must be a bare file name, got {record['file']!r}")
        known = {name for name in cls.__dataclass_fields__ if name != "manifest_path"}
        values = {key: value for key, value in record.items() if key in known}
        return cls(**values, manifest_path=manifest_path)


def _manifest_paths(weights_dir: Path) -> list[Path]:
    if not weights_dir.is_dir():
        return []
    return sorted(weights_dir.glob("*.json"))


def list_shipped_models(weights_dir=None) -> list[Manifest]:
    """Manifests of the models in ``weights_dir`` (default: the shipped ones), sorted by name.

    A malformed manifest raises :class:`InputError` naming it: a shipped
    model that cannot be described is a packaging bug, not something to hide.
    """
    weights_dir = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    manifests = [Manifest.read(path) for path in _manifest_paths(weights_dir)]
    return sorted(manifests, key=lambda manifest: manifest.name)


def default_model(method: str, weights_dir=None) -> Manifest | None:
    """The shipped model to use for ``method``: the one flagged ``default``, else the first by name; None if none."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    candidates = [manifest for manifest in list_shipped_models(weights_dir) if manifest.method == method]
    if not candidates:
        return None
    flagged = [manifest for manifest in candidates if manifest.default]
    return (flagged or candidates)[0]


def shipped_model(name: str, weights_dir=None) -> Manifest | None:
    """The shipped model called *name* (its manifest), or None when it is not installed."""
    return next((manifest for manifest in list_shipped_models(weights_dir) if manifest.name == name), None)


def verify(manifest: Manifest) -> Path:
    """Check that the manifest's ``.keras`` file exists and has the recorded sha256.

    The files of an ensemble's shared members (:func:`shared_members`) are
    checked the same way (:func:`verify_shared_members`).  Returns the
    file's path; raises :class:`InputError` naming the file otherwise.
    """
    path = manifest.path
    if not path.is_file():
        raise InputError(path, f"model file of manifest {manifest.name!r} is missing",
                         "reinstall napari-blendphot or fetch the model again")
    digest = sha256_file(path)
    if digest != manifest.sha256:
        raise InputError(
            path, f"sha256 {digest[:12]}... does not match the manifest's {manifest.sha256[:12]}... (file corrupted or changed)",
            "reinstall napari-blendphot or fetch the model again",
        )
    verify_shared_members(manifest)
    return path


def shared_members(manifest: Manifest) -> list[dict]:
    """The members an ensemble shares with other shipped models, by position (empty for most models).

    Each is ``{"name", "file", "sha256", "position"}`` from the manifest's
    ``architecture.shared_members``; a malformed entry is an
    :class:`InputError` naming the manifest.
    """
    entries = manifest.architecture.get("shared_members") or []
    source = manifest.manifest_path or f"manifest of {manifest.name!r}"
    if not isinstance(entries, list):
        raise InputError(source, "manifest architecture.shared_members must be a list")
    n_members = len(manifest.architecture.get("ensemble_members") or [])
    checked = []
    for entry in entries:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                and isinstance(entry.get("file"), str) and Path(entry["file"]).name == entry["file"]
                and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64
                and isinstance(entry.get("position"), int) and not isinstance(entry["position"], bool)
                and 0 <= entry["position"] < max(n_members, 1)):
            raise InputError(source, f"manifest architecture.shared_members: bad entry {entry!r}",
                             "each needs a name, a bare file name, a sha256 and a position among the "
                             "ensemble_members")
        checked.append(entry)
    positions = [entry["position"] for entry in checked]
    if len(set(positions)) != len(positions):
        raise InputError(source, f"manifest architecture.shared_members: positions {positions} repeat")
    return sorted(checked, key=lambda entry: entry["position"])


def verify_shared_members(manifest: Manifest) -> list[Path]:
    """The files of the ensemble's shared members (beside its manifest), each checked against its sha256.

    A missing file or another sha256 is a one-line :class:`InputError`
    naming the ensemble and the member: loading without it would run a
    different ensemble than the one whose metrics and calibration the
    manifest records.
    """
    paths = []
    for entry in shared_members(manifest):
        path = manifest.path.parent / entry["file"]
        source = f"ensemble {manifest.name!r}"
        if not path.is_file():
            raise InputError(source, f"its shared member {entry['name']!r} is missing ({path})",
                             "reinstall napari-blendphot, or ship that model into the ensemble's folder")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise InputError(source, f"its shared member {entry['name']!r} ({path}) has sha256 {digest[:12]}..., "
                             f"the manifest records {entry['sha256'][:12]}... (the member was changed or replaced)",
                             "reinstall napari-blendphot, or ship the ensemble again with this member")
        paths.append(path)
    return paths


def resolve_weights(name_or_path, expect: str | None = None, weights_dir=None, check_hash: bool = True):
    """Find a model file from a shipped model's name or a path to a ``.keras`` file.

    Parameters
    ----------
    name_or_path : str or path-like
        The name of a shipped model (``list_shipped_models()``), the path of a
        manifest (``.json``), or the path of a ``.keras`` file (the user's own;
        a manifest ``<stem>.json`` beside it is used when present).
    expect : {"blend2flux", "unet", "blend2mask2flux"}, optional
        Required method; checked against the manifest when there is one (a
        bare ``.keras`` file is checked when loaded, by ``io.load_model(expect=...)``).
    check_hash : bool
        Verify the sha256 of files that have a manifest.

    Returns
    -------
    (pathlib.Path, Manifest or None)
    """
    if expect is not None and expect not in METHODS:
        raise ValueError(f"expect must be one of {METHODS}, got {expect!r}")
    text = os.fspath(name_or_path)
    weights_dir = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    manifest = None
    candidate = Path(text)
    looks_like_path = candidate.suffix in (".keras", ".json") or os.sep in text or (os.altsep and os.altsep in text)
    if not looks_like_path:
        shipped = {m.name: m for m in list_shipped_models(weights_dir)}
        if text not in shipped:
            names = ", ".join(sorted(shipped)) or "none installed"
            raise InputError(f"model {text!r}", "is neither a shipped model nor a '.keras' file",
                             f"shipped models: {names}")
        manifest = shipped[text]
    elif candidate.suffix == ".json":
        manifest = Manifest.read(candidate)
    else:
        if not candidate.is_file():
            raise InputError(candidate, "model file not found")
        beside = candidate.with_suffix(".json")
        if beside.is_file():
            manifest = Manifest.read(beside)
            if manifest.file != candidate.name:
                manifest = None  # a JSON of the same stem that describes another file: ignore it
    if manifest is not None:
        if expect is not None and manifest.method != expect:
            raise InputError(manifest.path, f"holds a {manifest.method} network, not {expect}",
                             f"choose a {expect} model")
        path = verify(manifest) if check_hash else manifest.path
        return path, manifest
    return candidate, None


def load_registered_model(name_or_path, expect: str | None = None, weights_dir=None, compile: bool = False):
    """Resolve, verify and load a model in safe mode (imports Keras).

    Returns
    -------
    (keras.Model, Manifest or None)
    """
    path, manifest = resolve_weights(name_or_path, expect=expect, weights_dir=weights_dir)
    role = expect or (manifest.method if manifest is not None else None)
    return load_manifest_model(path, manifest, expect=role, compile=compile), manifest


def load_manifest_model(path, manifest: Manifest | None, expect: str | None = None, compile: bool = False):
    """Load the model file *path* described by *manifest* (None: a file of the user's own), in safe mode.

    A model with shared members (:func:`shared_members`) is put back
    together: the members its file stores, and each shared member loaded
    from its file beside the manifest (sha256 checked again here: a one-line
    :class:`InputError` naming the ensemble and the member), go into
    :func:`~napari_blendphot.models.networks.build_ensemble` in the recorded
    order with the recorded spread weight -- the very ensemble that was
    shipped (same weights, same predictions).  Shared members are rounded
    to the ensemble's 16-bit store as ``python -m training ensemble``
    rounded them (idempotent: a no-op on members shipped rounded already).
    Such an ensemble is never compiled (nothing trains it): *compile* is
    ignored for it.  Imports Keras.
    """
    from napari_blendphot.models.io import check_role, load_model

    entries = shared_members(manifest) if manifest is not None else []
    if not entries:
        return load_model(path, safe_mode=True, compile=compile, expect=expect)
    from napari_blendphot.models import STORED_MEMBERS_PREFIX
    from napari_blendphot.models.networks import ensemble_members, rebuild_ensemble, round_weights

    member_paths = verify_shared_members(manifest)
    stored = load_model(path, safe_mode=True, compile=False, stored_members_ok=True)
    if not stored.name.startswith(STORED_MEMBERS_PREFIX):
        raise InputError(path, f"manifest {manifest.name!r} lists shared members, but the file holds a whole model",
                         "the manifest and the file do not belong together")
    architecture = manifest.architecture
    n_members = len(ensemble_members(stored) or [stored]) + len(entries)
    recorded = architecture.get("ensemble_members")
    if recorded is not None and len(recorded) != n_members:
        raise InputError(path, f"holds {n_members - len(entries)} members and the manifest shares "
                         f"{len(entries)}, but it records {len(recorded)} ensemble members")
    store = architecture.get("stored")
    shared = {}
    for entry, member_path in zip(entries, member_paths):
        member = load_model(member_path, safe_mode=True, compile=False, expect="blend2flux")
        if store in ("bfloat16", "float16"):
            round_weights(member, store)
        shared[entry["position"]] = member
    model = rebuild_ensemble(stored, shared, name=stored.name[len(STORED_MEMBERS_PREFIX):],
                             spread_weight=float(architecture.get("spread_weight", 1.0)))
    if expect is not None:
        check_role(model, expect, source=path)
    return model


def _current_backend() -> str | None:
    keras = sys.modules.get("keras")
    if keras is not None:
        return keras.backend.backend()
    return os.environ.get("KERAS_BACKEND")


def _jsonable(value, where: str):
    """Tuples -> lists; refuse anything JSON cannot hold (say where)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where}: {type(value).__name__} is not JSON serialisable")


def write_manifest(
    model_path,
    method: str,
    architecture: dict,
    trained_on: dict,
    test_metrics: dict,
    name: str | None = None,
    backend: str | None = None,
    keras_version: str | None = None,
    default: bool = False,
    notes: str = "",
    overwrite: bool = False,
    flux_error_calibration: dict | None = None,
) -> Manifest:
    """Write ``<model>.json`` beside a saved ``.keras`` file (used by training).

    Parameters
    ----------
    model_path : path-like
        The saved model; its sha256 goes into the manifest.
    method : {"blend2flux", "unet", "blend2mask2flux"}
    architecture : dict
        The builder's keyword arguments (``networks.BUILDERS[method](**architecture)``
        rebuilds the network).
    trained_on : dict
        Data description, sample/dataset sha256, seed(s), split sizes...
    test_metrics : dict
        Metrics on the held-out test blends.
    name : str, optional
        Defaults to the file's stem.
    backend, keras_version : str, optional
        Default: the backend of the Keras loaded in this process (else
        ``$KERAS_BACKEND``) and the installed Keras version.
    default : bool
        Flag this as the default model of its method.
    overwrite : bool
        Replace an existing manifest.
    flux_error_calibration : dict, optional
        The calibration of the network's errors (see :class:`Manifest`).

    Returns
    -------
    Manifest
    """
    model_path = Path(model_path)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if model_path.suffix != ".keras" or not model_path.is_file():
        raise InputError(model_path, "is not an existing '.keras' model file")
    name = name or model_path.stem
    backend = backend or _current_backend()
    if not backend:
        raise ValueError("backend unknown: pass backend= (Keras is not imported and $KERAS_BACKEND is unset)")
    if keras_version is None:
        try:
            keras_version = metadata.version("keras")
        except metadata.PackageNotFoundError:
            raise ValueError("keras is not installed: pass keras_version=") from None
    manifest_path = model_path.with_suffix(".json")
    check_output_path(manifest_path, overwrite)
    manifest = Manifest(
        name=name,
        method=method,
        architecture=_jsonable(dict(architecture), "architecture"),
        trained_on=_jsonable(dict(trained_on), "trained_on"),
        test_metrics=_jsonable(dict(test_metrics), "test_metrics"),
        file=model_path.name,
        sha256=sha256_file(model_path),
        keras_version=str(keras_version),
        backend=str(backend),
        default=bool(default),
        notes=str(notes),
        flux_error_calibration=_jsonable(dict(flux_error_calibration or {}), "flux_error_calibration"),
        manifest_path=manifest_path,
    )
    from napari_blendphot.atomic import write_text_atomic

    write_text_atomic(manifest_path, manifest.to_json())
    return manifest
