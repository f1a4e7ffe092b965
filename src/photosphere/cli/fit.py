"""``photosphere fit``: labels with uncertainties for one or many spectra."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from ..errors import FitError
from ..infer.validity import print_warnings, result_warnings
from ._checks import (
    EXIT_FLAGGED,
    EXIT_USER_ERROR,
    batch_exit_code,
    bounded_int,
    check_output,
    check_plot,
    finite_float,
    positive_float,
    positive_int,
)
from ._common import _add_json, add_medium, emit


def _name_values(items: list[str] | None, what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise FitError(f"{what} {item!r} is not NAME=VALUE (e.g. {what} logg=4.44)")
        if not math.isfinite(out[name.strip()]):
            raise FitError(f"{what} {item!r}: the value must be a finite number")
    return out


def _priors(items: list[str]) -> list:
    """``--prior`` values: ``isochrone`` (MIST density in Teff, log g, [Fe/H]) or
    ``NAME=MEAN:SIGMA`` (Gaussian)."""
    from ..infer.priors import Gaussian, IsochronePrior

    out: list = []
    for item in items:
        if item == "isochrone":
            out.append(IsochronePrior())
            continue
        name, _, rest = item.partition("=")
        mean, _, sigma = rest.partition(":")
        try:
            if not name.strip():
                raise ValueError
            out.append(Gaussian(name.strip(), float(mean), float(sigma)))
        except ValueError:
            raise FitError(f"--prior {item!r} is not understood; use 'isochrone' or "
                           "NAME=MEAN:SIGMA, e.g. logg=4.07:0.2") from None
    return out


def _macroturbulence(value: str | None) -> float | str | None:
    """``--macroturbulence``: km/s, 'auto' or 'fit'."""
    if value is None or value in ("auto", "fit"):
        return value
    try:
        zeta = float(value)
    except ValueError:
        zeta = float("nan")
    if not (math.isfinite(zeta) and zeta >= 0):
        raise FitError(f"--macroturbulence {value!r} is not a value in km/s (>= 0), 'auto' or "
                       "'fit'")
    return zeta


def _protocol_knots() -> float:
    from ..infer.protocol import CONTINUUM_KNOT_SPACING

    return CONTINUUM_KNOT_SPACING


def _nonnegative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def _observation_settings(args: argparse.Namespace):
    """The observation setup of every fit this command makes, built once from the options."""
    from ..infer.settings import ObservationSettings

    degree = None if args.continuum_degree < 0 else args.continuum_degree
    knots = args.continuum_knots if args.continuum_knots > 0 and degree is not None else None
    return ObservationSettings(
        resolution=args.resolution, macroturbulence=_macroturbulence(args.macroturbulence),
        continuum_degree=degree, continuum_knot_spacing=knots)


def _fit_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"settings": _observation_settings(args),
                          "fixed": _name_values(args.fix, "--fix") or None,
                          "initial": _name_values(args.initial, "--initial") or None,
                          "noise": None if args.noise == "none" else "auto",
                          "model_error": args.model_error}
    if args.prior and not args.mcmc:
        raise FitError("--prior needs --mcmc (least squares uses uniform priors in the grid "
                       "bounds); add --mcmc or leave --prior out")
    if args.mcmc:
        kw.update(n_walkers=args.walkers, n_steps=args.steps)
        if args.prior:
            kw["priors"] = _priors(args.prior)
        if args.clip is not None:
            raise FitError("--clip is for least squares; with --mcmc fit once with --clip and "
                           "mask those pixels, or leave --clip out")
        if args.misfit == "jitter":
            raise FitError("--misfit jitter is for least squares; with --mcmc leave it out")
        if kw["noise"] == "auto":
            raise FitError("--noise auto is for least squares; with --mcmc use --noise none")
        kw.pop("noise")
    else:
        from ..infer.protocol import CLIP, MISFIT

        kw["scale_covariance"] = args.scale_covariance
        if not args.no_clip:
            kw["clip"] = CLIP if args.clip is None else args.clip
        kw["misfit"] = MISFIT if args.misfit is None else (None if args.misfit == "none"
                                                              else args.misfit)
    return kw


def _check_options(args: argparse.Namespace) -> None:
    """Everything about the options that can be wrong, before a file is read or a fit runs."""
    if args.wavelength_range and not args.wavelength_range[0] < args.wavelength_range[1]:
        raise FitError(f"--wavelength-range {args.wavelength_range[0]:g} "
                       f"{args.wavelength_range[1]:g}: MIN must be below MAX (Å)")
    check_output(args.output, (".ecsv",), "-o")
    check_plot(args.plot, "--plot")
    check_plot(args.corner, "--corner")
    if args.prior:
        _priors(args.prior)  # a malformed prior fails now, not after the least-squares start


def _plots(args: argparse.Namespace, result, corner=None) -> int:
    """Write --plot / --corner after the result is out: a failing plot costs the plot only."""
    code = 0
    for option, path, draw in (("--plot", args.plot, result.plot),
                               ("--corner", args.corner, corner or result.corner)):
        if not path:
            continue
        try:
            draw(path)
        except Exception as exc:  # the result is already printed; say why
            print(f"photosphere fit: error: {option} {path} was not written "
                  f"({type(exc).__name__}: {exc}); the result above is complete", file=sys.stderr)
            code = EXIT_USER_ERROR
    return code


def _finish(args: argparse.Namespace, warnings: list[str], code: int) -> int:
    """Print the warnings on stderr; exit 3 for a flagged result unless --allow-flagged."""
    print_warnings(warnings, "fit")
    if code:
        return code
    return EXIT_FLAGGED if warnings and not args.allow_flagged else 0


def _result_text(result) -> str:
    width = max(8, *(len(n) for n in result.labels))
    lines = [f"{'label':<{width}} {'value':>12} {'sigma':>10}"]
    for name, (value, sigma) in result.labels.items():
        s = (f"{sigma:10.4g}" if math.isfinite(sigma)
             else "n/a" if name in result.free else "fixed")
        lines.append(f"{name:<{width}} {value:12.5g} {s:>10}")
    lines.append(f"chi2_reduced {result.chi2_reduced:.3f} over {result.n_pixels} pixels; "
                 f"converged: {result.converged}")
    return "\n".join(lines)


def _cmd_fit_mixture(args: argparse.Namespace, files, wrange) -> int:
    """``--model spots|binary``: one spectrum (or, with --epochs, the exposures of one binary)."""
    from ..grids.default_model import EMBEDDED, ModelChoice, given_model
    from ..infer.batch import load_grid_model, prepare_spectrum
    from ..infer.mixture import fit_mixture, make_model

    if len(files) > 1 and not args.epochs:
        raise FitError(f"--model {args.model} fits one spectrum at a time ({len(files)} given); "
                       "pass one file, or --epochs for several exposures of one binary")
    if args.epochs and args.model != "binary":
        raise FitError("--epochs is for --model binary (one RV per star and exposure)")
    if args.noise != "none":
        raise FitError(f"--noise {args.noise} is not available with --model {args.model}")
    if args.line_strengths:
        raise FitError(f"--line-strengths is not available with --model {args.model} (the "
                       "components mix absolute fluxes, which the correction does not cover)")
    if args.clip is not None:
        raise FitError(f"--clip is not available with --model {args.model}; fit the single-star "
                       "model with --clip, or leave --clip out")
    if args.macroturbulence is not None:
        raise FitError(f"--macroturbulence is not available with --model {args.model}; leave it "
                       "out (vsini absorbs the broadening of both components)")
    if args.prior:
        raise FitError(f"--prior is not available with --model {args.model}; leave it out")
    spectra = [prepare_spectrum(str(f), args.orders, wrange, args.snr, args.medium)
               for f in files]
    # the optical emulator has no continua, which mixing the two components needs: the
    # embedded grid stays the default here
    choice = given_model(args.grid) or ModelChoice(
        EMBEDDED, f"default grid; --model {args.model} needs a grid with continua")
    model = make_model(args.model, load_grid_model(choice.argument), ratio=args.ratio,
                       flux_ratio=args.flux_ratio, n_epochs=len(spectra),
                       share=tuple(args.share or ()), veiling=args.veiling)
    out = fit_mixture(model, spectra if len(spectra) > 1 else spectra[0], mcmc=args.mcmc,
                      initial=_name_values(args.initial, "--initial") or None,
                      fixed=_name_values(args.fix, "--fix") or None,
                      settings=_observation_settings(args), n_walkers=args.walkers,
                      n_steps=args.steps, progress=not args.json,
                      source=",".join(str(f) for f in files))
    doc = {**out.to_dict(), "grid": choice.as_dict()}  # "model" is the mixture
    cmp = doc["comparison"]
    derived = "; ".join(f"{k} {v['median']:.4g} ± {v['sigma']:.2g}"
                        for k, v in doc["derived"].items())
    text = (f"{_result_text(out.result)}\n{derived}\nsingle star: chi2_reduced "
            f"{out.single.chi2_reduced:.3f}; Δχ² {cmp['delta_chi2']:.1f}, ΔBIC "
            f"{cmp['delta_bic']:.1f}, ln Z2/Z1 {cmp['log_evidence_ratio']:.1f}"
            f"{'' if cmp['laplace_reliable'] else ' (Laplace unreliable)'}: "
            f"{out.compare().verdict()}\nmodel: {choice.describe()}")
    flags = out.result.flags
    if out.result.method == "least_squares" and (flags.get("at_bound")
                                                 or not flags.get("covariance_invertible", True)):
        text += (f"\nwarning: at a bound {flags.get('at_bound')}, covariance invertible "
                 f"{flags.get('covariance_invertible')}: the σ are not reliable (a component "
                 "the data may not need); sample the posterior with --mcmc")
    warnings = result_warnings(out.result)
    doc["warnings"] = warnings
    emit(args, doc, text)
    return _finish(args, warnings, _plots(args, out.result, corner=out.corner))


def _cmd_fit(args: argparse.Namespace) -> int:
    import functools

    from ..grids.default_model import ModelFactory
    from ..infer.batch import expand_paths, fit_many, load_grid_model, prepare_spectrum, rows_of

    _check_options(args)
    files = expand_paths(args.files)
    wrange = tuple(args.wavelength_range) if args.wavelength_range else None
    if args.model != "single":
        return _cmd_fit_mixture(args, files, wrange)
    kw = _fit_kwargs(args)
    models = ModelFactory(args.grid, args.line_strengths, load_grid_model)
    if len(files) == 1 and args.output is None:
        from ..infer.protocol import model_noted, noted, with_file_resolution, with_systematic_floor

        spectrum = prepare_spectrum(str(files[0]), args.orders, wrange, args.snr, args.medium)
        choice = models.choose(spectrum)
        model = models.factory(choice)()
        kw["settings"], r_source = with_file_resolution(kw["settings"], spectrum)
        if args.mcmc:
            from ..infer.mcmc import sample

            result = sample(model, spectrum, source=str(files[0]), **kw)
        else:
            from ..infer.optimize import fit

            result = fit(model, spectrum, source=str(files[0]), **kw)
        result = with_systematic_floor(model_noted(noted(result, r_source), choice), model,
                                       kw["settings"].resolution)
        warnings = result_warnings(result, model=model)
        emit(args, {**result.to_dict(), "warnings": warnings},
             f"{_result_text(result)}\nmodel: {choice.describe()}")
        return _finish(args, warnings, _plots(args, result))
    if args.plot or args.corner:
        raise FitError("--plot and --corner draw one fit; with several files or -o leave them "
                       "out (each row of the table holds the labels)")
    output = args.output or "results.ecsv"
    check_output(output, (".ecsv",), "-o")
    table = fit_many(files, models, output,
                     reader=functools.partial(prepare_spectrum, orders=args.orders,
                                              wavelength_range=wrange, snr=args.snr,
                                              medium=args.medium),
                     fit_kwargs=kw, mcmc=args.mcmc, scheduler=args.scheduler,
                     n_workers=args.workers)
    mine = {str(f) for f in files}
    rows = [r for r in rows_of(table) if r.get("source") in mine]  # another run's rows stay out
    n_ok = sum(r.get("status") == "ok" for r in rows)
    failed = [r for r in rows if r.get("status") != "ok"]
    flagged = [r for r in rows if r.get("status") == "ok" and r.get("warnings")]
    busy = dict(table.meta.get("busy") or {})
    emit(args, {"output": str(output), "n_spectra": len(rows), "n_ok": n_ok,
                "n_failed": len(failed), "n_flagged": len(flagged), "rows": rows,
                "busy": busy},
         f"{n_ok}/{len(rows)} spectra fitted; results in {output}")
    if busy:
        pids = ", ".join(sorted({str(p) for p in busy.values()}))
        print(f"photosphere fit: {len(busy)} file(s) are being fitted by another photosphere "
              f"run on {output} (pid {pids}); they are left to it and their rows will be in "
              "the table when it finishes", file=sys.stderr)
    for r in failed:
        print(f"photosphere fit: error: {r['source']}: {str(r['status']).removeprefix('error: ')}",
              file=sys.stderr)
    print_warnings((f"{r['source']}: {r['warnings']}" for r in flagged), "fit")
    if failed:
        print(f"photosphere fit: {len(failed)} of {len(rows)} file(s) failed (their rows say "
              "why); the others are in the table", file=sys.stderr)
    return batch_exit_code(len(failed), len(flagged), args.allow_flagged)


def _fit_model_args(p: argparse.ArgumentParser) -> None:
    """The forward model: grid, line strengths, single star or a mixture."""
    p.add_argument("--grid", help="HDF5 model grid or emulator (with its line calibration, `grid "
                                   "calibrate-stars`), 'optical': the optical emulator in the "
                                   "package's data folder, or 'embedded' (also 'grid', "
                                   "'default'): the embedded 5050-5350 Å grid (docs/grids.md); "
                                   "default: 'optical' where the spectrum covers at least 2 of "
                                   "its 7 windows by half their width each, else 'embedded' "
                                   "(--model spots/binary: 'embedded')")
    p.add_argument("--line-strengths", metavar="ECSV",
                   help="correct the grid's line strengths with this table (`photosphere grid "
                        "calibrate-lines`, e.g. made on the Sun); single-star model only")
    p.add_argument("--model", choices=("single", "spots", "binary"), default="single",
                   help="one star (default), a spotted star, or a double-lined binary "
                        "(two components of the grid; see docs/mixtures.md)")
    p.add_argument("--ratio", choices=("absolute", "blackbody", "mean_flux"),
                   default="absolute", help="flux ratio of the two components (spots/binary; "
                                            "default: mix absolute fluxes)")
    p.add_argument("--flux-ratio", choices=("radii", "free"), default="radii",
                   help="binary: from radius_ratio and the surface fluxes, or a free "
                        "light_ratio (default radii)")
    p.add_argument("--share", nargs="+", metavar="LABEL",
                   help="binary: grid labels common to both stars (e.g. feh)")
    p.add_argument("--veiling", action="store_true",
                   help="spots/binary: add a featureless continuum component (veiling)")
    p.add_argument("--epochs", action="store_true",
                   help="binary: the files are exposures of one binary (per-epoch RVs)")


def _fit_mcmc_args(p: argparse.ArgumentParser) -> None:
    """MCMC instead of least squares: priors, walkers, steps."""
    p.add_argument("--mcmc", action="store_true", help="sample the posterior with emcee")
    p.add_argument("--prior", nargs="+", metavar="PRIOR",
                   help="with --mcmc: 'isochrone' (MIST v2.5 density in Teff, log g, [Fe/H]) "
                        "and/or Gaussian priors NAME=MEAN:SIGMA (e.g. logg=4.07:0.2)")
    p.add_argument("--walkers", type=positive_int, default=32,
                   help="emcee walkers, at least 2 × the free parameters (default 32)")
    p.add_argument("--steps", type=bounded_int(2, 10_000_000), default=2000,
                   help="emcee steps (default 2000)")


def _fit_observation_args(p: argparse.ArgumentParser) -> None:
    """The observation setup (ObservationSettings) and what of the file to fit."""
    p.add_argument("--resolution", type=positive_float, help="instrumental resolving power R")
    p.add_argument("--macroturbulence", metavar="KMS|auto|fit",
                   help="radial-tangential macroturbulence ζ: a value in km/s (fixed), 'auto' "
                        "(Doyle et al. 2014 at the fitted Teff, log g) or 'fit' (free "
                        "parameter vmac; fix vsini or use high R) (default: none)")
    p.add_argument("--orders", type=int, nargs="+", help="echelle order rows to fit")
    p.add_argument("--wavelength-range", type=finite_float, nargs=2, metavar=("MIN", "MAX"),
                   help="fit only this range (Å)")
    add_medium(p)
    p.add_argument("--snr", type=positive_float,
                   help="S/N per pixel when the file has no uncertainties (default: estimated "
                        "with DER_SNR)")
    p.add_argument("--fix", nargs="+", metavar="NAME=VALUE", help="hold labels fixed")
    p.add_argument("--initial", nargs="+", metavar="NAME=VALUE", help="starting values")
    p.add_argument("--continuum-knots", type=_nonnegative_float, metavar="Å",
                   default=_protocol_knots(),
                   help="a cubic B-spline continuum with knots this far apart in every order "
                        f"(default {_protocol_knots():g} Å: follows unnormalised spectra); 0: "
                        "one Chebyshev polynomial per order of --continuum-degree")
    p.add_argument("--continuum-degree", type=bounded_int(-1, 30), default=2,
                   help="Chebyshev continuum degree per order when --continuum-knots 0 (-1: no "
                        "continuum at all; default 2)")


def _fit_refinement_args(p: argparse.ArgumentParser) -> None:
    """Noise, model error, clipping, misfit and covariance of the least-squares fit."""
    p.add_argument("--noise", choices=("none", "auto"), default="none",
                   help="'auto': estimate a correlated-noise kernel from the residuals and refit")
    p.add_argument("--model-error", choices=("auto", "none"), default="auto",
                   help="'auto' (default): marginalise the model's own error (grid "
                        "interpolation error, emulator error) so σ include it; 'none': treat "
                        "the model as exact (single-star model)")
    p.add_argument("--clip", type=positive_float, metavar="K",
                   help="mask pixels whose residual is more than K robust standard deviations "
                        "off (lines the model lacks, cosmics) and refit until none is added "
                        "(least squares; default 3)")
    p.add_argument("--no-clip", action="store_true", help="no clipping (least squares)")
    p.add_argument("--misfit", choices=("jitter", "none"),
                   help="'jitter' (default for least squares): add a misfit term to every "
                        "pixel's variance so that χ²_red = 1 and refit, so σ of a model that "
                        "does not describe the data are inflated, not formal; 'none': formal σ")
    p.add_argument("--scale-covariance", action="store_true",
                   help="scale the covariance by the reduced chi2")


def _fit_output_args(p: argparse.ArgumentParser) -> None:
    """Figures, the results table and the Dask workers."""
    p.add_argument("--plot", help="write data/model/residuals per order to this image")
    p.add_argument("--corner", help="write a corner plot to this image")
    p.add_argument("-o", "--output", help="results table (.ecsv; its folder must exist); a "
                                         "rerun completes it, concurrent runs merge into it")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler")
    p.add_argument("--workers", type=positive_int, default=2,
                   help="local Dask workers (default 2)")
    p.add_argument("--allow-flagged", action="store_true",
                   help="exit 0 even when a result is flagged (labels at a bound, χ²_red far "
                        "above 1); the warnings are still printed on stderr")


def _register_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit stellar labels to one or many spectra (least squares "
                                   "or MCMC)")
    p.add_argument("files", nargs="+", help="spectrum files or glob patterns")
    _fit_model_args(p)
    _fit_mcmc_args(p)
    _fit_observation_args(p)
    _fit_refinement_args(p)
    _fit_output_args(p)
    _add_json(p)
    p.set_defaults(func=_cmd_fit)
