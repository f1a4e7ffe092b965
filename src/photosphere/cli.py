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
def _describe(spec) -> dict[str, Any]:
    from .spectrum import EchelleSpectrum

    lo, hi = spec.wavelength_range
    meta = spec.meta
    snr = meta.snr if meta.snr is not None else spec.median_snr()
    out = {
        "kind": "echelle" if isinstance(spec, EchelleSpectrum) else "1d",
        "instrument": meta.instrument,
        "object": meta.object_name,
        "wavelength_min": lo,
        "wavelength_max": hi,
        "medium": spec.medium,
        "shape": list(spec.flux.shape),
        "n_orders": spec.n_orders if isinstance(spec, EchelleSpectrum) else 1,
        "median_snr": snr,
        "masked_fraction": spec.masked_fraction,
        "barycentric_correction_kms": meta.barycentric_correction,
        "flux_unit": spec.flux_unit,
        "source": meta.source,
    }
    return out


def _cmd_info(args: argparse.Namespace) -> int:
    from .io import read

    spec = read(args.file)
    d = _describe(spec)
    snr = d["median_snr"]
    text = "\n".join([
        f"file:        {args.file}",
        f"instrument:  {d['instrument'] or 'unknown'}",
        f"object:      {d['object'] or 'unknown'}",
        f"wavelength:  {d['wavelength_min']:.3f} - {d['wavelength_max']:.3f} Å ({d['medium']})",
        f"shape:       {' x '.join(map(str, d['shape']))}"
        + (f" ({d['n_orders']} orders)" if d["kind"] == "echelle" else ""),
        f"median S/N:  {'unknown' if snr is None or not math.isfinite(snr) else f'{snr:.1f}'}",
        f"masked:      {d['masked_fraction']:.2%}",
    ])
    emit(args, d, text)
    return 0


def _register_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a spectrum file (any supported product)")
    p.add_argument("file", help="FITS, HDF5 or text spectrum")
    _add_json(p)
    p.set_defaults(func=_cmd_info)


# --------------------------------------------------------------------------------------- nn
def _cmd_nn(args: argparse.Namespace) -> int:
    payload, text = args.nn_run(args)
    emit(args, payload, text)
    return 0


def _register_nn(sub: argparse._SubParsersAction) -> None:
    from .nn.commands import add_arguments

    add_arguments(sub, _add_json)
    sub.choices["nn"].set_defaults(func=_cmd_nn)


# --------------------------------------------------------------------------------------- main
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [_register_info]
REGISTRARS.append(_register_nn)


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
