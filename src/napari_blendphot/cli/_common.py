"""Helpers shared by the CLI commands."""

from __future__ import annotations

import sys


def add_overwrite(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (never done without this option)")


def progress_printer(label: str, stream=None):
    """A ``progress(done, total)`` callback drawing a one-line text bar on stderr."""
    stream = stream or sys.stderr
    state = {"last": -1}

    def progress(done: int, total: int) -> None:
        if total <= 0:
            return
        percent = int(100 * done / total)
        if percent == state["last"] and done != total:
            return
        state["last"] = percent
        width = 30
        filled = int(width * done / total)
        end = "\n" if done >= total else ""
        if stream.isatty() or done >= total or percent % 10 == 0:
            stream.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{end}")
            stream.flush()

    return progress
