"""``photosphere lines``: the interpretable line-by-line model (clone, fit)."""

from __future__ import annotations

import argparse

import numpy as np

from ._common import _add_json, add_medium, emit

#: Fewest usable pixels of a spectrum for the line model (a few lines' profiles).
LINES_MIN_PIXELS = 20


def _lines_read(path: str, wavelength_min: float | None, wavelength_max: float | None,
                medium: str | None = None, observed: bool = False):
    """The 1-D :class:`~photosphere.spectrum.Spectrum` of a file (any ``io.read`` product), cut
    to [wavelength_min, wavelength_max] Å (``Spectrum.slice``), without σ when the file gives
    none above 0 (the line fit then estimates one); ``observed``: a star's spectrum to fit,
    refused when it cannot be one (:func:`~photosphere.infer.validity.check_spectrum`)."""
    from ..errors import FileFormatError
    from ..infer.validity import check_spectrum
    from ..io.prepare import read_spectrum

    spec = read_spectrum(path, **({"medium": medium} if medium else {}))
    if np.ndim(spec.flux) != 1:
        raise FileFormatError(f"{path} holds {spec.flux.shape[0]} orders; the line model fits "
                              "one 1-D spectrum: pass one order (or a 1-D product)")
    if wavelength_min is not None or wavelength_max is not None:
        spec = spec.slice(-np.inf if wavelength_min is None else wavelength_min,
                          np.inf if wavelength_max is None else wavelength_max)
    if observed:  # a local line model needs fewer pixels than a full fit, but a star
        check_spectrum(spec, path, min_pixels=LINES_MIN_PIXELS)
    if spec.has_uncertainty and not np.any(spec.sigma > 0):
        spec = spec.replace(sigma=None)
    if spec.wavelength.size < 5:
        raise FileFormatError(f"{path}: fewer than 5 pixels in {wavelength_min}–{wavelength_max} "
                              f"Å; widen the range")
    return spec


