"""``python -m training swap-unet``: a blend2mask2flux run with another trained U-Net put inside.

Round 2 trained blend2mask2flux's flux head on a frozen U-Net (call 1's);
the shipped ``unet`` is that U-Net after one more epoch.  With the same
U-Net in both, running the two methods costs one U-Net pass
(napari_blendphot.deblend.keras_methods, "Shared U-Net pass").  This command
writes a new run folder: the blend2mask2flux model with the U-Net's layers
copied in (``load_unet_weights``: by name, shapes checked), the run's
``config.json`` and ``log.csv``, and its ``run.json`` with what was swapped
(``unet_replaced``: the file, its sha256, the layers).  Nothing is
retrained: whether the head still measures fluxes as well is for held-out
blends to say (``blendphot predict`` with both files), before shipping the
new run with ``python -m training ship``.
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_blendphot.errors import InputError


def swap_unet(run_dir, unet, output) -> dict:
    """Write *output*: *run_dir*'s blend2mask2flux with *unet*'s U-Net (a ``.keras`` file or a run folder).

    *output* must not exist (a run folder is a record: never replaced).
    Returns the new ``run.json`` record.
    """
    from napari_blendphot.models.io import load_model
    from napari_blendphot.models.networks import load_unet_weights, unet_fingerprint
    from napari_blendphot.provenance import sha256_file

    from .store import write_model_run

    run_dir, output = Path(run_dir), Path(output)
    unet_path = Path(unet)
    if unet_path.is_dir():
        unet_path = unet_path / "model.keras"
    for path in (run_dir / "model.keras", run_dir / "config.json", run_dir / "run.json", unet_path):
        if not path.is_file():
            raise InputError(path, "missing")
    config = json.loads((run_dir / "config.json").read_text())
    if config.get("model", {}).get("kind") != "blend2mask2flux":
        raise InputError(run_dir, f"is a {config.get('model', {}).get('kind')!r} run, not a blend2mask2flux one")
    if output.exists():
        raise InputError(output, "exists already", "give a new run folder")
    model = load_model(run_dir / "model.keras", safe_mode=True, compile=False, expect="blend2mask2flux")
    donor = load_model(unet_path, safe_mode=True, compile=False, expect="unet")
    before = unet_fingerprint(model)
    copied = load_unet_weights(model, donor)
    record = json.loads((run_dir / "run.json").read_text())
    record["unet_replaced"] = {"file": unet_path.name, "sha256": sha256_file(unet_path), "layers": len(copied),
                               "fingerprint_before": before, "fingerprint_after": unet_fingerprint(model),
                               "from_run": run_dir.name}
    if record["unet_replaced"]["fingerprint_after"] != unet_fingerprint(donor):
        raise InputError(unet_path, "its U-Net did not fully replace the run's (fingerprints differ)")
    config.setdefault("model", {})["unet_weights"] = str(unet_path)
    log = run_dir / "log.csv"
    return write_model_run(output, model, config, record, compress=False, copies=[log] if log.is_file() else [])
