"""The ``photosphere`` command: thin wrappers over the library, one module per command group.

Every command that produces a result accepts ``--json`` and then prints exactly one JSON document
on stdout (logs and progress bars go to stderr). User mistakes exit with status 2 and a one-line
message naming the problem and the fix; a flagged result exits 3, a batch with N failed files
10 + N, an interrupted command 130 (:mod:`photosphere.cli._checks`, docs/errors.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .. import __version__
from ..errors import PhotosphereError
from ._checks import EXIT_INTERRUPTED, EXIT_USER_ERROR
from ._common import emit
from .benchmark import _register_benchmark
from .cannon import _register_cannon
from .demo import _register_demo
from .fit import _register_fit
from .grid import _register_grid
from .info import _register_info
from .lines import _register_lines
from .nn import _register_nn
from .setup import _register_setup

__all__ = ["build_parser", "emit", "main"]

REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _register_info, _register_setup, _register_grid, _register_fit, _register_cannon,
    _register_lines, _register_nn, _register_demo, _register_benchmark]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photosphere",
        description="Stellar spectra to stellar parameters with honest uncertainties.")
    parser.add_argument("--version", action="version", version=f"photosphere {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in REGISTRARS:
        register(sub)
    return parser


def _interrupt_note(args: argparse.Namespace) -> str:
    """What survives a Ctrl-C, per command: only what is true of that command."""
    if args.command == "fit":
        if getattr(args, "output", None) is not None or len(getattr(args, "files", ())) > 1:
            return (f"the rows finished so far are kept in {args.output or 'results.ecsv'}; "
                    "rerun the same command to fit the rest")
        return "nothing was written"
    if args.command == "grid" and getattr(args, "grid_command", None) == "build":
        return "the nodes synthesised so far are kept; rerun the same command to resume"
    if args.command == "nn" and getattr(args, "nn_command", None) == "train":
        return "the last finished epoch is kept in --out; rerun with --resume to continue"
    return "stopped"


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (cli/_checks.py, docs/errors.md)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PhotosphereError as exc:
        print(f"photosphere {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"photosphere {args.command}: interrupted; {_interrupt_note(args)}",
              file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
