"""Write each member of a shipped deep ensemble as its own .keras model (to fine-tune it on the device).

    python training/device/extract_members.py blend2flux_ensemble_v5 /tmp/bp/members

Writes member_1.keras, member_2.keras, ... in the ensemble's order, which is the
order of ``trained_on.members`` in its manifest (printed beside each file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    from napari_blendphot.models.manifests import load_manifest_model, shipped_model
    from napari_blendphot.models.networks import ensemble_members

    manifest = shipped_model(argv[0])
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    members = ensemble_members(load_manifest_model(manifest.path, manifest))  # shared members put back too
    names = [m.get("name") or m.get("trained_on", {}).get("config") for m in manifest.trained_on.get("members", [])]
    for index, member in enumerate(members):
        path = out / f"{member.name}.keras"
        member.save(path)
        print(json.dumps({"file": str(path), "member": names[index] if index < len(names) else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
