"""The engines the benchmark runs on a star, each with only what a user knows: the file and the
instrument's resolving power.

An engine is a callable ``engine(star) -> Estimate`` with a ``name``; it loads its model once, on
its first star. ``fit`` is ``photosphere fit FILE --resolution R`` (least squares with the
command's defaults); ``nn`` is ``photosphere nn predict FILE`` with the default network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..datasets.reference_stars import LABELS, Star, resolution_of
from ..errors import BenchmarkError
from ..infer.validity import grid_nodes, pinned_labels

CHI2_HIGH = 5.0
"""χ²_red above which a fit is flagged ``chi2_high`` (the model does not describe the data)."""

BOUND_TOLERANCE = 1e-3
"""A label within this fraction of its box width of a bound is flagged ``at_bound``."""


@dataclass
class Estimate:
    """What an engine found for one star.

    labels: ``{label: (value, sigma)}`` in K / dex for teff, logg, feh (sigma NaN when absent).
    resolution: the R used, and where it came from (``"header"`` or ``"table"``).
    chi2_reduced: of the fit (None for engines without one). flags: short tokens (see
    :func:`label_flags`, :func:`reference_flags`; ``not_converged``, ``chi2_high``,
    ``out_of_distribution``). note: a short remark for the table's message column (nn: the
    grid-consistency mismatch).
    """

    labels: dict[str, tuple[float, float]]
    resolution: float
    resolution_source: str
    chi2_reduced: float | None = None
    flags: list[str] = field(default_factory=list)
    note: str = ""


def label_flags(labels: dict[str, tuple[float, float]],
                bounds: dict[str, tuple[float, float]] | None = None,
                nodes: dict[str, np.ndarray] | None = None) -> list[str]:
    """``at_bound=NAMES`` for labels within :data:`BOUND_TOLERANCE` of the box width of a bound,
    ``at_node=NAMES`` for labels on a grid node with σ far below the node spacing
    (:func:`photosphere.infer.validity.pinned_labels`), i.e. pinned, not measured.

    bounds: ``{label: (lo, hi)}``; nodes: ``{label: sorted node values}``.
    """
    at_bound, at_node = [], []
    for name, (value, sigma) in labels.items():
        if bounds and name in bounds:
            lo, hi = bounds[name]
            if min(value - lo, hi - value) <= BOUND_TOLERANCE * (hi - lo):
                at_bound.append(name)
                continue
        if nodes and pinned_labels({name: (value, sigma)}, nodes):
            at_node.append(name)
    out = []
    if at_bound:
        out.append("at_bound=" + ",".join(at_bound))
    if at_node:
        out.append("at_node=" + ",".join(at_node))
    return out


def reference_flags(star: Star, bounds: dict[str, tuple[float, float]]) -> list[str]:
    """``ref_outside=NAMES``: the reference labels the engine's box does not cover (the star is
    outside the model there; an answer at the bound is then expected, not a failure to fix in
    the fit)."""
    names = [n for n, (value, _) in star.reference.items()
             if n in bounds and not bounds[n][0] <= value <= bounds[n][1]]
    return ["ref_outside=" + ",".join(names)] if names else []


def _labels(found: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    return {n: (float(found[n][0]), float(found[n][1])) if n in found else (math.nan, math.nan)
            for n in LABELS}


class FitEngine:
    """``photosphere fit FILE --resolution R`` in process: the file read and given σ as the
    command does (:func:`~photosphere.infer.batch.prepare_spectrum`), the model the command
    would use for it, then :func:`~photosphere.infer.optimize.fit` with the command's defaults
    (the protocol for real spectra, :mod:`photosphere.infer.protocol`)."""

    name = "fit"

    def __init__(self, model: str | None = None, **options: Any) -> None:
        """model: a model file or name for :func:`photosphere.load_model` (None: the command's
        default, chosen per star by :func:`~photosphere.grids.default_model.choose_model`, and
        noted in the star's flags as ``model=NAME``); options: keyword arguments of the fit
        overriding the command's protocol (:func:`~photosphere.infer.protocol.merge_defaults`),
        to compare protocols."""
        self._models: dict[str | None, Any] = {}
        self.model_name = model
        self.options = options

    def model(self, name: str | None = None):
        """The model ``name`` (None: the one given at construction), loaded once."""
        name = self.model_name if name is None else name
        if name not in self._models:
            from ..api import load_model

            self._models[name] = load_model(name)
        return self._models[name]

    def load(self) -> None:
        """Load the model now (the benchmark does it before timing the first star); with no
        model given, the optical one when installed (most stars get it), else the grid."""
        from ..grids.default_model import EMBEDDED, OPTICAL, optical_model_path

        if self.model_name is None:
            self.model(OPTICAL if optical_model_path() is not None else EMBEDDED)
        else:
            self.model()

    def nodes(self, model=None) -> dict[str, np.ndarray]:
        """``{label: grid node values}`` of ``model``'s grid (default: the given model's; empty
        when it has no axes)."""
        return grid_nodes(self.model() if model is None else model)

    def __call__(self, star: Star) -> Estimate:
        from ..infer.batch import prepare_spectrum
        from ..infer.optimize import fit
        from ..infer.protocol import merge_defaults

        spectrum = prepare_spectrum(str(star.path))
        resolution, source = resolution_of(spectrum, star)
        flags: list[str] = []
        if self.model_name is None:
            from ..grids.default_model import choose_model

            choice = choose_model(spectrum)
            model = self.model(choice.name)
            flags.append(f"model={choice.name}")
        else:
            from ..grids.default_model import given_model, with_coverage

            choice = with_coverage(given_model(self.model_name), spectrum)
            model = self.model()
        if choice.partial_coverage:
            flags.append(f"partial_coverage={choice.covered}/{choice.n_windows}")
        full = model
        if hasattr(model, "without"):  # a model calibrated on real stars: judge leave-one-out
            model = model.without(star.star)
        options = merge_defaults({**self.options, "resolution": resolution})
        result = fit(model, spectrum, source=str(star.path), **options)
        labels = _labels(result.labels)
        flags = label_flags(labels, dict(model.bounds), self.nodes(full)) + flags
        flags += reference_flags(star, dict(model.bounds))
        if not result.converged:
            flags.append("not_converged")
        # the misfit jitter brings χ²_red to 1: judge the model by the χ²_red before it
        chi2 = float(result.flags.get("chi2_reduced_before_jitter", result.chi2_reduced))
        if not chi2 <= CHI2_HIGH:
            flags.append("chi2_high")
        return Estimate(labels, resolution, source, chi2, flags)


class NNEngine:
    """``photosphere nn predict FILE`` in process: the default network (or ``model``), the file
    read as the command reads it (:func:`~photosphere.nn.predict.read_for_prediction`), with its
    grid consistency check (flag ``out_of_distribution``). A network trained on an emulator
    (bare or calibrated) reads each star through the input calibration of that emulator's line
    calibration made *without* the star (:mod:`photosphere.nn.input_calibration`):
    leave-one-out."""

    name = "nn"

    def __init__(self, model: str | None = None) -> None:
        self.model_name = model
        self._checkpoint: Any = None
        self._calibration: Any = None

    def checkpoint(self):
        if self._checkpoint is None:
            from ..nn.predict import load_model

            self._checkpoint = load_model(self.model_name)
        return self._checkpoint

    def load(self) -> None:
        """Load the network now (the benchmark does it before timing the first star)."""
        self.checkpoint()

    def input_calibration(self, star: Star):
        """The input calibration for ``star`` (None when the network needs none): the one
        ``nn predict`` would apply, made without ``star``."""
        from ..nn.predict import line_calibration_of

        ck = self.checkpoint()
        if self._calibration is None:
            self._calibration = line_calibration_of(ck) or False
        if not self._calibration:
            return None
        from ..nn.predict import model_grid, model_input_calibration

        return model_input_calibration(ck, self._calibration.without(star.star), model_grid(ck))

    def __call__(self, star: Star) -> Estimate:
        from ..nn.predict import predict_spectrum, read_for_prediction

        spectrum = read_for_prediction(star.path)
        resolution, source = resolution_of(spectrum, star)
        ck = self.checkpoint()
        from ..nn.rv import estimate_rv

        # as `nn predict` does by default (--rv auto): the network reads rest-frame spectra
        # σ_sys measured on real stars: the floor made without this star when it was one
        record = ck.data.get("real_star_calibration") or {}
        floor = (record.get("loo_floor") or {}).get(star.star, "auto")
        by_snr = ck.data.get("systematic_floor_snr") or None
        if by_snr and star.star in by_snr.get("loo_floor", {}):
            by_snr = {**by_snr, "floor": by_snr["loo_floor"][star.star]}
        result = predict_spectrum(spectrum, ck, rv=estimate_rv(spectrum, resolution),
                                  input_calibration=self.input_calibration(star),
                                  systematic_floor=floor, systematic_floor_snr=by_snr,
                                  resolution=resolution)
        labels = _labels(result.labels)
        box = {n: (float(lo), float(hi)) for n, (lo, hi) in (ck.data.get("bounds") or {}).items()}
        flags = label_flags(labels, box) + reference_flags(star, box)
        check = result.provenance.get("consistency") or {}
        if check.get("out_of_distribution"):
            flags.append("out_of_distribution")
        if result.provenance.get("windows_used") and len(result.provenance["windows_used"]) < 7:
            flags.append(f"windows={len(result.provenance['windows_used'])}")
        note = (f"mismatch {check['mismatch_rms']:.4f}"
                if check.get("mismatch_rms") is not None else "")
        return Estimate(labels, resolution, source, None, flags, note)


ENGINES = {"fit": FitEngine, "nn": NNEngine}


def make_engines(name: str, model: str | None = None, nn_model: str | None = None) -> list:
    """The engines for ``--engine``: ``fit``, ``nn`` or ``all`` (both, fit first); ``model``
    the fit engine's model file or name (None: per star, what ``photosphere fit FILE`` uses;
    ``"grid"``: the embedded grid); ``nn_model`` the network (None: the default)."""
    if name not in (*ENGINES, "all"):
        raise BenchmarkError(f"engine {name!r} is not known; use one of "
                             f"{', '.join([*ENGINES, 'all'])}")
    names = list(ENGINES) if name == "all" else [name]
    return [FitEngine(model) if n == "fit" else NNEngine(nn_model) for n in names]
