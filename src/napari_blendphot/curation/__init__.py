"""Manual curation of the isolated sample (decisions sidecar, export)."""
