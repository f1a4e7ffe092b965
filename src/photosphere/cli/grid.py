"""``photosphere grid``: synthesis, builds, inspection, emulation, PHOENIX ingest, Sun check."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from ._checks import positive_int
from ._common import _add_json, _jsonable, add_medium, emit, medium_kwargs


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
    from ..grids.presets import require_default_grid
    from ..grids.store import GridStore
    from ..grids.training_set import TrainingSet, is_training_set

    path = args.grid or require_default_grid()
    if is_training_set(path):
        info = TrainingSet(path).info()
        emit(args, info, _training_set_text(info))
        return 0
    if _is_emulator(path):
        info = _emulator_info(path)
        emit(args, info, _emulator_text(info))
        return 0
    with GridStore.open(path) as store:  # opening checks the structure (store._check_structure)
        info = store.info()
        if args.check:
            info["check"] = store.verify()
    text = _grid_text(info)
    if args.check:
        text += ("\ncheck: structure ok; content checksum " + (
            "ok" if info["check"]["checksum"] == "ok" else
            "absent (a grid written before checksums existed: structure checked only)"))
    emit(args, info, text)
    return 0


def _is_emulator(path) -> bool:
    from pathlib import Path

    from ..grids.emulator import FORMAT
    from ..grids.store import hdf5_format

    return Path(path).is_file() and hdf5_format(Path(path)) == FORMAT


def _emulator_info(path) -> dict[str, Any]:
    """An emulator file's summary, coverage and line calibration (if any)."""
    from ..grids.load import load_emulator
    from ..ops.grid import log_uniform_runs

    model = load_emulator(path)
    base = getattr(model, "base", model)
    _, runs = log_uniform_runs(np.asarray(base.wavelength, float))
    info = {**base.summary(), "path": str(path), "medium": base.medium,
            "windows": [[float(base.wavelength[a]), float(base.wavelength[b - 1])]
                        for a, b in runs]}
    calibration = getattr(model, "calibration", None)
    info["line_calibration"] = None if calibration is None else calibration.summary()
    info["labels"] = list(model.label_names)
    return info


def _emulator_text(info: dict[str, Any]) -> str:
    lines = [f"emulator: {info['path']} ({info['kind']}), {info['n_components']} components "
             f"from {info['n_training_nodes']} spectra; leave-one-out |error| median "
             f"{info['loo_abs_error_median']:.4f}, 95 % {info['loo_abs_error_p95']:.4f}"]
    for name, (lo, hi) in info["bounds"].items():
        lines.append(f"  {name:<10} {lo:g} .. {hi:g}")
    windows = ", ".join(f"{lo:.0f}-{hi:.0f}" for lo, hi in info["windows"])
    lines.append(f"windows:      {windows} Å ({info['medium']}), {info['n_pixels']} px")
    cal = info["line_calibration"]
    if cal is None:
        lines.append("line data:    as synthesised (no calibration on real stars; "
                     "`photosphere grid calibrate-stars` makes one)")
    else:
        lines.append(f"line data:    calibrated on {len(cal['stars'])} stars: "
                     f"{cal['changed_fraction']:.1%} of pixels changed (log10 c 5-95 %: "
                     f"{cal['log10_exponent_p5_p95'][0]:+.3f} to "
                     f"{cal['log10_exponent_p5_p95'][1]:+.3f}), {cal['masked_fraction']:.1%} "
                     f"masked; stars: {', '.join(cal['stars'])}")
        if cal.get("tied"):
            lines.append(f"tied labels:  {', '.join(cal['tied'])} (from relations; fitted "
                         f"labels: {', '.join(info['labels'])})")
        if cal.get("held"):
            lines.append(f"held labels:  {', '.join(cal['held'])} (from relations in the "
                         f"calibration stars' fits only; free in fits)")
        if cal.get("feh_offsets") is not None:
            offsets = ", ".join("failed" if v is None else f"{v:+.2f}"
                                for v in cal["feh_offsets"])
            lines.append(f"[Fe/H] zero point: {cal['feh_zero_point']:+.3f} dex above [Fe/H] "
                         "-1, none below -2: the median leave-one-out offset of the stars with "
                         f"reference [Fe/H] >= -1 (all stars: {offsets})")
        else:
            lines.append("[Fe/H] zero point: not measured (`grid calibrate-stars` without "
                         "--no-zero-point measures it)")
    return "\n".join(lines)


