"""``photosphere cannon``: The Cannon train / test / report."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ._common import _add_json, add_medium, emit, medium_kwargs


def _cannon_spec(args: argparse.Namespace):
    from ..datasets import apogee_emulated as ae
    from ..workflows.cannon_apogee import DatasetSpec

    box = ae.VALID_BOX if args.box == "valid" else ae.CANNON_BOX
    return DatasetSpec(args.n_train, args.seed, (args.snr_min, args.snr_max), dict(box))


def _label_ranges(items) -> dict[str, tuple[float, float]] | None:
    from ..errors import ModelError

    if not items:
        return None
    out = {}
    for item in items:
        try:
            name, rng = item.split("=", 1)
            lo, hi = (float(v) for v in rng.split(":"))
        except ValueError:
            raise ModelError(f"--label-range {item!r}: write NAME=LO:HI, e.g. teff=4000:5500"
                             ) from None
        out[name.strip()] = (lo, hi)
    return out


def _train_model(args: argparse.Namespace):
    """The trained model for the chosen source: allStar stars, grid or emulated spectra."""
    if args.allstar:
        from ..workflows.cannon_allstar import AllStarSpec, train_on_allstar

        if not args.apstar_dir:
            from ..errors import ModelError

            raise ModelError("--allstar needs --apstar-dir (the folder of the apStar files)")
        spec = AllStarSpec(args.allstar, args.apstar_dir, args.continuum_pixels,
                           validation_fraction=args.validation_fraction, seed=args.seed,
                           download=args.download, base_url=args.apstar_url)
        return train_on_allstar(spec, order=args.order, regularization=args.regularization,
                                data_dir=args.data_dir, progress=True)
    if args.grid:
        from ..workflows.cannon_grid import GridDatasetSpec, train_on_grid

        spec = GridDatasetSpec(args.grid, args.n_train, args.seed, (args.snr_min, args.snr_max),
                               _label_ranges(args.label_range),
                               None if args.resolution <= 0 else args.resolution, args.sampling)
        return train_on_grid(spec, order=args.order, regularization=args.regularization,
                             n_calibration=args.n_calibration, progress=True)
    from ..workflows import cannon_apogee as wf

    spec = _cannon_spec(args)
    return wf.train(spec, order=args.order, regularization=args.regularization,
                    data_dir=args.data_dir, n_calibration=args.n_calibration,
                    progress=True)


def _cmd_cannon_train(args: argparse.Namespace) -> int:
    import time

    start, cpu = time.perf_counter(), time.process_time()
    model = _train_model(args)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    model.save(args.output)
    s = np.sqrt(model.s2_)
    n_train = int(model.training_labels_.shape[0])
    calibration = model.provenance_.get("uncertainty_calibration")
    payload = {"model": str(args.output), "label_names": list(model.label_names),
               "n_training_stars": n_train, "n_pixels": int(model.theta_.shape[0]),
               "n_terms": model.n_terms, "n_parameters": model.n_parameters,
               "seconds": seconds, "cpu_seconds": cpu_seconds,
               "median_scatter": float(np.median(s)),
               "training_set": model.provenance_["training_set"],
               "uncertainty_calibration": calibration}
    text = [f"trained {model!r}",
            f"  {model.n_terms} terms per pixel, {model.n_parameters} parameters, "
            f"{seconds:.1f} s ({cpu_seconds:.1f} CPU-s, data preparation included); median "
            f"intrinsic scatter s = {np.median(s):.4f}"]
    if calibration:
        text.append("  label errors calibrated on held-out spectra, scale "
                    + ", ".join(f"{k} ×{v:.2f}" for k, v in calibration["sigma_scale"].items()))
    text.append(f"  saved to {args.output}")
    emit(args, payload, "\n".join(text))
    return 0


def _held_out(model, args: argparse.Namespace):
    """The held-out set for `cannon test`, rebuilt from the recipe in the model provenance."""
    kind = model.provenance_.get("training_set", {}).get("kind")
    if kind == "grid":
        from ..workflows.cannon_grid import validation_spec

        return kind, validation_spec(model, args.n_test, args.seed).build(progress=True)
    if kind == "apogee_allstar":
        from ..workflows.cannon_allstar import validation_stars

        return kind, validation_stars(model, args.data_dir, progress=True)
    from ..workflows import cannon_apogee as wf

    return kind or "apogee_emulated", wf.validation_spec(model, args.n_test, args.seed).build(
        args.data_dir)


def _cmd_cannon_test(args: argparse.Namespace) -> int:
    from ..models.cannon import CannonModel
    from ..workflows import cannon_apogee as wf

    model = CannonModel.load(args.model)
    payload: dict[str, Any] = {"model": str(args.model)}
    lines = []
    if args.n_test > 0:
        kind, data = _held_out(model, args)
        fit, stats = wf.validate(model, data)
        payload["validation"] = {"kind": kind, "n": len(data), "labels": stats,
                                 "n_flagged": int(np.count_nonzero(fit.flags)),
                                 "calibrated_errors": model.sigma_scale_ is not None}
        lines.append(f"held-out {kind} spectra: {len(data)} (S/N "
                     f"{data.snr.min():.0f}-{data.snr.max():.0f})")
        lines += [f"  {n:7s} bias {v['bias']:+.4g}  scatter {v['scatter']:.4g}  "
                  f"1σ coverage {v['coverage_1sigma']:.2f}" for n, v in stats.items()]
    real = []
    if args.real:
        real += wf.fit_all_real(model, args.data_dir)
    for path in args.spectrum or []:
        from ..infer.validity import check_spectrum
        from ..io.prepare import read_spectrum

        spectrum = read_spectrum(path, **medium_kwargs(args))
        check_spectrum(spectrum, str(path))  # a non-star gets an error, not labels
        real.append(wf.fit_real_spectrum(model, spectrum, str(path)))
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
    p = sub.add_parser("cannon", help="The Cannon: train, test and report (APOGEE lab workflow)")
    csub = p.add_subparsers(dest="cannon_command", metavar="STEP")
    csub.required = True

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data-dir", default=None,
                       help="shared data folder holding apogee/payne/ (default: "
                            "$PHOTOSPHERE_SHARED_DATA or ../shared/data)")
        _add_json(q)

    t = csub.add_parser("train", help="train on emulated APOGEE spectra (default), on spectra "
                                      "from a synthetic grid (--grid) or on real APOGEE stars "
                                      "from an allStar catalogue (--allstar)")
    t.add_argument("--output", "-o", required=True, help="model file to write (HDF5)")
    t.add_argument("--n-train", type=int, default=1855,
                   help="training spectra (emulated or grid; default 1855)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--snr-min", type=float, default=50.0)
    t.add_argument("--snr-max", type=float, default=200.0)
    t.add_argument("--order", type=int, default=2)
    t.add_argument("--regularization", type=float, default=0.0, help="L1 strength (Cannon 2)")
    t.add_argument("--n-calibration", type=int, default=300,
                   help="held-out spectra on which the label errors are calibrated (emulated "
                        "or grid; 0: keep the formal errors)")
    t.add_argument("--box", choices=["cannon", "valid"], default="cannon",
                   help="emulated label box: 'cannon' (Teff ≤ 5700 K, the lab's cut) or the "
                        "emulator's full valid box")
    g = t.add_argument_group("synthetic grid (dataset a)")
    g.add_argument("--grid", default=None,
                   help="'default' (the embedded grid) or a photosphere grid HDF5 file: train on "
                        "spectra interpolated at random labels, degraded to --resolution")
    g.add_argument("--resolution", type=float, default=22500.0,
                   help="resolving power of the Gaussian LSF (default 22500, APOGEE; 0: the "
                        "grid's native pixels)")
    g.add_argument("--sampling", type=float, default=3.0, help="pixels per FWHM (default 3)")
    g.add_argument("--label-range", action="append", metavar="NAME=LO:HI",
                   help="label box, repeatable (default for the embedded grid: teff=4000:5750 "
                        "logg=1:3.5 feh=-2:0.5, giants; other grids: their full range)")
    a = t.add_argument_group("real APOGEE stars (the lab's allStar path)")
    a.add_argument("--allstar", default=None, help="allStar FITS catalogue (DR17 columns)")
    a.add_argument("--apstar-dir", default=None,
                   help="folder of apStar-dr17-ID.fits files (flat or TELESCOPE/FIELD/)")
    a.add_argument("--download", action="store_true",
                   help="download missing apStar files from DR17 into --apstar-dir (network)")
    a.add_argument("--apstar-url", default=None,
                   help="base URL of the apStar tree (default: the DR17 SAS)")
    a.add_argument("--continuum-pixels", default=None,
                   help=".npz (pixels_cannon) or .npy bool (7214,) continuum pixels (default: "
                        "the Cannon list in the shared data folder)")
    a.add_argument("--validation-fraction", type=float, default=0.2,
                   help="stars held out for `cannon test` (default 0.2)")
    common(t)
    t.set_defaults(func=_cmd_cannon_train)

    e = csub.add_parser("test", help="label inference: held-out spectra and/or real spectra")
    e.add_argument("model", help="model file from `photosphere cannon train`")
    e.add_argument("--n-test", type=int, default=1000,
                   help="held-out emulated or grid spectra (0: none; allStar models use their "
                        "held-out stars)")
    e.add_argument("--seed", type=int, default=None)
    e.add_argument("--real", action="store_true",
                   help="also fit the real APOGEE spectra in the shared data folder")
    e.add_argument("--spectrum", nargs="*", help="spectrum files on the model wavelength grid")
    add_medium(e)
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
