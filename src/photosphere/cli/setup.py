"""``photosphere setup``: build Turbospectrum and fetch the model atmospheres."""

from __future__ import annotations

import argparse

from ._common import _add_json, emit


def _cmd_setup(args: argparse.Namespace) -> int:
    from ..grids.synth.atmospheres import ensure_atmospheres
    from ..grids.synth.build import installation

    inst = installation()
    atmos = ensure_atmospheres()
    d = {"turbospectrum_version": inst.version, "turbospectrum_root": str(inst.root),
         "babsma": str(inst.babsma), "bsyn": str(inst.bsyn), "data": str(inst.data_dir),
         "linelist": str(inst.linelist), "atmospheres": str(atmos)}
    emit(args, d, "\n".join(f"{k + ':':24s}{v}" for k, v in d.items()))
    return 0


def _register_setup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("setup", help="build Turbospectrum and fetch the model atmospheres")
    _add_json(p)
    p.set_defaults(func=_cmd_setup)
