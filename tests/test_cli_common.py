"""The CLI's progress bar, on a terminal and in a log file."""

import io

from napari_blendphot.cli._common import progress_printer


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_file_gets_a_line_per_tenth_whatever_the_chunks():
    # Regression: in a log file only exact multiples of 10% were printed, so
    # 256-blend chunks of 1,500 blends printed nothing before the end.
    log = io.StringIO()
    progress = progress_printer("predict", log)
    for done in range(256, 1500, 256):
        progress(done, 1500)
    progress(1500, 1500)
    lines = log.getvalue().splitlines()
    assert len(lines) == 6 and lines[-1].endswith("1500/1500")
    assert "\r" not in log.getvalue()
    assert [line.split()[-1] for line in lines[:2]] == ["256/1500", "512/1500"]


def test_terminal_bar_is_tqdm_redrawn_in_place():
    term = _Terminal()
    progress = progress_printer("blend", term)
    for done in (1, 1, 2, 3):
        progress(done, 3)
    text = term.getvalue()
    assert text.count("\r") >= 2 and text.rstrip().endswith("]") and "3/3" in text
    assert text.endswith("\n") and "blend: 100%" in text  # tqdm's bar, closed at the end


def test_nothing_for_an_empty_total():
    log = io.StringIO()
    progress_printer("x", log)(0, 0)
    assert log.getvalue() == ""


def test_a_terminal_without_a_size_still_shows_the_counts():
    # Regression: a pseudo-terminal that reports no size (as under a job runner) made tqdm take
    # -1 rows and print nothing, so the bar and its "done/total" counts were blank.
    import os
    import pty

    master, slave = pty.openpty()
    with os.fdopen(slave, "w", closefd=True) as terminal:
        progress = progress_printer("predict", terminal)
        for done in (500, 1000, 2000):
            progress(done, 2000)
    chunks = []
    while True:  # everything written, until the closed end reads as EIO
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "2000/2000" in text and "predict" in text
