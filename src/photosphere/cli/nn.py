"""``photosphere nn train | eval | calibrate | predict``: neural label estimators.

One parser function per sub-command (``_add_*``); each ``run_*`` does the work and returns
(payload, text): the JSON document and the human-readable report, of which :func:`_cmd_nn`
prints one (and its warnings: a flagged prediction exits 3). The work itself lives in
:mod:`photosphere.nn`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..infer.validity import print_warnings
from ..nn.data import LABELS, STUDY_BOUNDS, DataConfig, StoredLayout
from ._checks import EXIT_FLAGGED
from ._common import _add_json, emit

#: Most MC-dropout passes per spectrum: σ converges in tens; thousands only cost time and memory.
MAX_MC_SAMPLES = 1000



def _rv_option(text: str) -> float | str:
    """``--rv``: 'auto' or a finite velocity in km/s."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not 'auto' or a velocity in km/s")
    return value

def _mc_samples(text: str) -> int:
    """argparse type of --mc-samples: a whole number in 0..MAX_MC_SAMPLES."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_MC_SAMPLES:
        raise argparse.ArgumentTypeError(f"{text} must be in 0..{MAX_MC_SAMPLES} (0: no "
                                         "MC dropout)")
    return value


def _cmd_nn(args: argparse.Namespace) -> int:
    payload, text = args.nn_run(args)
    emit(args, payload, text)
    warnings = payload.get("warnings") or [] if isinstance(payload, dict) else []
    print_warnings(warnings, f"nn {args.nn_command}")
    return EXIT_FLAGGED if warnings and not getattr(args, "allow_flagged", False) else 0


def _register_nn(sub: argparse._SubParsersAction) -> None:
    """Register ``nn`` and its sub-commands on the top-level sub-parser ``sub``."""
    nn = sub.add_parser("nn", help="neural label estimators (ResNet / attention, DAE)")
    nsub = nn.add_subparsers(dest="nn_command", metavar="NN_COMMAND")
    nsub.required = True
    for register in (_add_train, _add_eval, _add_calibrate, _add_calibrate_stars, _add_ensemble,
                     _add_predict):
        register(nsub)
    nn.set_defaults(func=_cmd_nn)


def _add_train(nsub: argparse._SubParsersAction) -> None:
    t = nsub.add_parser("train", help="train a network on échelle images simulated from a grid")
    t.add_argument("--grid", help="HDF5 grid file (photosphere.grids store); default: the "
                                  "embedded grid photosphere/data/grids/default.h5")
    t.add_argument("--preset", choices=("cpu", "full"), default="cpu",
                   help="cpu: reduced protocol in minutes; full: the study's protocol (GPU)")
    t.add_argument("--model", choices=("resnet", "attention", "dae"), default="resnet")
    t.add_argument("--covariance", choices=("diagonal", "full"), default="diagonal")
    t.add_argument("--dae", help="trained DAE checkpoint to put in front of the estimator")
    t.add_argument("--net", metavar="JSON",
                   help='network settings over the preset\'s, e.g. \'{"stem_channels": 16, '
                        '"channels": [16, 16, 32, 32, 64]}\' (fields of ResNetConfig, '
                        'AttentionConfig or DAEConfig)')
    t.add_argument("--out", help="checkpoint file (default nn-MODEL-PRESET.pt)")
    t.add_argument("--resume", action="store_true", help="continue the run stored in --out")
    t.add_argument("--epochs", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--lr-decay-epochs", type=int, help="lr × 0.1 for the last N epochs")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--n-train", type=int)
    t.add_argument("--n-val", type=int)
    t.add_argument("--n-test", type=int)
    t.add_argument("--snr", type=float, nargs="+", metavar="S/N",
                   help="one S/N, or two numbers LO HI drawn log-uniformly per sample")
    t.add_argument("--teff-range", type=float, nargs=2, metavar=("LO", "HI"))
    t.add_argument("--logg-range", type=float, nargs=2, metavar=("LO", "HI"))
    t.add_argument("--feh-range", type=float, nargs=2, metavar=("LO", "HI"))
    t.add_argument("--alpha", action="store_true",
                   help="also estimate [α/Fe] (its box: the source's); with --relations drawn "
                        "from the Galactic trend with scatter, else uniformly")
    t.add_argument("--relations", action="store_true",
                   help="draw [α/Fe] and vmic per star from the Galactic trend and the vmic "
                        "relation with real stars' scatter (grids.tied_labels) instead of "
                        "fixed values")
    t.add_argument("--window-dropout", type=float, metavar="P",
                   help="training only: blank each window of the layout with probability P, so "
                        "the model reads spectra that cover only some windows (0 = off)")
    t.add_argument("--uncalibrated", action="store_true",
                   help="with an emulator (--grid optical): train on its bare syntheses, "
                        "without the line calibration on real stars it holds")
    t.add_argument("--rv-max", type=float, help="RV augmentation ± km/s")
    t.add_argument("--slant", type=float, help="largest slant across an order (fraction)")
    t.add_argument("--unmodelled-lines", type=float, metavar="N",
                   help="training only: random weak absorption lines the grid lacks, up to N "
                        "per order on average (against the synthetic gap; 0 = off)")
    t.add_argument("--curvature", type=float,
                   help="training only: largest bow of each order's continuum (fraction)")
    t.add_argument("--veiling", type=float,
                   help="training only: largest added continuum s, flux (f + s) / (1 + s) "
                        "(every line shallower by the same fraction; 0 = off)")
    t.add_argument("--line-jitter", type=float, metavar="SIGMA",
                   help="training only: per-line random depth factors, log-normal with σ up to "
                        "SIGMA (against line-list errors of the grid; 0 = off)")
    t.add_argument("--resolution", type=float, nargs="+", metavar="R",
                   help="LSF resolving power (default 115000, HARPS-N), or LO HI: drawn "
                        "log-uniformly per star (a model for several instruments)")
    t.add_argument("--macroturbulence", type=float, nargs="+", metavar="ZETA",
                   help="radial-tangential ζ km/s of every star (default 0, the study), or "
                        "LO HI: drawn uniformly per star (a nuisance, not estimated)")
    t.add_argument("--line-strengths", metavar="ECSV",
                   help="train on the grid corrected by empirical line strengths (`photosphere "
                        "grid calibrate-lines`); stored in the checkpoint")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init", metavar="MODEL",
                   help="start from this trained model's weights (checkpoint file or shipped "
                        "name; same network and label box): fine-tuning, e.g. a low-lr tail or "
                        "a narrower --snr")
    t.add_argument("--average-epochs", type=int, metavar="N",
                   help="final weights = average of the weights after each of the last N "
                        "epochs (stochastic weight averaging; batch-norm statistics recomputed)")
    t.add_argument("--layout", help="'harpsn' (the default: the HARPS-N 5050-5350 Å layout), "
                                    "'optical' (the optical model's 7 windows, 26 × 1024 px; "
                                    "nn/layouts.py), or a wavelength file of an instrument (e.g. "
                                    "HARPS-N wave_A)")
    t.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    _cache_arguments(t)
    _add_json(t)
    t.set_defaults(nn_run=run_train)


def _add_eval(nsub: argparse._SubParsersAction) -> None:
    e = nsub.add_parser("eval", help="the study's Tables 2-3 and figures for trained models")
    e.add_argument("models", nargs="+", help="checkpoint files or shipped model names")
    e.add_argument("--grid", help="HDF5 grid file the test spectra come from (default: the "
                                  "embedded grid)")
    e.add_argument("--snr", type=float, nargs="+", default=[20.0, 100.0])
    e.add_argument("--teff-range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="restrict the test stars (the study's S/N 100 rows use 4000 6000)")
    e.add_argument("--n-test", type=int, help="test stars (default: as trained; study 5667)")
    e.add_argument("--split", choices=("test", "val"), default="test",
                   help="stars to evaluate: test (default), or the validation stars, on which "
                        "to choose models, recipes and ensembles without looking at the test "
                        "split (ensemble σ are then calibrated on the same stars)")
    e.add_argument("--mc-samples", type=_mc_samples, default=0,
                   help=f"MC-dropout samples, 0..{MAX_MC_SAMPLES} (0 = off)")
    e.add_argument("--resolution", type=float, nargs="+", metavar="R",
                   help="test stars at this R (or LO HI per star) instead of the training's; "
                        "e.g. 115000 for the study's protocol")
    e.add_argument("--macroturbulence", type=float, nargs="+", metavar="ZETA",
                   help="test stars with this ζ (or LO HI) instead of the training's; 0: none")
    e.add_argument("--ensemble", action="store_true",
                   help="evaluate the models together as one deep ensemble (one row); its σ are "
                        "also calibrated as a whole (one temperature per label fitted on the "
                        "validation stars at each S/N)")
    _temperature_argument(e, "how --ensemble fits its σ temperature")
    e.add_argument("--plots", help="folder for Figs. 3-5 (residuals, σ, attention maps)")
    _cache_arguments(e)
    _add_json(e)
    e.set_defaults(nn_run=run_eval)


def _temperature_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--temperature", choices=("rms", "coverage"), default="rms",
                        help=f"{what}: rms (unit-variance residuals) or coverage (1σ/2σ "
                             "coverage closest to a Gaussian's)")


def _add_calibrate(nsub: argparse._SubParsersAction) -> None:
    c = nsub.add_parser("calibrate", help="undo a trained model's shrinkage of μ towards the "
                                          "middle of the label box (fitted on validation stars)")
    c.add_argument("model", help="checkpoint file or shipped model name")
    c.add_argument("--out", required=True, help="file for the recalibrated model")
    c.add_argument("--snr", type=float, nargs="+", metavar="S/N",
                   help="S/N of the validation images the map and the σ temperature are fitted "
                        "on: one value (e.g. 20 for an S/N-20 model) or LO HI (default: the "
                        "model's training S/N)")
    _temperature_argument(c, "how the σ temperature is refitted")
    c.add_argument("--grid", help="HDF5 grid file (default: the embedded grid)")
    _cache_arguments(c)
    _add_json(c)
    c.set_defaults(nn_run=run_calibrate)


def _add_calibrate_stars(nsub: argparse._SubParsersAction) -> None:
    c = nsub.add_parser("calibrate-stars",
                        help="measure a model's σ_sys and out-of-distribution limit on real "
                             "stars with reference labels and store them in a copy")
    c.add_argument("model", help="checkpoint file or shipped model name")
    c.add_argument("--out", required=True, help="file for the calibrated model")
    c.add_argument("--stars-dir", metavar="DIR",
                   help="folder with labels.csv (default: $PHOTOSPHERE_SHARED_DATA/stars, else "
                        "../shared/data/stars beside the repository)")
    c.add_argument("--snr", type=float, nargs="+", metavar="S",
                   help="also measure σ_sys on the calibration stars degraded with noise to "
                        "each S/N (e.g. 20 50 100); nn predict then uses the floor at the "
                        "input's S/N")
    c.add_argument("--draws", type=int, default=2,
                   help="noise realisations per star and S/N (default 2)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_json(c)
    c.set_defaults(nn_run=run_calibrate_stars)


def _add_ensemble(nsub: argparse._SubParsersAction) -> None:
    c = nsub.add_parser("ensemble",
                        help="store networks trained by one recipe with different seeds as one "
                             "deep-ensemble model file (then calibrate it with calibrate-stars)")
    c.add_argument("models", nargs="+", metavar="MODEL",
                   help="checkpoint files or shipped model names (at least 2)")
    c.add_argument("--out", required=True, help="file for the ensemble")
    c.add_argument("--precision", choices=("float32", "float16"), default="float32",
                   help="how the weights are stored: float16 halves the file (the networks "
                        "still compute in float32; commands that copy the model keep it)")
    _add_json(c)
    c.set_defaults(nn_run=run_ensemble)


def run_ensemble(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    import torch

    from ..nn.checkpoint import save_checkpoint
    from ..nn.ensemble import combine
    from ..nn.predict import load_model

    cks = [load_model(m) for m in args.models]
    model, data = combine(cks)
    # the members' σ temperatures are inside the ensemble; its own multiplier starts at 1
    out = save_checkpoint(args.out, "ensemble", model, label_scaling=cks[0].label_scaling,
                          temperature=torch.ones(model.config.n_labels), data=data,
                          precision=args.precision)
    members = data["ensemble"]
    size = out.stat().st_size
    lines = [f"{len(cks)} networks -> {out} (deep ensemble, {size / 1e6:.2f} MB, weights "
             f"stored in {args.precision}; its σ on real stars are not measured yet: "
             f"photosphere nn calibrate-stars {out} --out CALIBRATED.pt)"]
    lines += [f"  {m['file']}: seed {m['seed']}, validation NLL "
              + (f"{m['val_nll']:.3f}" if m["val_nll"] is not None else "not recorded")
              for m in members]
    return ({"out": str(out), "members": members, "precision": args.precision, "bytes": size},
            "\n".join(lines))


def run_calibrate_stars(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from ..datasets.reference_stars import default_stars_dir, read_stars
    from ..nn.checkpoint import save_checkpoint
    from ..nn.predict import load_model
    from ..nn.real_stars import calibrate, calibration_stars, read_all, snr_floors

    if args.snr and (min(args.snr) <= 0 or args.draws < 1):
        raise ModelError(f"--snr {args.snr} must be positive and --draws {args.draws} at "
                         "least 1")
    ck = load_model(args.model)
    stars_dir = Path(args.stars_dir) if args.stars_dir else default_stars_dir()
    readings, failed = read_all(ck, read_stars(stars_dir / "labels.csv"),
                                progress=not args.no_progress)
    record = calibrate(readings)
    data = {**ck.data, "systematic_floor": record["floor"], "real_star_calibration": record}
    if record["mismatch"]["limit"] is not None:
        data["mismatch_limit"] = record["mismatch"]["limit"]
    data.pop("systematic_floor_snr", None)  # measured again below, or not at all
    if args.snr:
        data["systematic_floor_snr"] = snr_floors(ck, calibration_stars(readings), args.snr,
                                                  args.draws, progress=not args.no_progress)
    training = {k: v for k, v in (ck.training or {}).items() if k not in ("optimizer", "average")}
    out = save_checkpoint(args.out, ck.kind, ck.model, label_scaling=ck.label_scaling,
                          temperature=ck.temperature, data=data, training=training,
                          precision=ck.precision)
    m = record["mismatch"]
    lines = [f"{args.model} -> {out}: {len(readings)} stars read, {len(failed)} not",
             f"  σ_sys on {len(record['stars'])} high-resolution stars inside the box: "
             + ", ".join(f"{k} {v:.3g}" for k, v in record["floor"].items()),
             "  leave-one-out coverage (1σ / 2σ): "
             + ", ".join(f"{k} {100 * a:.0f}/{100 * b:.0f} %"
                         for k, (a, b) in record["loo_coverage"].items()),
             f"  mismatch limit {m['limit']:.4f} (largest inside the box {m['max_inside']:.4f}, "
             f"smallest outside {m['min_outside']}; separable: {m['separable']})"
             if m["limit"] is not None else f"  no mismatch limit: {m['reason']}",
             f"  flagged: {', '.join(record['flagged']) or 'none'}"]
    by_snr = data.get("systematic_floor_snr")
    for i, level in enumerate(by_snr["snr"] if by_snr else []):
        cover = by_snr["loo_coverage"][f"{level:g}"]
        lines.append(f"  S/N {level:g}: σ_sys " + ", ".join(
            f"{k} {v[i]:.3g}" for k, v in by_snr["floor"].items()) + "; leave-one-out "
            "coverage (1σ / 2σ) " + ", ".join(f"{k} {100 * a:.0f}/{100 * b:.0f} %"
                                              for k, (a, b) in cover.items()))
    lines += [f"  not read: {s.star}: {why}" for s, why in failed]
    payload = {"model": str(out), **record, "systematic_floor_snr": by_snr,
               "failed": [{"star": s.star, "reason": why} for s, why in failed]}
    return payload, "\n".join(lines)


def _add_predict(nsub: argparse._SubParsersAction) -> None:
    p = nsub.add_parser("predict", help="labels with uncertainties for a spectrum file")
    p.add_argument("file", help="spectrum file (1D or échelle, any reader of photosphere.io)")
    p.add_argument("--model", action="append",
                   help="checkpoint file, or the name of a shipped model (default, optical, "
                        "plain, resnet6k, resnet6k-s2, resnet6k[-s2|-s3|-s4]-nodrop20; "
                        "default: default, or optical for a spectrum without the default's "
                        "5050-5350 Å); give it several times for an ensemble")
    p.add_argument("--wave", help="wavelength file for an e2ds frame")
    p.add_argument("--blaze", help="blaze file for an e2ds frame (default: the one named in "
                                   "its header, beside it); e2ds frames are deblazed")
    p.add_argument("--medium", choices=("air", "vacuum"),
                   help="air/vacuum frame of the spectrum's wavelengths, for files that do not "
                        "record it (default: air for optical wavelengths, marked as assumed)")
    p.add_argument("--rv", type=_rv_option, default="auto",
                   help="km/s of the star in the file's wavelength frame (removed first); "
                        "'auto' (default): measured by cross-correlation with the embedded "
                        "grid (photosphere.nn.rv)")
    p.add_argument("--mc-samples", type=_mc_samples, default=0,
                   help=f"MC-dropout passes, 0..{MAX_MC_SAMPLES} (default 0: off)")
    p.add_argument("--allow-flagged", action="store_true",
                   help="exit 0 even when the prediction is flagged (labels outside the "
                        "training range, out of distribution); the warnings are still printed")
    p.add_argument("--grid", help="the HDF5 grid the model was trained on, for the consistency "
                                  "check (default: the embedded grid)")
    p.add_argument("--no-grid-check", action="store_true",
                   help="skip comparing the input with the grid at the predicted labels")
    p.add_argument("--no-calibration", action="store_true",
                   help="report the network's raw σ (no temperature scaling)")
    _add_json(p)
    p.set_defaults(nn_run=run_predict)


def _cache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", help="folder for the simulated noise-free images "
                                            "(default: the photosphere cache, nn/images)")
    parser.add_argument("--no-cache", action="store_true",
                        help="simulate the images in memory only; write nothing to disk")


def _cache_dir(args: argparse.Namespace):
    if args.no_cache:
        return None
    if args.cache_dir:
        return Path(args.cache_dir)
    from .._files import cache_dir

    return cache_dir("nn", "images")


def _grid(path: str | None) -> str:
    if path is not None:
        return path
    from ..grids.presets import default_grid_path

    return str(default_grid_path())


def _layout(path: str | None, source):
    from ..nn.layouts import layout_by_name

    if path is None or path in ("harpsn", "optical"):
        return layout_by_name(path or "harpsn", source)
    from ..ops.echelle import OrderLayout

    return OrderLayout.from_wavelength_file(path)


def run_train(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from ..nn.train import preset, source_from_grid, train

    data: dict[str, Any] = {}
    for key in ("n_train", "n_val", "n_test", "rv_max", "slant", "unmodelled_lines", "curvature",
                "veiling", "line_jitter", "window_dropout"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    for key in ("snr", "resolution", "macroturbulence"):
        value = getattr(args, key)
        if value:
            data[key] = _value_or_range(value, key)
    source = source_from_grid(_grid(args.grid), args.line_strengths,
                              calibrated=not args.uncalibrated)
    bounds = dict(STUDY_BOUNDS)
    for name in LABELS[:3]:
        given = getattr(args, f"{name}_range")
        if given:
            bounds[name] = (float(given[0]), float(given[1]))
    for name in LABELS[:3]:  # the study's box (or the given one), clipped to the grid's
        lo, hi = source.bounds[name]
        bounds[name] = (max(bounds[name][0], lo), min(bounds[name][1], hi))
    if args.alpha:
        if "alpha" not in source.label_names:
            raise ModelError(f"--alpha: the source has no [α/Fe] ({source.label_names})")
        bounds["alpha"] = tuple(source.bounds["alpha"])
    data["bounds"] = bounds
    if args.relations:
        data["relations"] = True
    over: dict[str, Any] = {"covariance": args.covariance, "seed": args.seed, "dae": args.dae}
    if args.net:
        over["net"] = _net_overrides(args.net)
    for key in ("epochs", "lr", "lr_decay_epochs", "batch_size", "init", "average_epochs"):
        if getattr(args, key) is not None:
            over[key] = getattr(args, key)
    if "epochs" in over and "lr_decay_epochs" not in over:  # keep the preset's proportion
        base = preset(args.preset, args.model)
        over["lr_decay_epochs"] = round(over["epochs"] * base.lr_decay_epochs / base.epochs)
    config = preset(args.preset, args.model, data=data, **over)
    out = Path(args.out or f"nn-{args.model}-{args.preset}.pt")
    result = train(config, source, out, layout=_layout(args.layout, source), resume=args.resume,
                   device=args.device, cache_dir=_cache_dir(args))
    last = result.history[-1] if result.history else {}
    payload = {"model": str(out), "kind": config.model, "preset": args.preset,
               "epochs": config.epochs, "seconds": result.seconds, "final": last,
               "temperature": result.temperature, "config": config.to_dict()}
    text = (f"trained {config.model} ({args.preset} preset) for {config.epochs} epochs in "
            f"{result.seconds:.0f} s -> {out}\n"
            f"final train loss {last.get('train_loss', float('nan')):.4f}, "
            f"val loss {last.get('val_loss', float('nan')):.4f}"
            + (f"\nσ temperature per label "
               f"{dict(zip(config.data_config().label_names, result.temperature, strict=True))}"
               if result.temperature else ""))
    return payload, text


def _value_or_range(values: list[float], name: str) -> float | tuple[float, float]:
    if len(values) > 2:
        raise ModelError(f"--{name} takes one value or LO HI, got {values}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def _net_overrides(text: str) -> dict[str, Any]:
    import json

    try:
        net = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"--net {text!r} is not JSON ({exc.msg}); give an object such as "
                         '\'{"stem_channels": 16}\'') from None
    if not isinstance(net, dict):
        raise ModelError(f"--net {text!r} must be a JSON object of network settings")
    return net


def _model_name(ck) -> str:
    from ..nn.dae import DenoisedEstimator

    if ck.kind == "ensemble":
        return f"Deep ensemble of {ck.model.config.n_members} {ck.model.config.member_kind}s"
    base = {"resnet": "Residual-network", "attention": "Attention-network"}[ck.kind]
    return ("DAE " if isinstance(ck.model, DenoisedEstimator) else "") + base


def _ensemble_layout(cks, paths) -> StoredLayout:
    """The order layout the models share (an ensemble must share layout and grid)."""
    from ..nn.predict import line_strength_digest

    layout = StoredLayout.of(cks[0])
    for other, path in zip(cks[1:], paths[1:], strict=True):
        if not np.array_equal(np.asarray(other.data["layout_wavelength"]), layout.wavelength):
            raise ModelError(f"--ensemble: {path} was trained on another order layout than "
                             f"{paths[0]}; combine only models of the same layout")
    if len({line_strength_digest(c) for c in cks}) > 1:
        raise ModelError("--ensemble: the models were trained on differently corrected grids "
                         "(line strengths); combine only models of the same grid")
    return layout


def _eval_config(ck, args: argparse.Namespace, snr: float) -> tuple[DataConfig, str]:
    """The test stars' data configuration at ``snr``, and the row's suffix."""
    data = DataConfig.from_dict(ck.data).to_dict()
    data["snr"] = snr
    for key in ("resolution", "macroturbulence"):
        if getattr(args, key):
            data[key] = _value_or_range(getattr(args, key), key)
    if args.n_test:
        data["n_test"] = args.n_test
    suffix = ""
    if args.teff_range:
        data["bounds"]["teff"] = list(args.teff_range)
        suffix = f" (Teff {args.teff_range[0]:g}-{args.teff_range[1]:g})"
    if args.split != "test":
        suffix += f" [{args.split} split]"
    return DataConfig.from_dict(data), suffix


def _eval_sigmas(cks, splits, raw, args: argparse.Namespace, row_name: str) -> dict[str, Any]:
    """The σ variants beyond the raw one: calibrated, ensemble-calibrated, MC-dropout (None where
    they do not apply), and their Table 3 rows."""
    from ..nn.evaluate import fit_temperature, predict_split_ensemble
    from ..nn.predict import network_members

    test = splits[args.split]
    rows = []
    calibrated = network_members(cks)
    cal = ens = mc = None
    if all(c.temperature is not None for c in cks):
        cal = predict_split_ensemble(calibrated, test)
        rows.append((f"{row_name} calibrated σ", cal))
    if len(cks) > 1:  # one σ temperature for the mixture, fitted on validation stars
        temperature = fit_temperature(predict_split_ensemble(
            network_members(cks, calibrated=False), splits["val"]).residual_z, args.temperature)
        ens = raw.scaled(temperature)
        rows.append((f"{row_name} ensemble-calibrated σ", ens))
    if args.mc_samples:
        mc = predict_split_ensemble(calibrated, test, mc_samples=args.mc_samples)
        rows.append((f"{row_name} calibrated+MC σ", mc))
    return {"calibrated": cal, "ensemble": ens, "mc": mc,
            "table3": [{"model": name, "coverage1": pred.coverage(1),
                        "coverage2": pred.coverage(2)} for name, pred in rows]}


def _coverages(pred) -> list[float] | None:
    return None if pred is None else [pred.coverage(1), pred.coverage(2)]


def run_eval(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from ..nn.data import build_datasets
    from ..nn.evaluate import format_table2, format_table3, predict_split_ensemble
    from ..nn.predict import load_model, network_members
    from ..nn.train import source_from_grid

    grid = _grid(args.grid)
    table2, table3, runs = [], [], []
    groups = [list(args.models)] if args.ensemble else [[p] for p in args.models]
    for paths in groups:
        cks = [load_model(p) for p in paths]
        ck = cks[0]
        layout = _ensemble_layout(cks, paths)
        source = source_from_grid(grid, ck.data.get("line_strengths"))
        if len(cks) == 1:
            name, stem = _model_name(ck), Path(paths[0]).stem
        else:
            name = f"Ensemble of {len(cks)} ({', '.join(_model_name(c) for c in cks)})"
            stem = f"ensemble-{Path(paths[0]).stem}"
        covariance = "/".join(sorted({c.model.config.covariance for c in cks}))
        label = f"[{', '.join(Path(c.path).name for c in cks)}]"
        for snr in args.snr:
            config, suffix = _eval_config(ck, args, snr)
            splits = build_datasets(source, config, layout, cache_dir=_cache_dir(args))
            test = splits[args.split]
            raw = predict_split_ensemble(network_members(cks, calibrated=False), test,
                                         progress=True)
            row = {"model": f"{name}{suffix} {label}", "snr": snr, "covariance": covariance,
                   "mae": raw.mae()}
            table2.append(row)
            table3.append({"model": f"{row['model']} S/N {snr:g} raw σ",
                           "coverage1": raw.coverage(1), "coverage2": raw.coverage(2)})
            sig = _eval_sigmas(cks, splits, raw, args, f"{row['model']} S/N {snr:g}")
            table3.extend(sig["table3"])
            runs.append({"model": paths[0] if len(paths) == 1 else paths, "snr": snr,
                         "split": args.split, "n_test": len(test), "mae": raw.mae(),
                         "coverage_raw": _coverages(raw),
                         "coverage_calibrated": _coverages(sig["calibrated"]),
                         "coverage_ensemble_calibrated": _coverages(sig["ensemble"]),
                         "coverage_mc": _coverages(sig["mc"])})
            if args.plots:
                _plots(Path(args.plots), stem, snr, ck if len(cks) == 1 else None,
                       sig["ensemble"] or sig["calibrated"] or raw, test)
    text = format_table2(table2) + "\n\n" + format_table3(table3)
    return {"runs": runs}, text


def run_calibrate(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from ..nn.checkpoint import _weights_digest, save_checkpoint
    from ..nn.data import build_datasets
    from ..nn.predict import load_model
    from ..nn.recalibrate import recalibrate
    from ..nn.train import source_from_grid

    ck = load_model(args.model)
    data = DataConfig.from_dict(ck.data).to_dict()
    if args.snr:
        data["snr"] = _value_or_range(args.snr, "snr")
    layout = StoredLayout.of(ck)
    source = source_from_grid(_grid(args.grid), ck.data.get("line_strengths"))
    val = build_datasets(source, DataConfig.from_dict(data), layout,
                         cache_dir=_cache_dir(args))["val"]
    rec = recalibrate(ck.model, ck.label_scaling, val, temperature_method=args.temperature)
    record = {"from": str(args.model), "from_sha256": _weights_digest(ck.model.state_dict()),
              "snr": data["snr"], "n_val": len(val), "temperature_method": args.temperature,
              **rec.mean_map.to_dict()}
    training = {k: v for k, v in (ck.training or {}).items() if k not in ("optimizer", "average")}
    training["recalibration"] = record
    out = save_checkpoint(args.out, ck.kind, rec.model, label_scaling=ck.label_scaling,
                          temperature=rec.temperature, data=ck.data, training=training,
                          precision=ck.precision)
    mae_before, mae_after = rec.before.mae(), rec.after.mae()
    payload = {"model": str(out), "mean_map": rec.mean_map.to_dict(),
               "temperature": rec.temperature.tolist(), "snr": data["snr"], "n_val": len(val),
               "val_mae_before": mae_before, "val_mae_after": mae_after,
               "val_coverage_after": [rec.after.coverage(1), rec.after.coverage(2)]}
    lines = [f"{args.model} -> {out}: mean map and σ temperature fitted on {len(val)} validation "
             f"stars at S/N {data['snr']}",
             f"{'label':6s} {'slope':>7s} {'intercept':>10s} {'T':>6s} {'val MAE before':>15s} "
             f"{'after':>10s}"]
    for i, name in enumerate(LABELS):
        lines.append(f"{name:6s} {rec.mean_map.slope[i]:7.4f} {rec.mean_map.intercept[i]:10.4f} "
                     f"{rec.temperature[i]:6.3f} {mae_before[name]:15.4g} {mae_after[name]:10.4g}")
    return payload, "\n".join(lines)


def _plots(folder: Path, stem: str, snr: float, ck, pred, test) -> None:
    import torch

    from ..nn.evaluate import plot_attention, plot_residuals, plot_sigma

    plot_residuals(pred, folder / f"{stem}_snr{snr:g}_residuals.png")
    plot_sigma(pred, folder / f"{stem}_snr{snr:g}_sigma.png")
    if ck is not None and ck.kind == "attention":
        sun = np.array([5750.0, 4.44, 0.0, 2.0])
        width = np.array([STUDY_BOUNDS[n][1] - STUDY_BOUNDS[n][0] for n in LABELS])
        i = int(np.argmin(np.abs((test.labels.numpy() - sun) / width).sum(1)))
        batch = test.batch(torch.tensor([i]))
        maps = ck.model.attention_maps(batch.images)[0].numpy()
        t = batch.labels[0].tolist()
        plot_attention(batch.images[0, 0].numpy(), maps, test.simulator.layout_wavelength.numpy(),
                       folder / f"{stem}_snr{snr:g}_attention.png",
                       title=f"Attention maps, test star Teff {t[0]:.0f} K, log g {t[1]:.2f}, "
                             f"Z {t[2]:.2f}, vsini {t[3]:.1f} km/s, S/N {snr:g}")


def _ood_reasons(check: dict[str, Any]) -> list[str]:
    """Why ``nn predict``'s check says out of distribution (the grid mismatch, a label at the
    training box's edge, the spectrum's R); empty when it does not."""
    reasons = []
    if check.get("checked") and check["mismatch_rms"] > check["mismatch_limit"]:
        reasons.append(f"mismatch with the grid {check['mismatch_rms']:.3f} rms of the "
                       f"continuum (limit {check['mismatch_limit']:g})")
    if check.get("at_box_edge"):
        reasons.append(f"{', '.join(check['at_box_edge'])} at the edge of the training box")
    given_r = check.get("resolution") or {}
    if given_r.get("outside"):
        lo, hi = given_r["trained"]
        reasons.append(f"the spectrum's R {given_r['input']:.0f} is outside the R "
                       f"{lo:.0f}-{hi:.0f} the network was trained on")
    return reasons


def run_predict(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from ..errors import CoverageError
    from ..infer.validity import MIN_SNR, check_spectrum, label_warnings
    from ..nn.predict import load_model, predict_spectrum, read_for_prediction, shipped_models

    cks = [load_model(m) for m in (args.model or [None])]  # clear error first if no model
    spectrum = read_for_prediction(args.file, wave=args.wave, blaze=args.blaze,
                                   medium=args.medium)
    trained = np.atleast_1d(np.asarray(cks[0].data.get("snr") or MIN_SNR, dtype=float))
    check_spectrum(spectrum, args.file, min_snr=max(MIN_SNR, 0.25 * float(trained.min())))
    rv = args.rv
    if rv == "auto":
        from ..nn.rv import estimate_rv

        rv = estimate_rv(spectrum)
    def read(models):
        return predict_spectrum(spectrum, models, rv=rv, mc_samples=args.mc_samples,
                                calibrated=not args.no_calibration,
                                check_grid=not args.no_grid_check, grid=args.grid)

    choice = None
    try:
        result = read(cks)
    except CoverageError as exc:  # no --model: the optical network reads what the default can't
        if args.model or args.grid or "optical" not in shipped_models():
            raise
        cks = [load_model("optical")]
        result = read(cks)
        choice = (f"the default network cannot read this spectrum ({exc}); read by the shipped "
                  "optical model (7 windows, Hβ to Hα)")
    scaling = cks[0].label_scaling
    box = {n: (float(o - s), float(o + s)) for n, o, s in
           zip(scaling.names, scaling.offset, scaling.scale, strict=True)}
    warnings = label_warnings(result.labels, box)
    check = result.provenance["consistency"]
    reasons = _ood_reasons(check or {})
    warnings += [f"out of distribution: {why}" for why in reasons]
    payload = {"file": args.file, **result.to_dict(), "warnings": warnings,
               "model_choice": choice}
    units = {"teff": "K", "logg": "dex", "feh": "dex", "vsini": "km/s"}
    lines = [f"{args.file}  (model {', '.join(str(c.path) for c in cks)})"]
    if choice:
        lines.append(f"  {choice}")
    for name, (value, sigma) in result.labels.items():
        lines.append(f"  {name:6s} = {value:10.3f} ± {sigma:.3f} {units.get(name, '')}")
    lines.append(f"  filled layout pixels: {result.provenance['filled_fraction']:.1%}")
    if check and check["checked"]:
        verdict = (f"OUT OF DISTRIBUTION ({'; '.join(reasons)}): do not trust these labels or "
                   "their σ"
                   if check["out_of_distribution"] else "inside what the model was trained on")
        lines.append(f"  grid consistency: mismatch {check['mismatch_rms']:.3f} rms of the "
                     f"continuum (limit {check['mismatch_limit']:g}; noise "
                     f"{check['noise_rms']:.3f}): {verdict}")
    elif check:
        lines.append(f"  grid consistency not checked: {check['reason']}")
    note = result.provenance["line_strengths"]
    if note:
        star = ", ".join(f"{k} {v:g}" for k, v in (note["reference_labels"] or {}).items())
        lines.append(f"  grid line strengths calibrated on {note['observed'] or 'a reference'}"
                     f" ({star}): that star is in-sample for this model")
    return payload, "\n".join(lines)