def _training_set_text(info: dict[str, Any]) -> str:
    lines = [f"training set: {info['path']} ({info['name']}), {info['n_spectra']} spectra "
             f"({info['n_missing']} without a model atmosphere)"]
    for name, lab in info["labels"].items():
        lines.append(f"  {name:<10} {lab['min']:g} .. {lab['max']:g} {lab['unit']}")
    windows = ", ".join(f"{lo:g}-{hi:g}" for lo, hi in info["windows"])
    lines.append(f"windows:      {windows} Å ({info['medium']}), {info['n_pixels']} px at "
                 f"{info['velocity_step']:g} km/s")
    prov = info["provenance"]
    lines.append(f"provenance:   {prov.get('code', prov.get('synthesis_code', ''))} "
                 f"{prov.get('linelist', prov.get('synthesis_linelist', ''))}".rstrip())
    return "\n".join(lines)


def _cmd_grid_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .._files import cache_dir
    from ..grids.build import build_grid
    from ..grids.presets import default_grid_path, resolve_spec
    from ..grids.seed import seed_path
    from ..grids.training_set import TRAINING_PRESETS

    seed = None
    if args.preset in TRAINING_PRESETS:
        spec = TRAINING_PRESETS[args.preset]()
        output = Path(args.output) if args.output else cache_dir("grids") / f"{spec.name}.h5"
        seed = None if args.no_seed else seed_path(args.preset)
    else:
        spec = resolve_spec(args.spec or args.preset)
        output = Path(args.output) if args.output else (
            default_grid_path() if spec.name == "default" and not args.spec
            else Path(f"{spec.name}.h5"))
    report = build_grid(spec, output, scheduler=args.scheduler, n_workers=args.workers,
                        overwrite=args.overwrite, progress=not args.no_progress,
                        command=" ".join(["photosphere", *sys.argv[1:]]), seed=seed)
    emit(args, report.as_dict(), f"wrote {report.path}\n{report.throughput_line()}")
    return 0


