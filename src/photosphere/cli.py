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
from .errors import FitError, PhotosphereError


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


# ---------------------------------------------------------------------------------------- fit
def _name_values(items: list[str] | None, what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise FitError(f"{what} {item!r} is not NAME=VALUE (e.g. {what} logg=4.44)")
    return out


def _fit_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"resolution": args.resolution,
                          "continuum_degree": None if args.continuum_degree < 0
                          else args.continuum_degree,
                          "fixed": _name_values(args.fix, "--fix") or None,
                          "initial": _name_values(args.initial, "--initial") or None,
                          "noise": None if args.noise == "none" else "auto"}
    if args.mcmc:
        kw.update(n_walkers=args.walkers, n_steps=args.steps)
        if kw["noise"] == "auto":
            raise FitError("--noise auto is for least squares; with --mcmc use --noise none")
        kw.pop("noise")
    else:
        kw["scale_covariance"] = args.scale_covariance
    return kw


def _result_text(result) -> str:
    lines = [f"{'label':<8} {'value':>12} {'sigma':>10}"]
    for name, (value, sigma) in result.labels.items():
        s = "fixed" if not math.isfinite(sigma) else f"{sigma:10.4g}"
        lines.append(f"{name:<8} {value:12.5g} {s:>10}")
    lines.append(f"chi2_reduced {result.chi2_reduced:.3f} over {result.n_pixels} pixels; "
                 f"converged: {result.converged}")
    return "\n".join(lines)


def _cmd_fit(args: argparse.Namespace) -> int:
    import functools

    from .infer.batch import expand_paths, fit_many, load_grid_model, prepare_spectrum, rows_of

    files = expand_paths(args.files)
    kw = _fit_kwargs(args)
    wrange = tuple(args.wavelength_range) if args.wavelength_range else None
    if len(files) == 1 and args.output is None:
        spectrum = prepare_spectrum(str(files[0]), args.orders, wrange, args.snr)
        model = load_grid_model(args.grid)
        if args.mcmc:
            from .infer.mcmc import sample

            result = sample(model, spectrum, source=str(files[0]), **kw)
        else:
            from .infer.optimize import fit

            result = fit(model, spectrum, source=str(files[0]), **kw)
        if args.plot:
            result.plot(args.plot)
        if args.corner:
            result.corner(args.corner)
        emit(args, result.to_dict(), _result_text(result))
        return 0
    output = args.output or "results.ecsv"
    table = fit_many(files, functools.partial(load_grid_model, args.grid), output,
                     reader=functools.partial(prepare_spectrum, orders=args.orders,
                                              wavelength_range=wrange, snr=args.snr),
                     fit_kwargs=kw, mcmc=args.mcmc, scheduler=args.scheduler,
                     n_workers=args.workers)
    rows = rows_of(table)
    n_ok = sum(r.get("status") == "ok" for r in rows)
    emit(args, {"output": str(output), "n_spectra": len(rows), "n_ok": n_ok, "rows": rows},
         f"{n_ok}/{len(rows)} spectra fitted; results in {output}")
    return 0


