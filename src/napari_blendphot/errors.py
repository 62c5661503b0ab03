"""Errors raised for bad user input.

Every error names the input (a file, a layer, an argument) and the problem, so
that the CLI can print it as one line and the GUI can show it as a notification.
"""

from __future__ import annotations

import os


class BlendphotError(Exception):
    """Base class of the errors this package raises on purpose."""


class InputError(BlendphotError, ValueError):
    """An input (file, array, table, argument) is missing or malformed.

    Parameters
    ----------
    source : str or path-like
        What the input is: a path, ``"layer 'blend'"``, ``"argument --seed"``...
    problem : str
        What is wrong with it, in plain words.
    hint : str, optional
        What the user can do about it.
    """

    def __init__(self, source, problem: str, hint: str | None = None):
        self.source = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
        self.problem = problem
        self.hint = hint
        message = f"{self.source}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class OutputExistsError(BlendphotError, FileExistsError):
    """Refusing to overwrite something the user already has on disk."""

    def __init__(self, path, option: str = "--overwrite"):
        self.path = os.fspath(path)
        super().__init__(
            f"{self.path}: already exists and would be overwritten "
            f"(choose another output or pass {option})"
        )


class WorkerError(BlendphotError, RuntimeError):
    """The inference worker process failed or died."""


def check_output_path(path, overwrite: bool, option: str = "--overwrite") -> None:
    """Raise :class:`OutputExistsError` if *path* exists and *overwrite* is false."""
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(path, option)