def _write_spectrum_table(path, columns: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    import warnings
    from pathlib import Path

    from astropy.io.fits.verify import VerifyWarning
    from astropy.table import Table

    from .._files import atomic_path

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

        from ..grids.interpolate import GridInterpolator

        model = GridInterpolator(args.grid)
        given = {n: labels[n] for n in model.label_names}
        x = torch.tensor([given[n] for n in model.label_names], dtype=torch.float64)
        wave = model.wavelength
        flux = model.observe(x, vsini=args.vsini, resolution=args.resolution,
                             rv=args.rv).numpy()
        cont = model.predict_continuum(x).double()
        if args.rv:
            from ..ops.doppler import shift_wavelength
            from ..ops.resample import rebin

            rest = torch.as_tensor(wave, dtype=torch.float64)
            cont = rebin(shift_wavelength(rest, args.rv), cont, rest)
        cont = cont.numpy()
        provenance = {"source": f"interpolated in {args.grid}", "vsini": args.vsini,
                      "resolution": args.resolution, "rv": args.rv}
    else:
        from ..grids.build import default_synthesizer

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
    from ..errors import ModelError
    from ..grids.emulator import PCAGPEmulator, train_emulator

    if (args.grid is None) == (args.preset is None):
        raise ModelError("give a grid or training-set file, or --preset NAME (a training set "
                         "built with `photosphere grid build --preset NAME`), not both")
    if args.preset is not None:
        from ..grids.training_set import read_built

        labels, flux, wavelength, spec, planned = read_built(args.preset)
        if not args.json:
            print(f"training on {len(labels)} spectra of the {planned} of preset "
                  f"{args.preset!r}" + ("" if len(labels) + 32 >= planned else
                                        " (its build is not finished: the spectra so far)"),
                  file=sys.stderr)
        em = PCAGPEmulator(n_components=args.components, n_iter=args.iterations).fit_arrays(
            labels, flux, label_names=spec.label_names, wavelength=wavelength, bounds=spec.box)
        em.save(args.output)
    else:
        em = train_emulator(args.grid, args.output, n_components=args.components,
                            n_iter=args.iterations)
    s = {**em.summary(), "path": str(args.output)}
    emit(args, s, f"wrote {args.output}: {s['n_components']} components, "
                  f"{s['n_training_nodes']} nodes; leave-one-out |error| median "
                  f"{s['loo_abs_error_median']:.2e}, 95th percentile {s['loo_abs_error_p95']:.2e}"
                  f"; σ calibration factor {s['sigma_scale']:.3f}")
    return 0


def _cmd_grid_seed(args: argparse.Namespace) -> int:
    from ..grids.seed import write_seed
    from ..grids.training_set import built_nodes

    spec, nodes = built_nodes(args.preset)
    path = write_seed(args.output, spec, nodes)
    n_ok = sum(not n.missing for n in nodes)
    size = path.stat().st_size / 1e6
    emit(args, {"path": str(path), "preset": args.preset, "n_spectra": n_ok,
                "n_missing": len(nodes) - n_ok, "n_planned": spec.n_nodes, "size_mb": size},
         f"wrote {path}: {n_ok} spectra (+{len(nodes) - n_ok} without a model atmosphere) of "
         f"the {spec.n_nodes} of {args.preset!r}, {size:.1f} MB")
    return 0


def _cmd_grid_ingest_phoenix(args: argparse.Namespace) -> int:
    from ..grids.phoenix import ingest_phoenix
    from ..grids.store import GridStore

    lo, hi = args.wavelength_range
    out = ingest_phoenix(args.source, args.output, wave_file=args.wave_file,
                         wavelength_min=lo, wavelength_max=hi, velocity_step=args.velocity_step,
                         medium=args.medium, overwrite=args.overwrite,
                         progress=not args.no_progress)
    with GridStore.open(out) as store:
        info = store.info()
    emit(args, info, _grid_text(info))
    return 0


# `photosphere grid <cmd>`: each grid command appends a registrar taking the grid subparsers.
GRID_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = []


def _register_grid(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="synthetic grids: synthesis, validation, building")
    gsub = p.add_subparsers(dest="grid_command", metavar="GRID_COMMAND")
    gsub.required = True
    for register in GRID_REGISTRARS:
        register(gsub)


def _register_grid_store_commands(gsub: argparse._SubParsersAction) -> None:
    """grid info, seed, build, synth, ingest-phoenix, emulator train (the grid-store stream):
    one function a subcommand, registered in this order (the order of `grid --help`)."""
    for add in (_add_grid_info, _add_grid_seed, _add_grid_build, _add_grid_synth,
                _add_grid_ingest_phoenix, _add_grid_emulator):
        add(gsub)


def _add_grid_info(gsub: argparse._SubParsersAction) -> None:
    """grid info: describe a grid file (its content checksum with --check)."""
    p = gsub.add_parser("info", help="describe a grid file (default: the embedded grid)")
    p.add_argument("grid", nargs="?", help="grid HDF5 file (default: the embedded default grid)")
    _add_json(p)
    p.add_argument("--check", action="store_true",
                   help="also recompute the content checksum written at build and compare "
                        "(exit 2 when the flux or labels were changed)")
    p.set_defaults(func=_cmd_grid_info)


def _add_grid_seed(gsub: argparse._SubParsersAction) -> None:
    """grid seed: a training-set build so far as the compressed seed that ships."""
    p = gsub.add_parser("seed", help="write the spectra of a training-set build so far as a "
                        "compressed seed (what the package ships; builds start from it)")
    p.add_argument("--preset", required=True, help="training-set preset, e.g. optical")
    p.add_argument("-o", "--output", required=True, help="seed file to write (.h5)")
    _add_json(p)
    p.set_defaults(func=_cmd_grid_seed)


def _add_grid_build(gsub: argparse._SubParsersAction) -> None:
    """grid build: synthesise a grid from a preset or a definition file."""
    p = gsub.add_parser("build", help="synthesise a grid (resumable; Dask-parallel)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--preset", help="a named grid: default, harpsn-dl; or the training "
                       "set 'optical' (768 syntheses at scattered labels over 7 optical "
                       "windows, for the emulator; default output in the photosphere cache)")
    which.add_argument("--spec", help="a TOML/YAML grid definition file (see docs/grids.md)")
    p.add_argument("-o", "--output", help="output grid file (default: the package's embedded "
                   "grid for --preset default, else NAME.h5)")
    p.add_argument("--workers", type=positive_int,
                   help="local Dask workers (default: one per core)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask cluster (tcp://host:8786); 'synchronous' runs "
                   "in this process without Dask")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-seed", action="store_true", help="a training-set preset: synthesise "
                   "every spectrum, not starting from those shipped with the package")
    _add_json(p)
    p.set_defaults(func=_cmd_grid_build)


