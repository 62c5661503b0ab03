"""The ``blendphot`` command line: a thin front over the library.

Each sub-command lives in its own module ``napari_blendphot.cli._<name>`` that
defines ``register(subparsers)``; heavy imports happen inside the command
functions so that ``blendphot --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
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

    Bad input (:class:`BlendphotError`) is one line on stderr and exit code 2,
    never a traceback; Ctrl-C is exit code 130.  Shared by ``blendphot`` and
    ``python -m training``.
    """
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except BlendphotError as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
