"""The ``blendphot`` command line: a thin front over the library.

Each sub-command lives in its own module ``napari_blendphot.cli._<name>`` that
defines ``register(subparsers)``; heavy imports happen inside the command
functions so that ``blendphot --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from napari_blendphot import __version__
from napari_blendphot.errors import BlendphotError

# Order = order in ``blendphot --help`` (the pipeline's order).
_COMMAND_MODULES = (
    "_fetch",        # fetch-candels
    "_make_sample",  # make-sample
    "_info",         # info
    "_blend",        # blend
    "_predict",      # predict
    "_measure",      # measure (field mode)
    "_evaluate",     # evaluate
    "_calibrate",    # calibrate-errors
    "_curate",       # curate-export
    "_demo",         # demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blendphot",
        description="Photometry of blended galaxies: CANDELS samples, blends, deblending networks "
                    "(Boucaud et al. 2020) and the SEP baseline.",
    )
    parser.add_argument("--version", action="version", version=f"napari-blendphot {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{module_name}").register(subparsers)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``blendphot`` console script; returns the exit code."""
    return run_parser(build_parser(), argv, prog="blendphot")


def run_parser(parser: argparse.ArgumentParser, argv, prog: str) -> int:
    """Parse *argv*, run the chosen sub-command and turn our errors into exit codes.

    Bad input (:class:`BlendphotError`) and any failure of the system
    (:class:`OSError`: a full disk, a read-only folder, a file where a folder
    belongs) are one line on stderr and exit code 2, never a traceback; Ctrl-C
    is exit code 130; output into a closed pipe (``| head -1``) ends quietly
    with 141, the status of a process ended by SIGPIPE.  Shared by
    ``blendphot`` and ``python -m training``.
    """
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BlendphotError as exc:
        return _error(prog, args.command, str(exc))
    except BrokenPipeError:
        _silence_closed_streams()
        return PIPE_CLOSED_STATUS
    except OSError as exc:
        return _error(prog, args.command, os_error_message(exc))
    except KeyboardInterrupt:
        _print_quietly(f"{prog} {args.command}: interrupted")
        return 130
    return int(result or 0)


#: Exit status of a command whose output pipe was closed (128 + SIGPIPE, what shells report).
PIPE_CLOSED_STATUS = 141


def os_error_message(exc: OSError) -> str:
    """``path: problem`` for an :class:`OSError` (temporaries shown as the output they stand for)."""
    from napari_blendphot.atomic import display_path

    problem = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        target = f" -> {display_path(exc.filename2)}" if getattr(exc, "filename2", None) else ""
        return f"{display_path(exc.filename)}{target}: {problem}"
    return problem


def _error(prog: str, command: str, message: str) -> int:
    _print_quietly(f"{prog} {command}: error: {message}")
    return 2


def _print_quietly(line: str) -> None:
    try:
        print(line, file=sys.stderr)
    except (BrokenPipeError, ValueError):
        _silence_closed_streams()


def _silence_closed_streams() -> None:
    """Point stdout and stderr at /dev/null so that the interpreter's final flush finds no closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