def _lines_settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wavelength-min", type=float, help="first wavelength to use (Å)")
    p.add_argument("--wavelength-max", type=float, help="last wavelength to use (Å)")
    p.add_argument("--steps", type=int, default=300, help="Adam epochs per round / stage")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _cmd_lines_clone(args: argparse.Namespace) -> int:
    import torch

    from ..models.lines.clone import clone_spectrum
    from ..models.lines.model import write_table

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.synthesize:
        try:
            from ..grids.synth.turbospectrum import synthesize
        except ImportError as exc:
            from ..errors import DependencyError

            raise DependencyError(f"--synthesize needs photosphere.grids.synth.turbospectrum "
                                  f"({exc}); clone a spectrum file instead") from None
        if args.wavelength_min is None or args.wavelength_max is None:
            from ..errors import UnitsError

            raise UnitsError("--synthesize needs --wavelength-min and --wavelength-max (Å)")
        teff, logg, feh = args.synthesize
        synth = synthesize(teff, logg, feh, wavelength_min=args.wavelength_min,
                           wavelength_max=args.wavelength_max)
        wave, flux, source = synth.wavelength, synth.flux, f"turbospectrum {teff} {logg} {feh}"
        medium = "air"
    elif args.spectrum:
        spec = _lines_read(args.spectrum, args.wavelength_min, args.wavelength_max,
                           args.medium)
        wave, flux, mask, medium = spec.wavelength, spec.flux, spec.mask, spec.medium
        if mask.any():
            from ..errors import InvalidSpectrumError

            raise InvalidSpectrumError(
                f"{args.spectrum}: {int(mask.sum())} masked/NaN pixel(s) in the range to clone "
                f"(first at {wave[np.argmax(mask)]:.3f} Å); cloning needs a complete spectrum: "
                "choose a range without them (--wavelength-min/--wavelength-max)")
        source = args.spectrum
    else:
        from ..errors import MissingFileError

        raise MissingFileError("give a SPECTRUM file or --synthesize TEFF LOGG FEH")
    result = clone_spectrum(wave, flux, prominence=args.prominence, n_steps=args.steps,
                            n_rounds=args.rounds, optimizer=args.optimizer,
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

    from ..infer.lines.fit import FitSettings, fit_lines
    from ..infer.lines.table import fitted_line_table, plot_fit
    from ..models.lines.model import read_line_model, write_table
    from ..models.lines.telluric import clone_telluric, read_telluric

    if args.threads:
        torch.set_num_threads(args.threads)
    obs = _lines_read(args.observed, args.wavelength_min, args.wavelength_max, args.medium,
                      observed=True)
    wave = obs.wavelength
    stellar = read_line_model(args.lines, medium=obs.medium)
    telluric = None
    if args.telluric:
        groups = {}
        for item in args.telluric:  # NAME=PATH, or PATH for a single group called "all"
            name, _, path = item.rpartition("=")
            groups[name or ("all" if len(args.telluric) == 1 else path)] = read_telluric(
                path, wavelength_min=wave[0] - 5, wavelength_max=wave[-1] + 5)
        telluric, _ = clone_telluric(groups, progress=not args.no_progress)
    settings = FitSettings(resolution=args.resolution, n_steps=args.steps,
                           n_global_steps=args.global_steps,
                           continuum_degree=args.continuum_degree,
                           fit_line_parameters=not args.fix_lines)
    added = None
    if args.add_missing is not None:
        from ..infer.lines.missing import fit_adding_lines

        _, result, added = fit_adding_lines(stellar, obs, settings=settings, telluric=telluric,
                                            rv=args.rv, n_sigma=args.add_missing,
                                            progress=not args.no_progress)
        stellar = result.model.stellar
    else:
        result = fit_lines(stellar, obs, settings=settings, telluric=telluric, rv=args.rv,
                           progress=not args.no_progress)
    table = fitted_line_table(result, added=added)
    summary = result.summary()
    summary["n_added"] = int(table["added"].sum())
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
            f"{summary['n_vanished']}, telluric-blended {summary['n_telluric_blended']}, "
            f"added {summary['n_added']}")
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
    c.add_argument("--optimizer", choices=["adam", "lm"], default="adam",
                   help="adam (--steps epochs per round) or lm: Levenberg-Marquardt, at most "
                        "--steps iterations per round, stops when a step gains < 0.1 %%")
    c.add_argument("--threads", type=int, help="torch CPU threads")
    add_medium(c)
    _lines_settings_args(c)
    _add_json(c)
    c.set_defaults(func=_cmd_lines_clone)
    f = lines_sub.add_parser("fit", help="fit cloned lines + RV, vsini, continuum, tellurics")
    f.add_argument("observed", help="observed spectrum (text or FITS table, any io product)")
    f.add_argument("--lines", required=True, help="line table from `photosphere lines clone`")
    add_medium(f)
    f.add_argument("--telluric", action="append", metavar="[MOLECULE=]PATH",
                   help="telluric transmission (TelFit csv, TAPAS ipac, APOGEE LBLRTM grid); "
                        "repeat as H2O=PATH CO2=PATH ... for a fitted scaling per molecule")
    f.add_argument("--resolution", type=float, default=55000.0, help="instrumental R")
    f.add_argument("--rv", type=float, help="initial RV (km/s); default: scan ±200 km/s")
    f.add_argument("--continuum-degree", type=int, default=3)
    f.add_argument("--global-steps", type=int, default=100,
                   help="Adam epochs of the first stage (rv, vsini, continuum, tellurics)")
    f.add_argument("--fix-lines", action="store_true",
                   help="fit only RV, vsini, continuum and tellurics")
    f.add_argument("--add-missing", type=float, nargs="?", const=5.0, metavar="N_SIGMA",
                   help="after the fit, add lines for residual absorption deeper than N_SIGMA "
                        "(default 5) x the noise and not covered by a line, then refit "
                        "(flag `added` in the table)")
    f.add_argument("-o", "--output", help="fitted line table (.ecsv/.fits)")
    f.add_argument("--save-model", help="write the fitted lines as a reusable line table")
    f.add_argument("--plot", help="figure of data / stellar / telluric / residual (.png/.pdf)")
    f.add_argument("--threads", type=int, help="torch CPU threads")
    _lines_settings_args(f)
    _add_json(f)
    f.set_defaults(func=_cmd_lines_fit)
