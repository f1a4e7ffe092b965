"""``photosphere nn``: neural label estimators."""

from __future__ import annotations

import argparse

from ..infer.validity import print_warnings
from ._checks import EXIT_FLAGGED
from ._common import _add_json, emit


def _cmd_nn(args: argparse.Namespace) -> int:
    payload, text = args.nn_run(args)
    emit(args, payload, text)
    warnings = payload.get("warnings") or [] if isinstance(payload, dict) else []
    print_warnings(warnings, f"nn {args.nn_command}")
    return EXIT_FLAGGED if warnings and not getattr(args, "allow_flagged", False) else 0


def _register_nn(sub: argparse._SubParsersAction) -> None:
    from ..nn.commands import add_arguments

    add_arguments(sub, _add_json)
    sub.choices["nn"].set_defaults(func=_cmd_nn)
