"""``photosphere info``: describe any supported file."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ._common import _add_json, add_medium, emit, medium_kwargs


def _format_range(d: dict[str, Any]) -> str:
    if d.get("wavelength_min") is None:
        return "none (no wavelength axis)"
    return (f"{d['wavelength_min']:.3f} - {d['wavelength_max']:.3f} Å "
            f"({d.get('medium') or 'frame unknown'})")


def _cmd_info(args: argparse.Namespace) -> int:
    from ..io import describe

    d = describe(args.file, **medium_kwargs(args))
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
        f"instrument:  {d['instrument'] or 'unknown'}"
        + (f" (from the {d['instrument_source']})" if d.get("instrument_source") else ""),
        f"object:      {d['object'] or 'unknown'}",
        f"wavelength:  {_format_range(d)}"
        + (f", converted from {d['wavelength_unit_in_file']}"
           if d.get("wavelength_unit_in_file") not in (None, "Angstrom") else ""),
        f"medium:      {d['medium']}"
        + (f" (ASSUMED: {d['medium_source']})" if d.get("medium_assumed")
           else f" ({d['medium_source']})" if d.get("medium_source") else ""),
        f"frame:       {d.get('frame') or 'unknown (rest/observed/barycentric not recorded)'}",
        f"flux:        {d['flux_unit']}"
        + (" (continuum-normalised)" if d.get("normalized") else " (not normalised)"),
        "resolution:  " + (f"R = {d['resolution']:,.0f} ({d['resolution_source']})"
                            if d.get("resolution") else
                            f"unknown ({d.get('resolution_source') or 'not recorded'})"),
        f"shape:       {shape}"
        + (f" ({d['n_orders']} {d['row_kind']}s)" if d["kind"] == "echelle" else ""),
        f"median S/N:  {'unknown' if snr is None or not math.isfinite(snr) else f'{snr:.1f}'}",
        f"masked:      {d['masked_fraction']:.2%}",
    ])
    emit(args, d, text)
    return 0


def _register_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a spectrum file (any supported product)")
    p.add_argument("file", help="FITS, HDF5, .npz, CSV or text spectrum, a folder of three "
                                "text files, or an auxiliary product")
    add_medium(p)
    _add_json(p)
    p.set_defaults(func=_cmd_info)
