"""``photosphere info``: describe any supported file."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ._common import _add_json, emit


def _format_range(d: dict[str, Any]) -> str:
    if d.get("wavelength_min") is None:
        return "none (no wavelength axis)"
    return (f"{d['wavelength_min']:.3f} - {d['wavelength_max']:.3f} Å "
            f"({d.get('medium') or 'frame unknown'})")


def _cmd_info(args: argparse.Namespace) -> int:
    from ..io import describe

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
