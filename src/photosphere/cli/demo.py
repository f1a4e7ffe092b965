"""``photosphere demo``: the whole pipeline on data the package makes itself."""

from __future__ import annotations

import argparse

from ._common import _add_json, emit


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import format_summary, run_demo

    result = run_demo(args.output_dir, seed=args.seed)
    emit(args, result.summary(), format_summary(result))
    return 0


def _register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on data the package makes itself: "
                       "Turbospectrum star, echelle observation, files, fit with the embedded grid")
    p.add_argument("-o", "--output-dir", default="photosphere-demo",
                   help="folder for the files and plots (default: ./photosphere-demo)")
    p.add_argument("--seed", type=int, default=42, help="noise seed")
    _add_json(p)
    p.set_defaults(func=_cmd_demo)