def _add_grid_synth(gsub: argparse._SubParsersAction) -> None:
    """grid synth: one synthetic spectrum (synthesised, or interpolated in a grid)."""
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


def _add_grid_ingest_phoenix(gsub: argparse._SubParsersAction) -> None:
    """grid ingest-phoenix: PHOENIX-ACES HiRes files to a grid."""
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


def _add_grid_emulator(gsub: argparse._SubParsersAction) -> None:
    """grid emulator train: PCA + Gaussian-process emulators of a grid."""
    emu = gsub.add_parser("emulator", help="PCA + Gaussian-process emulators of a grid")
    esub = emu.add_subparsers(dest="emulator_command", metavar="EMULATOR_COMMAND")
    esub.required = True
    p = esub.add_parser("train", help="train an emulator from a grid file; report its "
                        "leave-one-out error")
    p.add_argument("grid", nargs="?", help="grid or training-set HDF5 file")
    p.add_argument("--preset", help="instead of a file: the training set of this preset (e.g. "
                                    "optical) in the photosphere cache, finished or as far as "
                                    "its build has got")
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


def _validation_text(result: Any, plot: str) -> str:
    from ..grids.synth.validation import BAR

    rows = [f"{'window (Å)':<13} {'pixels':>7} {'r':>7} {'med|res|':>9} {'p95|res|':>9}  verdict"
            "  continuum"]
    for f in (*result.windows, result.overall):
        name = "all" if f is result.overall else f"{f.window[0]:g}-{f.window[1]:g}"
        rows.append(f"{name:<13} {f.n_pixels:>7} {f.pearson_r:>7.4f} "
                    f"{f.median_abs_residual:>9.4f} {f.p95_abs_residual:>9.4f}  "
                    f"{'PASS' if f.passes else 'FAIL':<7}  {f.continuum}")
    rows += [f"  no data in the observation: {lo:g}-{hi:g} Å" for lo, hi in result.uncovered]
    prov = result.provenance
    return "\n".join([
        f"{result.star} ({', '.join(f'{k} {v:g}' for k, v in result.labels.items())}); "
        f"windows: {result.window_set}; atmosphere {prov.get('atmosphere')}, molecules "
        f"{'on' if prov.get('molecules') else 'off'}",
        *rows,
        f"bar:                  r >= {BAR['pearson_r']}, median |res| <= "
        f"{BAR['median_abs_residual']}, p95 <= {BAR['p95_abs_residual']} (every window and all)",
        f"fitted broadening:    R={result.resolution:,.0f}, zeta={result.macroturbulence:.2f} "
        f"km/s, vsini={result.vsini:.1f} km/s (fixed), rv={result.rv:+.3f} km/s"
        + (" (R at its upper bound: the data prefer zeta alone)"
           if result.resolution_at_bound else ""),
        f"atmosphere:           {str(prov.get('atmosphere_id', '')).split('<-')[0]}",
        f"verdict:              {'PASS' if result.passes else 'FAIL'}; plot: {plot}",
    ])


