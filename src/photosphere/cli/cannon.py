"""``photosphere cannon``: The Cannon train / test / report."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ._common import _add_json, emit


def _cannon_spec(args: argparse.Namespace):
    from ..datasets import apogee_emulated as ae
    from ..workflows.cannon_apogee import DatasetSpec

    box = ae.VALID_BOX if args.box == "valid" else ae.CANNON_BOX
    return DatasetSpec(args.n_train, args.seed, (args.snr_min, args.snr_max), dict(box))


def _cmd_cannon_train(args: argparse.Namespace) -> int:
    import time

    from ..workflows import cannon_apogee as wf

    start = time.perf_counter()
    if args.grid:
        from ..workflows.cannon_grid import GridDatasetSpec, train_on_grid

        spec = GridDatasetSpec(args.grid, seed=args.seed, snr=(args.snr_min, args.snr_max))
        model = train_on_grid(spec, order=args.order, regularization=args.regularization,
                              progress=True)
        n_train = int(model.training_labels_.shape[0])
    else:
        spec = _cannon_spec(args)
        model = wf.train(spec, order=args.order, regularization=args.regularization,
                         data_dir=args.data_dir, progress=True)
        n_train = spec.n
    seconds = time.perf_counter() - start
    model.save(args.output)
    s = np.sqrt(model.s2_)
    payload = {"model": str(args.output), "label_names": list(model.label_names),
               "n_training_stars": n_train, "n_pixels": int(model.theta_.shape[0]),
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
    from ..models.cannon import CannonModel
    from ..workflows import cannon_apogee as wf

    model = CannonModel.load(args.model)
    payload: dict[str, Any] = {"model": str(args.model)}
    lines = []
    kind = model.provenance_.get("training_set", {}).get("kind")
    if args.n_test > 0 and kind == "grid":
        from ..workflows.cannon_grid import GridDatasetSpec

        _, data = GridDatasetSpec.from_dict(model.provenance_["training_set"]).build()
    elif args.n_test > 0:
        data = wf.validation_spec(model, args.n_test, args.seed).build(args.data_dir)
    if args.n_test > 0:
        fit, stats = wf.validate(model, data)
        payload["validation"] = {"n": len(data), "labels": stats,
                                 "n_flagged": int(np.count_nonzero(fit.flags))}
        lines.append(f"held-out {kind or 'emulated'} spectra: {len(data)} (S/N "
                     f"{data.snr.min():.0f}-{data.snr.max():.0f})")
        lines += [f"  {n:7s} bias {v['bias']:+.4g}  scatter {v['scatter']:.4g}"
                  for n, v in stats.items()]
    real = []
    if args.real:
        real += wf.fit_all_real(model, args.data_dir)
    for path in args.spectrum or []:
        from ..io import read

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
    from ..models.cannon import CannonModel
    from ..reports.cannon_report import write_report

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

    t = csub.add_parser("train", help="train on emulated APOGEE spectra (The Payne emulator) "
                                      "or on a synthetic grid file (--grid)")
    t.add_argument("--grid", default=None,
                   help="train on this grid file (photosphere grid HDF5) instead: grid spectra "
                        "with their labels, a random fifth of the nodes held out for `test`")
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
