"""``photosphere nn``: neural label estimators."""

from __future__ import annotations

import argparse

from ._common import _add_json, emit


def _cmd_nn(args: argparse.Namespace) -> int:
    payload, text = args.nn_run(args)
    emit(args, payload, text)
    return 0


def _register_nn(sub: argparse._SubParsersAction) -> None:
    from ..nn.commands import add_arguments

    add_arguments(sub, _add_json)
    sub.choices["nn"].set_defaults(func=_cmd_nn)
