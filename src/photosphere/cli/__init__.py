"""The ``photosphere`` command: thin wrappers over the library, one module per command group.

Every command that produces a result accepts ``--json`` and then prints exactly one JSON document
on stdout (logs and progress bars go to stderr). User mistakes exit with status 2 and a one-line
message naming the problem and the fix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .. import __version__
from ..errors import PhotosphereError
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PhotosphereError as exc:
        print(f"photosphere {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("photosphere: interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