def _register_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit stellar labels to one or many spectra (least squares "
                                   "or MCMC)")
    p.add_argument("files", nargs="+", help="spectrum files or glob patterns")
    p.add_argument("--grid", help="HDF5 model grid (default: the embedded grid)")
    p.add_argument("--mcmc", action="store_true", help="sample the posterior with emcee")
    p.add_argument("--walkers", type=int, default=32, help="emcee walkers (default 32)")
    p.add_argument("--steps", type=int, default=2000, help="emcee steps (default 2000)")
    p.add_argument("--resolution", type=float, help="instrumental resolving power R")
    p.add_argument("--orders", type=int, nargs="+", help="echelle order rows to fit")
    p.add_argument("--wavelength-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="fit only this range (Å)")
    p.add_argument("--snr", type=float, help="S/N per pixel when the file has no uncertainties "
                                             "(default: estimated with DER_SNR)")
    p.add_argument("--fix", nargs="+", metavar="NAME=VALUE", help="hold labels fixed")
    p.add_argument("--initial", nargs="+", metavar="NAME=VALUE", help="starting values")
    p.add_argument("--continuum-degree", type=int, default=2,
                   help="Chebyshev continuum degree per order (-1: none; default 2)")
    p.add_argument("--noise", choices=("none", "auto"), default="none",
                   help="'auto': estimate a correlated-noise kernel from the residuals and refit")
    p.add_argument("--scale-covariance", action="store_true",
                   help="scale the covariance by the reduced chi2")
    p.add_argument("--plot", help="write data/model/residuals per order to this image")
    p.add_argument("--corner", help="write a corner plot to this image")
    p.add_argument("-o", "--output", help="results table (ECSV); a rerun completes it")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler")
    p.add_argument("--workers", type=int, default=2, help="local Dask workers (default 2)")
    _add_json(p)
    p.set_defaults(func=_cmd_fit)
# --------------------------------------------------------------------------------------- lines
def _lines_read(path: str, wavelength_min: float | None, wavelength_max: float | None):
    """(wavelength Å, flux, sigma or None, mask, medium) of a 1-D spectrum file (any
    ``io.read`` product), cut to [wavelength_min, wavelength_max] Å."""
    from .errors import FileFormatError
    from .io import read

    spec = read(path)
    if np.ndim(spec.flux) != 1:
        raise FileFormatError(f"{path} holds {spec.flux.shape[0]} orders; the line model fits "
                              "one 1-D spectrum: pass one order (or a 1-D product)")
    wave, flux, mask = (np.asarray(a) for a in (spec.wavelength, spec.flux, spec.mask))
    sigma = np.asarray(spec.sigma) if np.any(np.asarray(spec.sigma) > 0) else None
    keep = np.ones(wave.size, bool)
    if wavelength_min is not None:
        keep &= wave >= wavelength_min
    if wavelength_max is not None:
        keep &= wave <= wavelength_max
    if keep.sum() < 5:
        raise FileFormatError(f"{path}: fewer than 5 pixels in {wavelength_min}–{wavelength_max} "
                              f"Å (file covers {wave.min():.2f}–{wave.max():.2f} Å)")
    return (wave[keep], flux[keep], sigma[keep] if sigma is not None else None, mask[keep],
            spec.medium)


def _lines_settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wavelength-min", type=float, help="first wavelength to use (Å)")
    p.add_argument("--wavelength-max", type=float, help="last wavelength to use (Å)")
    p.add_argument("--steps", type=int, default=300, help="Adam epochs per round / stage")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _cmd_lines_clone(args: argparse.Namespace) -> int:
    import torch

    from .models.lines.clone import clone_spectrum
    from .models.lines.model import write_table

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.synthesize:
        try:
            from .grids.synth.turbospectrum import synthesize
        except ImportError as exc:
            from .errors import DependencyError

            raise DependencyError(f"--synthesize needs photosphere.grids.synth.turbospectrum "
                                  f"({exc}); clone a spectrum file instead") from None
        if args.wavelength_min is None or args.wavelength_max is None:
            from .errors import UnitsError

            raise UnitsError("--synthesize needs --wavelength-min and --wavelength-max (Å)")
        teff, logg, feh = args.synthesize
        synth = synthesize(teff, logg, feh, wavelength_min=args.wavelength_min,
                           wavelength_max=args.wavelength_max)
        wave, flux, source = synth.wavelength, synth.flux, f"turbospectrum {teff} {logg} {feh}"
        medium = "air"
    elif args.spectrum:
        wave, flux, _, mask, medium = _lines_read(args.spectrum, args.wavelength_min,
                                                  args.wavelength_max)
        if mask.any():
            from .errors import InvalidSpectrumError

            raise InvalidSpectrumError(
                f"{args.spectrum}: {int(mask.sum())} masked/NaN pixel(s) in the range to clone "
                f"(first at {wave[np.argmax(mask)]:.3f} Å); cloning needs a complete spectrum: "
                "choose a range without them (--wavelength-min/--wavelength-max)")
        source = args.spectrum
    else:
        from .errors import MissingFileError

        raise MissingFileError("give a SPECTRUM file or --synthesize TEFF LOGG FEH")
    result = clone_spectrum(wave, flux, prominence=args.prominence, n_steps=args.steps,
                            n_rounds=args.rounds,
                            profile=args.profile, progress=not args.no_progress)
    table = result.model.to_table()
    table.meta.update({"source": str(source), "residual_rms": result.final.rms,
                       "medium": medium})
    write_table(table, args.output)
    summary = result.summary()
    summary["output"] = args.output
    fin = result.final
    text = (f"cloned {result.model.n_lines} lines from {source} in {result.seconds:.1f} s -> "
            f"{args.output}\nresidual per pixel: median |r| {fin.median_abs:.4f}, rms "
            f"{fin.rms:.4f}, p95 {fin.p95_abs:.4f}, max {fin.max_abs:.4f}")
    emit(args, summary, text)
    return 0


def _cmd_lines_fit(args: argparse.Namespace) -> int:
    import torch

    from .models.lines.fit import (
        FitSettings,
        Observation,
        fit_lines,
        fitted_line_table,
        plot_fit,
    )
    from .models.lines.model import read_line_model, write_table
    from .models.lines.telluric import clone_telluric, read_telluric

    if args.threads:
        torch.set_num_threads(args.threads)
    wave, flux, sigma, mask, medium = _lines_read(args.observed, args.wavelength_min,
                                                  args.wavelength_max)
    obs = Observation.from_arrays(wave, flux, sigma, mask=mask)
    stellar = read_line_model(args.lines, medium=medium)
    telluric = None
    if args.telluric:
        tw, tt = read_telluric(args.telluric, wavelength_min=wave[0] - 5,
                               wavelength_max=wave[-1] + 5)
        telluric, _ = clone_telluric({"all": (tw, tt)}, progress=not args.no_progress)
    settings = FitSettings(resolution=args.resolution, n_steps=args.steps,
                           n_global_steps=args.global_steps,
                           continuum_degree=args.continuum_degree,
                           fit_line_parameters=not args.fix_lines)
    result = fit_lines(stellar, obs, settings=settings, telluric=telluric, rv=args.rv,
                       progress=not args.no_progress)
    table = fitted_line_table(result)
    summary = result.summary()
    summary["n_vanished"] = int(table["vanished"].sum())
    summary["n_telluric_blended"] = int(table["telluric_blended"].sum())
    if args.output:
        write_table(table, args.output)
        summary["output"] = args.output
    if args.save_model:
        write_table(stellar.to_table(), args.save_model)
        summary["model"] = args.save_model
    if args.plot:
        plot_fit(result, args.plot)
        summary["plot"] = args.plot
    text = (f"fitted {stellar.n_lines} lines to {obs.flux.size} px in {result.seconds:.1f} s\n"
            f"rv = {result.rv:.3f} km/s, vsini = {result.vsini:.2f} km/s, "
            f"rms/noise = {result.rms_over_noise:.2f}, chi2/px = {result.chi2_per_pixel:.2f}\n"
            f"telluric scale {result.telluric_scale or '-'}; vanished lines "
            f"{summary['n_vanished']}, telluric-blended {summary['n_telluric_blended']}")
    emit(args, summary, text)
    return 0


def _register_lines(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lines", help="interpretable line-by-line model (clone, fit)")
    lines_sub = p.add_subparsers(dest="lines_command", metavar="ACTION")
    lines_sub.required = True
    c = lines_sub.add_parser("clone", help="clone a normalised spectrum into individual lines")
    c.add_argument("spectrum", nargs="?", help="normalised spectrum (text or FITS table)")
    c.add_argument("-o", "--output", required=True, help="line table to write (.ecsv/.fits)")
    c.add_argument("--synthesize", nargs=3, type=float, metavar=("TEFF", "LOGG", "FEH"),
                   help="clone a Turbospectrum synthesis instead of a file")
    c.add_argument("--prominence", type=float, default=0.005,
                   help="minimum line depth below neighbouring maxima (default 0.005)")
    c.add_argument("--rounds", type=int, default=2, help="detection + optimisation rounds")
    c.add_argument("--profile", choices=["pseudo_voigt", "voigt"], default="pseudo_voigt")
    c.add_argument("--threads", type=int, help="torch CPU threads")
    _lines_settings_args(c)
    _add_json(c)
    c.set_defaults(func=_cmd_lines_clone)
    f = lines_sub.add_parser("fit", help="fit cloned lines + RV, vsini, continuum, tellurics")
    f.add_argument("observed", help="observed spectrum (text or FITS table, any io product)")
    f.add_argument("--lines", required=True, help="line table from `photosphere lines clone`")
    f.add_argument("--telluric", help="telluric transmission (TelFit csv or TAPAS ipac)")
    f.add_argument("--resolution", type=float, default=55000.0, help="instrumental R")
    f.add_argument("--rv", type=float, help="initial RV (km/s); default: scan ±200 km/s")
    f.add_argument("--continuum-degree", type=int, default=3)
    f.add_argument("--global-steps", type=int, default=100,
                   help="Adam epochs of the first stage (rv, vsini, continuum, tellurics)")
    f.add_argument("--fix-lines", action="store_true",
                   help="fit only RV, vsini, continuum and tellurics")
    f.add_argument("-o", "--output", help="fitted line table (.ecsv/.fits)")
    f.add_argument("--save-model", help="write the fitted lines as a reusable line table")
    f.add_argument("--plot", help="figure of data / stellar / telluric / residual (.png/.pdf)")
    f.add_argument("--threads", type=int, help="torch CPU threads")
    _lines_settings_args(f)
    _add_json(f)
    f.set_defaults(func=_cmd_lines_fit)


# --------------------------------------------------------------------------------------- grid
def _grid_text(info: dict[str, Any]) -> str:
    lines = [f"grid:        {info['path']} ({info['name']})"]
    for name, lab in info["labels"].items():
        step = f"step {lab['step']:g}" if lab["step"] is not None else "irregular"
        lines.append(f"  {name:<10} {lab['min']:g} .. {lab['max']:g} ({step}, {lab['n']} nodes)"
                     f" {lab['unit']}")
    if info["fixed_labels"]:
        lines.append("fixed:       " + ", ".join(f"{k}={v:g}"
                                                 for k, v in info["fixed_labels"].items()))
    lo, hi = info["wavelength_range"]
    lines += [f"wavelength:  {lo:.3f} - {hi:.3f} Å ({info['medium']}), {info['n_pixels']} px "
              f"at {info['velocity_step']:g} km/s",
              f"nodes:       {info['n_present']} computed, {info['n_missing']} without a model "
              f"atmosphere (of {info['n_nodes']})",
              f"size:        {info['file_size_bytes'] / 1e6:.2f} MB ({info['flux_encoding']} flux)"]
    return "\n".join(lines)


def _cmd_grid_info(args: argparse.Namespace) -> int:
    from .grids.presets import require_default_grid
    from .grids.store import GridStore

    path = args.grid or require_default_grid()
    with GridStore.open(path) as store:
        info = store.info()
    emit(args, info, _grid_text(info))
    return 0


def _cmd_grid_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .grids.build import build_grid
    from .grids.presets import default_grid_path, resolve_spec

    spec = resolve_spec(args.spec or args.preset)
    output = Path(args.output) if args.output else (
        default_grid_path() if spec.name == "default" and not args.spec
        else Path(f"{spec.name}.h5"))
    report = build_grid(spec, output, scheduler=args.scheduler, n_workers=args.workers,
                        overwrite=args.overwrite, progress=not args.no_progress,
                        command=" ".join(["photosphere", *sys.argv[1:]]))
    emit(args, report.as_dict(), f"wrote {report.path}\n{report.throughput_line()}")
    return 0


def _write_spectrum_table(path, columns: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    import warnings
    from pathlib import Path

    from astropy.io.fits.verify import VerifyWarning
    from astropy.table import Table

    from ._files import atomic_path

    path = Path(path)
    table = Table(columns, meta={k: (v if isinstance(v, str | int | float) else json.dumps(
        _jsonable(v))) for k, v in meta.items()})
    fmt = "fits" if path.suffix.lower() in (".fits", ".fit") else "ascii.ecsv"
    with atomic_path(path, suffix=path.suffix) as tmp, warnings.catch_warnings():
        # long metadata keys become standard HIERARCH cards in FITS; no need to warn
        warnings.simplefilter("ignore", VerifyWarning)
        table.write(tmp, format=fmt, overwrite=True)


def _cmd_grid_synth(args: argparse.Namespace) -> int:
    labels = {"teff": args.teff, "logg": args.logg, "feh": args.feh, "alpha": args.alpha,
              "vmic": args.vmic}
    if args.grid:
        import torch

        from .grids.interpolate import GridInterpolator

        model = GridInterpolator(args.grid)
        given = {n: labels[n] for n in model.label_names}
        x = torch.tensor([given[n] for n in model.label_names], dtype=torch.float64)
        wave = model.wavelength
        flux = model.observe(x, vsini=args.vsini, resolution=args.resolution,
                             rv=args.rv).numpy()
        cont = model.predict_continuum(x).double()
        if args.rv:
            from .ops.doppler import shift_wavelength
            from .ops.resample import rebin

            rest = torch.as_tensor(wave, dtype=torch.float64)
            cont = rebin(shift_wavelength(rest, args.rv), cont, rest)
        cont = cont.numpy()
        provenance = {"source": f"interpolated in {args.grid}", "vsini": args.vsini,
                      "resolution": args.resolution, "rv": args.rv}
    else:
        from .grids.build import default_synthesizer

        lo, hi = args.wavelength_range
        syn = default_synthesizer()(args.teff, args.logg, args.feh, args.alpha, args.vmic,
                                    wavelength_min=lo, wavelength_max=hi, step=args.step,
                                    atmosphere=args.atmosphere)
        wave, flux, cont = syn.wavelength, syn.flux, syn.continuum
        provenance = dict(syn.provenance)
    _write_spectrum_table(args.output, {"wavelength": wave, "flux": flux,
                                        "flux_absolute": flux * cont, "continuum": cont},
                          {"medium": "air", "flux_unit": "normalized",
                           "absolute_unit": "erg/s/cm2/Angstrom", **labels, **provenance})
    payload = {"path": str(args.output), "labels": labels, "n_pixels": len(wave),
               "wavelength_min": float(wave[0]), "wavelength_max": float(wave[-1]),
               "provenance": provenance}
    emit(args, payload, f"wrote {args.output}: {len(wave)} px, {wave[0]:.2f}-{wave[-1]:.2f} Å")
    return 0


def _cmd_grid_emulator_train(args: argparse.Namespace) -> int:
    from .grids.emulator import train_emulator

    em = train_emulator(args.grid, args.output, n_components=args.components,
                        n_iter=args.iterations)
    s = {**em.summary(), "path": str(args.output)}
    emit(args, s, f"wrote {args.output}: {s['n_components']} components, "
                  f"{s['n_training_nodes']} nodes; leave-one-out |error| median "
                  f"{s['loo_abs_error_median']:.2e}, 95th percentile {s['loo_abs_error_p95']:.2e}")
    return 0


def _cmd_grid_ingest_phoenix(args: argparse.Namespace) -> int:
    from .grids.phoenix import ingest_phoenix
    from .grids.store import GridStore

    lo, hi = args.wavelength_range
    out = ingest_phoenix(args.source, args.output, wave_file=args.wave_file,
                         wavelength_min=lo, wavelength_max=hi, velocity_step=args.velocity_step,
                         medium=args.medium, overwrite=args.overwrite,
                         progress=not args.no_progress)
    with GridStore.open(out) as store:
        info = store.info()
    emit(args, info, _grid_text(info))
    return 0


# --------------------------------------------------------------------------------------- setup
def _cmd_setup(args: argparse.Namespace) -> int:
    from .grids.synth.atmospheres import ensure_atmospheres
    from .grids.synth.build import installation

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


# ---------------------------------------------------------------------------------------- grid
# `photosphere grid <cmd>`: each grid command appends a registrar taking the grid subparsers.
GRID_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = []


def _register_grid(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="synthetic grids: synthesis, validation, building")
    gsub = p.add_subparsers(dest="grid_command", metavar="GRID_COMMAND")
    gsub.required = True
    for register in GRID_REGISTRARS:
        register(gsub)


def _register_grid_store_commands(gsub: argparse._SubParsersAction) -> None:
    """grid build, info, synth, ingest-phoenix, emulator train (the grid-store stream)."""
    p = gsub.add_parser("info", help="describe a grid file (default: the embedded grid)")
    p.add_argument("grid", nargs="?", help="grid HDF5 file (default: the embedded default grid)")
    _add_json(p)
    p.set_defaults(func=_cmd_grid_info)

    p = gsub.add_parser("build", help="synthesise a grid (resumable; Dask-parallel)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--preset", help="a named grid: default, harpsn-dl")
    which.add_argument("--spec", help="a TOML/YAML grid definition file (see docs/grids.md)")
    p.add_argument("-o", "--output", help="output grid file (default: the package's embedded "
                   "grid for --preset default, else NAME.h5)")
    p.add_argument("--workers", type=int, help="local Dask workers (default: one per core)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask cluster (tcp://host:8786); 'synchronous' runs "
                   "in this process without Dask")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_json(p)
    p.set_defaults(func=_cmd_grid_build)

    p = gsub.add_parser("synth", help="one synthetic spectrum to a file (.fits or .ecsv)")
    p.add_argument("--teff", type=float, required=True, help="K")
    p.add_argument("--logg", type=float, required=True, help="dex (cgs)")
    p.add_argument("--feh", type=float, default=0.0, help="[Fe/H] dex")
    p.add_argument("--alpha", type=float, default=0.0, help="[α/Fe] dex")
    p.add_argument("--vmic", type=float, default=1.0, help="km/s")
    p.add_argument("--wavelength-range", type=float, nargs=2, default=(5050.0, 5350.0),
                   metavar=("MIN", "MAX"), help="Å, air (default 5050 5350)")
    p.add_argument("--step", type=float, default=0.01, help="Å (default 0.01)")
    p.add_argument("--atmosphere", default="atlas9", choices=("atlas9", "marcs", "auto"))
    p.add_argument("--grid", help="interpolate in this grid file instead of synthesising")
    p.add_argument("--vsini", type=float, default=0.0,
                   help="with --grid: rotational broadening, km/s")
    p.add_argument("--resolution", type=float, help="with --grid: Gaussian LSF of this R")
    p.add_argument("--rv", type=float, default=0.0, help="with --grid: Doppler shift, km/s")
    p.add_argument("-o", "--output", required=True, help="output .fits or .ecsv file")
    _add_json(p)
    p.set_defaults(func=_cmd_grid_synth)

    p = gsub.add_parser("ingest-phoenix", help="convert PHOENIX-ACES HiRes files to a grid")
    p.add_argument("source", help="PHOENIX directory (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="output grid file")
    p.add_argument("--wave-file", help="WAVE_PHOENIX-ACES-AGSS-COND-2011.fits (default: found)")
    p.add_argument("--wavelength-range", type=float, nargs=2, required=True,
                   metavar=("MIN", "MAX"), help="Å in --medium")
    p.add_argument("--velocity-step", type=float, default=1.0, help="km/s (default 1.0)")
    p.add_argument("--medium", default="air", choices=("air", "vacuum"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_json(p)
    p.set_defaults(func=_cmd_grid_ingest_phoenix)

    emu = gsub.add_parser("emulator", help="PCA + Gaussian-process emulators of a grid")
    esub = emu.add_subparsers(dest="emulator_command", metavar="EMULATOR_COMMAND")
    esub.required = True
    p = esub.add_parser("train", help="train an emulator from a grid file; report its "
                        "leave-one-out error")
    p.add_argument("grid", help="grid HDF5 file")
    p.add_argument("-o", "--output", required=True, help="output emulator HDF5 file")
    p.add_argument("--components", type=int, help="PCA components (default: 99.99%% variance)")
    p.add_argument("--iterations", type=int, default=150, help="hyperparameter optimiser steps")
    _add_json(p)
    p.set_defaults(func=_cmd_grid_emulator_train)


GRID_REGISTRARS.append(_register_grid_store_commands)

def _default_uves_sun() -> str:
    import os

    root = os.environ.get("PHOTOSPHERE_SHARED_DATA", os.path.join("..", "shared", "data"))
    return os.path.join(root, "optical", "uves_sun_norm.txt")


def _cmd_validate_sun(args: argparse.Namespace) -> int:
    from .grids.synth.validation import validate_sun

    result = validate_sun(args.observed, atmosphere=args.atmosphere, plot=args.plot)
    d = {**result.summary(), "plot": args.plot}
    text = "\n".join([
        f"Pearson r:            {result.pearson_r:.4f}   (bar >= 0.96)",
        f"median |residual|:    {result.median_abs_residual:.4f}   (bar <= 0.015)",
        f"95th pct |residual|:  {result.p95_abs_residual:.4f}   (bar <= 0.09)",
        f"fitted broadening:    R={result.resolution:,.0f}, zeta={result.macroturbulence:.2f} "
        f"km/s, vsini={result.vsini:.1f} km/s (fixed), rv={result.rv:+.3f} km/s"
        + (" (R at its upper bound: the data prefer zeta alone)"
           if result.resolution_at_bound else ""),
        f"atmosphere:           {result.provenance.get('atmosphere_id', '')}",
        f"verdict:              {'PASS' if result.passes else 'FAIL'}; plot: {args.plot}",
    ])
    emit(args, d, text)
    return 0 if result.passes else 1


def _register_grid_validate_sun(gsub: argparse._SubParsersAction) -> None:
    p = gsub.add_parser("validate-sun", help="synthesise the Sun and compare with UVES "
                        "(5050-5350 Å): Pearson r, median and p95 |residual|")
    p.add_argument("--observed", default=_default_uves_sun(),
                   help="UVES solar spectrum (default: $PHOTOSPHERE_SHARED_DATA or "
                        "../shared/data, optical/uves_sun_norm.txt)")
    p.add_argument("--atmosphere", choices=("atlas9", "marcs", "auto"), default="atlas9")
    p.add_argument("--plot", default="validate-sun.png", help="overlay plot (PNG)")
    _add_json(p)
    p.set_defaults(func=_cmd_validate_sun)


GRID_REGISTRARS.append(_register_grid_validate_sun)


# --------------------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import format_summary, run_demo

    result = run_demo(args.output_dir, seed=args.seed, progress=not args.json)
    emit(args, result.summary(), format_summary(result))
    return 0


def _register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on data the package makes itself: "
                       "synthesis, observation, files, fit")
    p.add_argument("-o", "--output-dir", default="photosphere-demo",
                   help="folder for the grid, files and plots (default: ./photosphere-demo)")
    p.add_argument("--seed", type=int, default=42, help="noise seed")
    _add_json(p)
    p.set_defaults(func=_cmd_demo)


# --------------------------------------------------------------------------------------- nn
def _cmd_nn(args: argparse.Namespace) -> int:
    payload, text = args.nn_run(args)
    emit(args, payload, text)
    return 0


def _register_nn(sub: argparse._SubParsersAction) -> None:
    from .nn.commands import add_arguments

    add_arguments(sub, _add_json)
    sub.choices["nn"].set_defaults(func=_cmd_nn)


# --------------------------------------------------------------------------------------- cannon
def _cannon_spec(args: argparse.Namespace):
    from .datasets import apogee_emulated as ae
    from .workflows.cannon_apogee import DatasetSpec

    box = ae.VALID_BOX if args.box == "valid" else ae.CANNON_BOX
    return DatasetSpec(args.n_train, args.seed, (args.snr_min, args.snr_max), dict(box))


def _cmd_cannon_train(args: argparse.Namespace) -> int:
    import time

    from .workflows import cannon_apogee as wf

    start = time.perf_counter()
    if args.grid:
        from .workflows.cannon_grid import GridDatasetSpec, train_on_grid

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
    from .models.cannon import CannonModel
    from .workflows import cannon_apogee as wf

    model = CannonModel.load(args.model)
    payload: dict[str, Any] = {"model": str(args.model)}
    lines = []
    kind = model.provenance_.get("training_set", {}).get("kind")
    if args.n_test > 0 and kind == "grid":
        from .workflows.cannon_grid import GridDatasetSpec

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


# --------------------------------------------------------------------------------------- main
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _register_info, _register_setup, _register_grid, _register_fit, _register_cannon,
    _register_lines, _register_demo]
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
