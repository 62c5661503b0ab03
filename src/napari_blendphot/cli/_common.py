"""Helpers shared by the CLI commands."""

from __future__ import annotations

import sys


def add_overwrite(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (never done without this option)")


def _terminal_size(stream) -> tuple[int, int]:
    """(columns, rows) of the terminal, 80 x 24 where it reports none: on a pseudo-terminal without a
    size tqdm would take -1 and print nothing."""
    import os

    try:
        size = os.get_terminal_size(stream.fileno())
        columns, rows = size.columns, size.lines
    except (AttributeError, OSError, ValueError):
        columns = rows = 0
    return (columns if columns > 0 else 80), (rows if rows > 0 else 24)


def progress_printer(label: str, stream=None):
    """A ``progress(done, total)`` callback drawing a progress bar on stderr.

    On a terminal it is a tqdm bar (rate and time left, redrawn in place).
    In a log file (not a terminal) tqdm would write carriage returns into
    one endless line, so one plain line is written each time another tenth is
    passed, whatever the chunk size, and at the end.
    """
    stream = stream or sys.stderr
    interactive = getattr(stream, "isatty", lambda: False)()
    state = {"tenth": -1, "bar": None}

    def on_terminal(done: int, total: int) -> None:
        from tqdm import tqdm

        bar = state["bar"]
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            columns, rows = _terminal_size(stream)
            bar = state["bar"] = tqdm(total=total, desc=label, file=stream, unit="", ncols=columns, nrows=rows,
                                      leave=True, mininterval=0.2)
        bar.update(max(0, min(done, total) - bar.n))
        if done >= total:
            bar.close()
            state["bar"] = None

    def in_a_log(done: int, total: int) -> None:
        percent = int(100 * done / total)
        finished = done >= total
        if percent // 10 == state["tenth"] and not finished:
            return
        state["tenth"] = percent // 10
        width = 30
        filled = int(width * min(done, total) / total)
        stream.write(f"{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}\n")
        stream.flush()

    def progress(done: int, total: int) -> None:
        if total <= 0:
            return
        (on_terminal if interactive else in_a_log)(done, total)

    return progress
