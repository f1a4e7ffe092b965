"""Shared helpers of the command modules: JSON output and the ``--json`` flag."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._json import plain as _jsonable


def emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    """Print ``payload`` as JSON when ``--json`` was given, else the human-readable ``text``."""
    if getattr(args, "json", False):
        print(json.dumps(_jsonable(payload), indent=2))
    else:
        print(text)


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def add_medium(p: argparse.ArgumentParser) -> None:
    """The ``--medium`` option of every command that reads spectra."""
    p.add_argument("--medium", choices=("air", "vacuum"), default=None,
                   help="air/vacuum frame of the spectrum's wavelengths, for files that do not "
                        "record it (default: air for optical wavelengths, marked as assumed)")


def medium_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``{"medium": ...}`` for :func:`photosphere.io.read` when ``--medium`` was given."""
    medium = getattr(args, "medium", None)
    return {"medium": medium} if medium else {}
