"""The ``photosphere`` command: thin wrappers over the library.

Every command that produces a result accepts ``--json`` and then prints exactly one JSON document
on stdout (logs and progress bars go to stderr). User mistakes exit with status 2 and a one-line
message naming the problem and the fix.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from . import __version__
from .errors import PhotosphereError


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    """Print ``payload`` as JSON when ``--json`` was given, else the human-readable ``text``."""
    if getattr(args, "json", False):
        print(json.dumps(_jsonable(payload), indent=2))
    else:
        print(text)


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


# --------------------------------------------------------------------------------------- info
def _format_range(d: dict[str, Any]) -> str:
    if d.get("wavelength_min") is None:
        return "none (no wavelength axis)"
    return (f"{d['wavelength_min']:.3f} - {d['wavelength_max']:.3f} Å "
            f"({d.get('medium') or 'frame unknown'})")


def _cmd_info(args: argparse.Namespace) -> int:
    from .io import describe

    d = describe(args.file, **({"medium": args.medium} if args.medium else {}))
    shape = " x ".join(map(str, d.get("shape") or [])) or "?"
    if d["kind"] == "auxiliary":
        text = "\n".join([
            f"file:        {args.file}",
            f"product:     {d['product']} (not a spectrum)",
            f"what:        {d['description']}",
            f"wavelength:  {_format_range(d)}",
            f"shape:       {shape}",
            f"read with:   {d['reader']}",
        ])
        emit(args, d, text)
        return 0
    snr = d["median_snr"]
    text = "\n".join([
        f"file:        {args.file}",
        f"product:     {d['product']}",
        f"instrument:  {d['instrument'] or 'unknown'}",
        f"object:      {d['object'] or 'unknown'}",
        f"wavelength:  {_format_range(d)}",
        f"shape:       {shape}"
        + (f" ({d['n_orders']} {d['row_kind']}s)" if d["kind"] == "echelle" else ""),
        f"median S/N:  {'unknown' if snr is None or not math.isfinite(snr) else f'{snr:.1f}'}",
        f"masked:      {d['masked_fraction']:.2%}",
    ])
    emit(args, d, text)
    return 0


def _register_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a spectrum file (any supported product)")
    p.add_argument("file", help="FITS, HDF5, .npz or text spectrum (or an auxiliary product)")
    p.add_argument("--medium", choices=("air", "vacuum"), default=None,
                   help="air/vacuum frame of the wavelengths, for files that do not record it")
    _add_json(p)
    p.set_defaults(func=_cmd_info)


# --------------------------------------------------------------------------------------- main
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [_register_info]


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
