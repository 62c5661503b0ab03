"""napari widgets: thin Qt views over the library (imported by napari only)."""
