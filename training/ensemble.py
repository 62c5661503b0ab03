"""``python -m training ensemble``: a deep ensemble of trained blend2flux networks as one run folder.

Independently trained networks disagree most where they have seen nothing
like the blend (real morphologies, for networks trained on the mock): their
spread is the model's own uncertainty, which a single network's predicted
error cannot know about (docs/uncertainty.md, "Deep ensemble").  This
command puts the members into one Keras model
(:func:`napari_blendphot.models.networks.build_ensemble`) and writes a new
run folder -- ``model.keras``, ``config.json``, ``run.json`` -- that
``python -m training ship`` ships like any run, and that ``blendphot predict
--methods ensemble --weights ensemble=RUN/model.keras`` runs before that.

Storage: with ``store="bfloat16"`` (the default) every weight is rounded to
the nearest bfloat16 value and the archive is deflated
(:func:`~napari_blendphot.models.networks.round_weights`), about 2.9 MB per
blend2flux member instead of 6.5 MB; the rounding's effect on the fluxes is
for held-out blends to show before shipping (docs/training.md, "Round 4").
Nothing is trained here.

Shared members (``share``, ``--share NAME``): a member that is a shipped
model already is kept by reference when the ensemble ships, so its weights
are not stored twice in the package (whose weights must stay within 40 MB).
The run folder still holds the whole ensemble (it runs as it is before
shipping); ``run.json`` and ``config.json`` record the shared members --
name, file, sha256 of the shipped file, 0-based position in the member
order -- and ``python -m training ship`` writes only the others.
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_blendphot.errors import InputError

#: How the members' weights can be stored: float32 as trained, or rounded to 16 bits and deflated.
STORES = ("float32", "bfloat16", "float16")


def _member_source(member: str) -> dict:
    """Where a member comes from: ``{"path", "name", "record"}`` for a run folder, a ``.keras`` file or a shipped name."""
    from napari_blendphot.models.manifests import resolve_weights
    from napari_blendphot.provenance import sha256_file

    candidate = Path(member)
    if candidate.is_dir():
        for required in ("model.keras", "config.json", "run.json"):
            if not (candidate / required).is_file():
                raise InputError(candidate / required, "missing: an ensemble member given as a run folder needs "
                                 "model.keras, config.json and run.json")
        from .ship import _stage

        path = candidate / "model.keras"
        record = {"run": _stage(candidate)}
        run = json.loads((candidate / "run.json").read_text())
        record["data"] = run.get("data")
        record["seed"] = run.get("seed")
        name = json.loads((candidate / "config.json").read_text()).get("name") or candidate.name
    else:
        path, manifest = resolve_weights(member, expect="blend2flux")
        path = Path(path)
        name = manifest.name if manifest is not None else path.stem
        record = {"trained_on": manifest.trained_on} if manifest is not None else {}
    return {"name": name, "file": path.name, "source": str(member), "sha256": sha256_file(path), "path": path,
            **record}


def _shared_members(share, sources: list[dict]) -> list[dict]:
    """The ``shared_members`` records of the names in *share*: each a shipped model that is one of *sources*.

    A name that is not a shipped model (in the package's weights folder,
    with a manifest), or is one but not a member, is a one-line
    :class:`InputError` naming it.
    """
    from napari_blendphot.models.manifests import WEIGHTS_DIR, shipped_model, verify

    shared = []
    for name in dict.fromkeys(share):  # once each, in the order given
        manifest = shipped_model(name)
        if manifest is None:
            raise InputError(f"--share {name!r}", f"is not a shipped model (no manifest of that name in {WEIGHTS_DIR})",
                             "only a model shipped with the package can be shared: give it by that name")
        verify(manifest)
        position = next((index for index, source in enumerate(sources) if source["sha256"] == manifest.sha256), None)
        if position is None:
            raise InputError(f"--share {name!r}", "is not one of the ensemble's members (no member has its sha256)",
                             "members: " + ", ".join(source["name"] for source in sources))
        shared.append({"name": manifest.name, "file": manifest.file, "sha256": manifest.sha256, "position": position})
    if shared and len(shared) == len(sources):
        raise InputError("--share", "shares every member: the ensemble's own file must store one at least")
    return sorted(shared, key=lambda entry: entry["position"])


def make_ensemble(members, output, store: str = "bfloat16", name: str = "blend2flux_ensemble",
                  spread_weight: float = 1.0, share=()) -> dict:
    """Write the run folder *output* holding the ensemble of *members*; return its ``run.json`` record.

    *members*: two or more blend2flux networks with the flux-uncertainty
    output, each a run folder, a ``.keras`` file or a shipped model's name.
    *output* must not exist (a run folder is a record, never replaced); it
    appears whole or not at all.  *spread_weight*: the weight of the members'
    spread in the error (:class:`~napari_blendphot.models.layers.EnsembleMixture`;
    :func:`spread_weight_for` gives the one that keeps it at face value
    through a calibration).  *share*: names of shipped models among the
    members to keep by reference when the run is shipped (module docstring).
    """
    import keras

    from napari_blendphot.models.io import load_model
    from napari_blendphot.models.networks import build_ensemble, round_weights

    from .store import write_model_run

    if store not in STORES:
        raise InputError(f"store {store!r}", f"is not one of {', '.join(STORES)}")
    members = list(members)
    if len(members) < 2:
        raise InputError("ensemble members", f"{len(members)} given, at least two needed")
    output = Path(output)
    if output.exists():
        raise InputError(output, "exists already", "give a new run folder")
    if not output.parent.is_dir():
        raise InputError(output, f"folder {str(output.parent)!r} does not exist")
    sources = [_member_source(member) for member in members]
    digests = [source["sha256"] for source in sources]
    if len(set(digests)) != len(digests):
        raise InputError("ensemble members", "the same network is given twice (equal sha256): members must be "
                         "independently trained")
    shared = _shared_members(share, sources)
    models = []
    for source in sources:
        model = load_model(source["path"], safe_mode=True, compile=False, expect="blend2flux")
        if "flux_uncertainty" not in (model.output if isinstance(model.output, dict) else {}):
            raise InputError(source["path"], "has no flux-uncertainty output: an ensemble member must predict its "
                             "errors (train it with model.uncertainty = true)")
        models.append(model)
    if not (isinstance(spread_weight, (int, float)) and spread_weight >= 0):
        raise InputError(f"spread weight {spread_weight!r}", "must be a number >= 0")
    ensemble = build_ensemble(models, name=name, spread_weight=float(spread_weight))
    rounded = round_weights(ensemble, store) if store != "float32" else 0

    first = next((source for source in sources if source.get("data")), None)
    configs = []
    for source in sources:
        config_path = source["path"].parent / "config.json"
        model_config = None
        if source.get("run") and config_path.is_file():
            model_config = json.loads(config_path.read_text()).get("model")
        configs.append(model_config)
    config = {
        "name": name,
        "method": "ensemble",  # runs as the 'ensemble' deblending method (its results and calibration)
        "description": f"deep ensemble of {len(sources)} blend2flux networks: " + ", ".join(s["name"] for s in sources),
        "model": {"kind": "blend2flux", "ensemble_members": [s["name"] for s in sources],
                  "member_configs": configs, "spread_weight": float(spread_weight),
                  "combine": "EnsembleMixture: mean ln f; s^2 = mean s_i^2 + spread_weight * var ln f_i",
                  "stored": store, **({"shared_members": shared} if shared else {})},
        "training": {"precision": "float32" if store == "float32" else f"{store} storage",
                     "batch_size": None},
    }
    record = {
        "name": name,
        "kind": "blend2flux",
        "status": "finished",
        "stopped": "not trained: members combined by python -m training ensemble",
        "members": [{key: value for key, value in source.items() if key != "path"} for source in sources],
        "store": store,
        "spread_weight": float(spread_weight),
        **({"shared_members": shared} if shared else {}),
        "rounded_arrays": rounded,
        "parameters": int(ensemble.count_params()),
        "data": (first or {}).get("data") or {},
        "seed": None,
        "backend": keras.backend.backend(),  # the one that wrote the file (the members were trained under theirs)
    }
    return write_model_run(output, ensemble, config, record, compress=store != "float32")


def spread_weight_for(calibration) -> float:
    """The spread weight that keeps the members' spread at face value through *calibration*: ``1 / a^2``.

    *calibration*: a ``blendphot calibrate-errors fit`` file of an ensemble
    (or its loaded :class:`~napari_blendphot.metrics.calibration.FluxErrorCalibration`).
    A calibration scales the whole error by ``a`` (per galaxy role; their
    mean is used).  Fitted on mock blends, ``a`` corrects the members' own
    noise estimate; the spread -- what the members cannot learn from the
    mock -- should not shrink with it, which holds when ``a^2 w = 1``.
    Rebuilding with this weight and fitting again moves ``a`` a little
    (the spread takes a larger share of the error): repeat until the weight
    stops changing (a fixed point; twice was enough for the shipped one,
    docs/uncertainty.md).
    """
    from napari_blendphot.metrics.calibration import FluxErrorCalibration

    if not isinstance(calibration, FluxErrorCalibration):
        calibration = FluxErrorCalibration.load(calibration)
    scales = []
    for method, roles in calibration.parameters.items():
        for role, parameters in roles.items():
            scales.append(float(parameters["a"]))
    if not scales or not all(a > 0 for a in scales):
        raise InputError(calibration.source or "calibration", "has no positive error scale 'a'")
    a = sum(scales) / len(scales)
    return 1.0 / (a * a)
