"""napari notifications for the widgets (one place, so every widget reports alike)."""

from __future__ import annotations


def notify(kind: str, message: str) -> None:
    """Show *message* as a napari notification; *kind* is "error", "warning" or "info"."""
    from napari.utils import notifications

    {"error": notifications.show_error, "warning": notifications.show_warning,
     "info": notifications.show_info}[kind](message)
