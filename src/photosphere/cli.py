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


# --------------------------------------------------------------------------------------- cannon
def _cannon_spec(args: argparse.Namespace):
    from .datasets import apogee_emulated as ae
    from .workflows.cannon_apogee import DatasetSpec

    box = ae.VALID_BOX if args.box == "valid" else ae.CANNON_BOX
    return DatasetSpec(args.n_train, args.seed, (args.snr_min, args.snr_max), dict(box))


def _cmd_cannon_train(args: argparse.Namespace) -> int:
    import time

    from .workflows import cannon_apogee as wf

    spec = _cannon_spec(args)
    start = time.perf_counter()
    model = wf.train(spec, order=args.order, regularization=args.regularization,
                     data_dir=args.data_dir, progress=True)
    seconds = time.perf_counter() - start
    model.save(args.output)
    s = np.sqrt(model.s2_)
    payload = {"model": str(args.output), "label_names": list(model.label_names),
               "n_training_stars": spec.n, "n_pixels": int(model.theta_.shape[0]),
               "n_terms": model.n_terms, "n_parameters": model.n_parameters,
               "training_seconds": seconds, "median_scatter": float(np.median(s)),
               "training_set": spec.to_dict()}
    emit(args, payload, "\n".join([
        f"trained {model!r}",
        f"  {model.n_terms} terms per pixel, {model.n_parameters} parameters, "
        f"{seconds:.1f} s; median intrinsic scatter s = {np.median(s):.4f}",
        f"  saved to {args.output}"]))
    return 0


def _cmd_cannon_test(args: argparse.Namespace) -> int:
    from .models.cannon import CannonModel
    from .workflows import cannon_apogee as wf

    model = CannonModel.load(args.model)
    payload: dict[str, Any] = {"model": str(args.model)}
    lines = []
    if args.n_test > 0:
        data = wf.validation_spec(model, args.n_test, args.seed).build(args.data_dir)
        fit, stats = wf.validate(model, data)
        payload["validation"] = {"n": len(data), "labels": stats,
                                 "n_flagged": int(np.count_nonzero(fit.flags))}
        lines.append(f"held-out emulated spectra: {len(data)} (S/N "
                     f"{data.snr.min():.0f}-{data.snr.max():.0f})")
        lines += [f"  {n:7s} bias {v['bias']:+.4g}  scatter {v['scatter']:.4g}"
                  for n, v in stats.items()]
    real = []
    if args.real:
        real += wf.fit_all_real(model, args.data_dir)
    for path in args.spectrum or []:
        from .io import read

        real.append(wf.fit_real_spectrum(model, read(path), str(path)))
    if real:
        payload["spectra"] = real
        for r in real:
            labels = ", ".join(f"{n} {v['value']:.4g} ± {v['sigma']:.2g}"
                               for n, v in r["labels"].items())
            flags = f" [{', '.join(r['flags'])}]" if r["flags"] else ""
            lines.append(f"{r['name']}: {labels}; RV {r['rv_kms']:.1f} km/s; "
                         f"χ²_red {r['chi2_reduced']:.2f}{flags}")
    emit(args, payload, "\n".join(lines) if lines else "nothing to test")
    return 0


def _cmd_cannon_report(args: argparse.Namespace) -> int:
    from .models.cannon import CannonModel
    from .reports.cannon_report import write_report

    model = CannonModel.load(args.model)
    summary = write_report(model, args.outdir, n_validation=args.n_validation,
                           data_dir=args.data_dir, nn_epochs=args.nn_epochs,
                           mcmc_steps=args.mcmc_steps, fit_real=not args.no_real, progress=True)
    text = [f"wrote {len(summary['files'])} files to {args.outdir}"]
    text += [f"  {k}: {v}" for k, v in summary["files"].items()]
    emit(args, summary, "\n".join(text))
    return 0


def _register_cannon(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cannon", help="The Cannon: train, test and report (APOGEE workflow)")
    csub = p.add_subparsers(dest="cannon_command", metavar="STEP")
    csub.required = True

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data-dir", default=None,
                       help="shared data folder holding apogee/payne/ (default: "
                            "$PHOTOSPHERE_SHARED_DATA or ../shared/data)")
        _add_json(q)

    t = csub.add_parser("train", help="train on emulated APOGEE spectra (The Payne emulator)")
    t.add_argument("--output", "-o", required=True, help="model file to write (HDF5)")
    t.add_argument("--n-train", type=int, default=1855)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--snr-min", type=float, default=50.0)
    t.add_argument("--snr-max", type=float, default=200.0)
    t.add_argument("--box", choices=["cannon", "valid"], default="cannon",
                   help="label box: 'cannon' (Teff ≤ 5700 K, the lab's cut) or the emulator's "
                        "full valid box")
    t.add_argument("--order", type=int, default=2)
    t.add_argument("--regularization", type=float, default=0.0, help="L1 strength (Cannon 2)")
    common(t)
    t.set_defaults(func=_cmd_cannon_train)

    e = csub.add_parser("test", help="label inference: held-out spectra and/or real spectra")
    e.add_argument("model", help="model file from `photosphere cannon train`")
    e.add_argument("--n-test", type=int, default=1000, help="held-out emulated spectra (0: none)")
    e.add_argument("--seed", type=int, default=None)
    e.add_argument("--real", action="store_true",
                   help="also fit the real APOGEE spectra in the shared data folder")
    e.add_argument("--spectrum", nargs="*", help="spectrum files on the model wavelength grid")
    common(e)
    e.set_defaults(func=_cmd_cannon_test)

    r = csub.add_parser("report", help="write every plot of the lab and a summary table")
    r.add_argument("model", help="model file from `photosphere cannon train`")
    r.add_argument("--outdir", "-o", required=True)
    r.add_argument("--n-validation", type=int, default=300)
    r.add_argument("--nn-epochs", type=int, default=80)
    r.add_argument("--mcmc-steps", type=int, default=1500)
    r.add_argument("--no-real", action="store_true", help="skip the real APOGEE spectra")
    common(r)
    r.set_defaults(func=_cmd_cannon_report)


# --------------------------------------------------------------------------------------- main
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [_register_info,
                                                                   _register_cannon]


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
