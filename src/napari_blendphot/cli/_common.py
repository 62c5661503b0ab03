"""Helpers shared by the CLI commands."""

from __future__ import annotations

import sys


def add_overwrite(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (never done without this option)")


def progress_printer(label: str, stream=None):
    """A ``progress(done, total)`` callback drawing a text bar on stderr.

    On a terminal the bar is redrawn in place at every percent; in a log file
    (not a terminal) one line is written each time another tenth is passed,
    whatever the chunk size, and at the end.
    """
    stream = stream or sys.stderr
    interactive = getattr(stream, "isatty", lambda: False)()
    state = {"percent": -1, "tenth": -1}

    def progress(done: int, total: int) -> None:
        if total <= 0:
            return
        percent = int(100 * done / total)
        finished = done >= total
        if interactive:
            if percent == state["percent"] and not finished:
                return
        elif percent // 10 == state["tenth"] and not finished:
            return
        state["percent"], state["tenth"] = percent, percent // 10
        width = 30
        filled = int(width * min(done, total) / total)
        bar = f"{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
        if interactive:
            stream.write(f"\r{bar}" + ("\n" if finished else ""))
        else:
            stream.write(bar + "\n")
        stream.flush()

    return progress