def _cmd_validate_star(args: argparse.Namespace) -> int:
    from ..grids.synth.validation import validate_star

    star = getattr(args, "star", "sun")
    plot = args.plot or f"validate-{star.lower()}.png"
    result = validate_star(star, args.observed, windows=args.windows,
                           atmosphere=args.atmosphere, molecules=args.molecules, plot=plot,
                           data_dir=args.data_dir)
    emit(args, {**result.summary(), "plot": plot}, _validation_text(result, plot))
    return 0 if result.passes else 1


def _add_validation_options(p: argparse.ArgumentParser) -> None:
    from ..grids.synth.validation_stars import WINDOW_SETS

    p.add_argument("--windows", choices=tuple(WINDOW_SETS), default="optical",
                   help="optical: the optical model's 7 windows (4821-6610 Å, MARCS where it "
                        "exists, molecules); embedded: 5050-5350 Å (ATLAS9, atoms only)")
    p.add_argument("--atmosphere", choices=("atlas9", "marcs", "auto"), default=None,
                   help="override the window set's model atmospheres")
    p.add_argument("--molecules", action=argparse.BooleanOptionalAction, default=None,
                   help="override the window set's molecular lines")
    p.add_argument("--observed", default=None,
                   help="the observed spectrum (default: the star's file in the shared data)")
    p.add_argument("--data-dir", default=None,
                   help="shared data folder (default: $PHOTOSPHERE_SHARED_DATA or ../shared/data)")
    _add_json(p)
    p.set_defaults(func=_cmd_validate_star)


def _register_grid_validate(gsub: argparse._SubParsersAction) -> None:
    p = gsub.add_parser("validate-sun", help="synthesise the Sun and compare with UVES "
                        "per window: Pearson r, median and p95 |residual|")
    p.add_argument("--plot", default="validate-sun.png", help="overlay plot (PNG)")
    _add_validation_options(p)
    p = gsub.add_parser("validate-star", help="synthesise a reference star (sun, procyon) at "
                        "its reference labels and compare with its spectrum per window")
    p.add_argument("star", help="sun or procyon")
    p.add_argument("--plot", default=None, help="overlay plot (PNG; default validate-STAR.png)")
    _add_validation_options(p)


GRID_REGISTRARS.append(_register_grid_validate)


def _cmd_calibrate_lines(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..grids.line_strengths import derive_line_strengths, plot_line_strengths
    from ..grids.presets import require_default_grid
    from ..io import read
    from ..nn.train import source_from_grid

    source = source_from_grid(args.grid or require_default_grid())
    observed = read(args.observed, **medium_kwargs(args))
    labels = dict(zip(("teff", "logg", "feh"), args.labels, strict=True))
    strengths = derive_line_strengths(
        observed, source, labels, vsini=args.vsini, n_iter=args.iterations,
        provenance={"observed": Path(args.observed).name, "grid": str(args.grid or "default")},
        progress=not args.json)
    strengths.write(args.output)
    if args.plot:
        plot_line_strengths(strengths, args.plot)
    summary = {**strengths.summary(), "output": args.output, "plot": args.plot}
    ref = strengths.reference
    text = "\n".join([
        f"reference:         {Path(args.observed).name} at "
        + ", ".join(f"{k} {v:g}" for k, v in labels.items()) + f", vsini {args.vsini:g} km/s",
        f"fitted broadening: ζ {ref['macroturbulence']:.2f} km/s, R {ref['resolution']:,.0f}, "
        f"rv {ref['rv']:+.3f} km/s",
        f"rms residual:      {ref['rms_before']:.4f} -> {ref['rms_after']:.4f} "
        f"({args.iterations} iterations)",
        f"pixels changed:    {summary['fraction_changed']:.1%} of {summary['n_pixels']} "
        f"(median exponent among them {summary['median_exponent_changed']:.3f})",
        f"wrote:             {args.output}" + (f"; plot {args.plot}" if args.plot else ""),
    ])
    emit(args, summary, text)
    return 0


def _register_grid_calibrate_lines(gsub: argparse._SubParsersAction) -> None:
    p = gsub.add_parser("calibrate-lines", help="empirical line strengths: per-pixel exponents "
                        "that make a grid match a reference star of known labels (the Sun)")
    p.add_argument("--observed", default=_default_uves_sun(),
                   help="continuum-normalised spectrum of the reference star (default: the UVES "
                        "Sun of $PHOTOSPHERE_SHARED_DATA or ../shared/data)")
    add_medium(p)
    p.add_argument("--grid", help="HDF5 grid (default: the embedded grid)")
    p.add_argument("--labels", type=float, nargs=3, metavar=("TEFF", "LOGG", "FEH"),
                   default=(5772.0, 4.44, 0.0), help="the reference star's labels (the Sun)")
    p.add_argument("--vsini", type=float, default=1.9, help="km/s, fixed (the Sun: 1.9)")
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("-o", "--output", required=True, help="line-strength table (ECSV)")
    p.add_argument("--plot", help="diagnostic plot (PNG): before/after and the exponents")
    _add_json(p)
    p.set_defaults(func=_cmd_calibrate_lines)


GRID_REGISTRARS.append(_register_grid_calibrate_lines)


#: benchmark tiers whose stars calibrate line data by default (not the M dwarfs, which lie
#: outside the models' molecular physics, nor the low-resolution MILES spectra)
CALIBRATION_TIERS = ("FGK", "metal-poor", "giant")


def _cmd_calibrate_stars(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..api import load_model
    from ..benchmark import read_stars, select
    from ..benchmark.engines import resolution_of
    from ..datasets.reference_stars import default_stars_dir
    from ..errors import ModelError
    from ..grids.calibrated import CalibratedModel, write_calibration
    from ..grids.emulator import PCAGPEmulator
    from ..infer.batch import prepare_spectrum
    from ..infer.line_calibration import calibrate_lines

    model = load_model(args.model)
    if isinstance(model, CalibratedModel):
        model = model.base
    if not isinstance(model, PCAGPEmulator):
        raise ModelError(f"{args.model} is not an emulator file; calibrate-stars stores the "
                         "calibration in an emulator (`photosphere grid emulator train`)")
    stars_dir = Path(args.stars_dir) if args.stars_dir else default_stars_dir()
    stars = select(read_stars(stars_dir / "labels.csv"), args.stars, None, None)
    tied = tuple(args.tie or ())
    held = tuple(k for k in (args.hold or ()) if k not in tied)
    if tied or held:
        from ..grids.tied_labels import TiedLabels

        model = TiedLabels(model, tied + held)
    chosen = [s for s in stars if s.tier(s.resolution) in CALIBRATION_TIERS
              and all(model.bounds[k][0] <= s.reference[k][0] <= model.bounds[k][1]
                      for k in ("teff", "logg") if k in model.bounds)]

    from tqdm.auto import tqdm

    bar = tqdm(chosen, desc="calibrating line data", unit="star", disable=args.json)

    resolutions: dict[str, float] = {}

    def jobs():
        for s in bar:
            spectrum = prepare_spectrum(str(s.path))
            resolutions[s.star], _ = resolution_of(spectrum, s)
            yield (s.star, spectrum, {k: v[0] for k, v in s.reference.items()},
                   {"resolution": resolutions[s.star]})

    def say(message: str) -> None:
        if not args.json:
            tqdm.write(message, file=sys.stderr)

    calibration = calibrate_lines(model, jobs(), progress=say, tied=tied, held=held)
    write_calibration(args.model, calibration)
    if not args.no_zero_point:
        calibration = _measure_zero_point(args, calibration, chosen, resolutions)
        write_calibration(args.model, calibration)
    summary = {**calibration.summary(), "model": str(args.model)}
    emit(args, summary, f"calibrated {args.model} on {len(calibration.stars)} stars: "
                        f"{summary['changed_fraction']:.1%} of {summary['n_pixels']} px changed "
                        f"(log10 c 5-95 %: {summary['log10_exponent_p5_p95'][0]:+.2f} to "
                        f"{summary['log10_exponent_p5_p95'][1]:+.2f}), "
                        f"{summary['masked_fraction']:.1%} masked; [Fe/H] zero point "
                        f"{summary['feh_zero_point']:+.3f} dex")
    return 0


def _measure_zero_point(args: argparse.Namespace, calibration, stars,
                        resolutions: dict[str, float]):
    """The calibration with its stars' [Fe/H] offsets (``infer.line_calibration.
    measure_offsets``), journalled beside the model file so that a killed run resumes;
    ``resolutions``: each star's R as its calibration fit used it."""
    import hashlib
    from pathlib import Path

    from tqdm.auto import tqdm

    from .._files import atomic_path
    from ..infer.line_calibration import measure_offsets, offset_pairs

    by_name = {s.star: s for s in stars}
    jobs = [(str(by_name[name].path), by_name[name].reference["feh"][0],
             {"resolution": resolutions[name]}) for name in calibration.star_names]
    key = hashlib.sha256(json.dumps([list(calibration.star_names), jobs], default=str).encode()
                         + calibration.exponent.tobytes()).hexdigest()
    journal_path = Path(str(args.model) + ".offsets.json")
    done = {}
    if journal_path.is_file():
        try:
            saved = json.loads(journal_path.read_text())
            done = saved["done"] if saved.get("key") == key else {}
        except (ValueError, KeyError, TypeError):
            done = {}
    total = len(offset_pairs(calibration.star_names))
    bar = tqdm(total=total, initial=len(done), desc="[Fe/H] zero point", unit="fit",
               disable=args.json)

    def journal(found: dict) -> None:
        with atomic_path(journal_path, suffix=".json.tmp") as tmp:
            tmp.write_text(json.dumps({"key": key, "done": found}))

    def progress(finished: int, _total: int) -> None:
        bar.update(finished - bar.n)

    offsets = measure_offsets(str(args.model), calibration, jobs, workers=args.workers,
                              journal=journal, done=done, progress=progress)
    bar.close()
    journal_path.unlink(missing_ok=True)
    return calibration.with_offsets(offsets)


def _register_grid_calibrate_stars(gsub: argparse._SubParsersAction) -> None:
    p = gsub.add_parser("calibrate-stars", help="line strengths and a line mask of an emulator, "
                        "calibrated on the real stars with reference labels (docs/grids.md)")
    p.add_argument("model", metavar="EMULATOR.h5", help="emulator file; the calibration is "
                                                         "written into it (atomically)")
    p.add_argument("stars_dir", nargs="?", metavar="STARS_DIR",
                   help="folder with labels.csv (default: the benchmark's stars)")
    p.add_argument("--stars", nargs="+", metavar="NAME",
                   help="only stars whose name or file contains one of these")
    p.add_argument("--tie", nargs="+", metavar="LABEL", choices=("alpha", "vmic"),
                   help="labels tied to the others by relations in the calibration fits and in "
                        "every fit with the calibrated model: alpha ([α/Fe] from [Fe/H]), vmic "
                        "(from Teff, log g); default: all labels free")
    p.add_argument("--hold", nargs="+", metavar="LABEL", choices=("alpha", "vmic"),
                   help="labels tied by the same relations in the calibration fits only, free "
                        "in fits with the calibrated model: the stars' fits cannot then trade a "
                        "line-strength error for a vmic or [α/Fe] off its relation")
    p.add_argument("--no-zero-point", action="store_true",
                   help="do not measure the [Fe/H] zero point (free fits of every star without "
                        "itself and each other star: ~130 fits of ~10 s; docs/grids.md)")
    p.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1),
                   help="processes for the zero point's fits (default: 2, or 1 on one core)")
    _add_json(p)
    p.set_defaults(func=_cmd_calibrate_stars)


GRID_REGISTRARS.append(_register_grid_calibrate_stars)
