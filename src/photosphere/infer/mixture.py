"""The easy calls: build a two-component model, fit it, simulate it.

:func:`fit_mixture` runs a single-star fit first (it seeds the two-component starts and is the
reference of :func:`~.selection.compare_models`), then the two-component least squares and,
optionally, MCMC, all through the general fitter (:func:`photosphere.infer.fit` /
:func:`photosphere.infer.sample`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import FitError, ModelError
from ..models.mixture.model import BinaryModel, SpotModel
from ..result import Result
from ..spectrum import EchelleSpectrum, Spectrum
from .chain import DTYPE, ObservationChain
from .epochs import EpochChain
from .likelihood import Likelihood
from .optimize import build_chain, fit
from .settings import ObservationSettings

MODES = ("spots", "binary")


def make_model(mode: str, grid, *, ratio: str = "absolute", flux_ratio: str = "radii",
               n_epochs: int = 1, share: tuple[str, ...] = (), veiling: bool = False
               ) -> SpotModel | BinaryModel:
    """``"spots"`` -> :class:`SpotModel`, ``"binary"`` -> :class:`BinaryModel` on ``grid``."""
    if mode == "spots":
        return SpotModel(grid, ratio=ratio, veiling=veiling)
    if mode == "binary":
        return BinaryModel(grid, ratio=ratio, flux_ratio=flux_ratio, n_epochs=n_epochs,
                           share=share, veiling=veiling)
    raise ModelError(f"mixture mode {mode!r} is unknown; choose one of {MODES}")


def check_distinct(model: SpotModel | BinaryModel, values: Mapping[str, float]) -> None:
    """Raise ModelError when ``values`` make the two components identical (their mixture is
    then one star and the mixing parameters are meaningless)."""
    if isinstance(model, SpotModel):
        if "teff" in values and "teff_spot" in values and \
                float(values["teff_spot"]) >= float(values["teff"]):
            raise ModelError(f"teff_spot={values['teff_spot']:g} K is not below "
                             f"teff={values['teff']:g} K: the spots would be identical to (or "
                             "hotter than) the photosphere; give teff_spot < teff")
        return
    pairs = [(f"{n}_a", f"{n}_b") for n in model.grid.label_names if n not in model.share]
    pairs.append(("vsini_a", "vsini_b"))
    if not all(a in values and b in values for a, b in pairs):
        return
    same = all(float(values[a]) == float(values[b]) for a, b in pairs)
    still = all(float(values.get(n, 1.0)) == 0.0 for n in model.rv_names)
    if same and still:
        raise ModelError("the two stars have identical labels and delta_rv = 0: the binary is "
                         "indistinguishable from one star; change one component's labels or "
                         "give a non-zero delta_rv, or fit a single star")


def _exposures(observation) -> list[Spectrum | EchelleSpectrum]:
    if isinstance(observation, Spectrum | EchelleSpectrum):
        return [observation]
    return list(observation)


def simulate(model, truth: Mapping[str, float], wavelength, *, resolution=None,
             snr: float = 100.0, seed: int = 0, medium: str = "air"):
    """Noisy synthetic exposures of ``model`` at ``truth`` through the observation chain.

    wavelength: ``(n_pix,)`` Å for one exposure, or a list of them (one per epoch of a
    multi-epoch binary). truth: every chain parameter (``rv`` or ``rv_e``; ``vsini`` for spots).
    σ = mean flux / snr. Returns a Spectrum, or a list of Spectra for several exposures.
    """
    waves = [np.asarray(wavelength, float)] if np.ndim(wavelength[0]) == 0 else \
        [np.asarray(w, float) for w in wavelength]
    dummies = [Spectrum(w, np.ones_like(w), np.ones_like(w), medium=medium) for w in waves]
    rvs = [float(truth.get(f"rv_{e}", truth.get("rv", 0.0))) for e in range(len(waves))]
    kw = dict(resolution=resolution, continuum_degree=None,
              rv_bounds=(min(rvs) - 1.0, max(rvs) + 1.0))
    if isinstance(model, BinaryModel):
        chain = (EpochChain(model, dummies, **kw) if model.n_epochs > 1
                 else ObservationChain(model, dummies[0], rotation=False, **kw))
    else:
        chain = ObservationChain(model, dummies if len(dummies) > 1 else dummies[0],
                                 rotation="vsini" in truth,
                                 vsini_bounds=(0.0, float(truth.get("vsini", 0.0)) + 1.0), **kw)
    if chain.n_pixels != sum(w.size for w in waves):
        raise FitError("simulate: the wavelengths reach beyond what the model can predict; "
                       "keep a margin of a few Å inside the grid's range")
    with torch.no_grad():
        flux, _ = chain.predict(torch.as_tensor(chain.theta_from(truth), dtype=DTYPE))
    rng = np.random.default_rng(seed)
    out = []
    for w, f in zip(waves, flux, strict=True):
        clean = f.numpy()
        sigma = np.full_like(clean, np.abs(clean).mean() / snr)
        out.append(Spectrum(w, clean + rng.normal(0.0, 1.0, clean.shape) * sigma, sigma,
                            medium=medium))
    return out[0] if len(out) == 1 else out


@dataclass(frozen=True)
class MixtureFit:
    """Outcome of :func:`fit_mixture`: the two-component ``result`` (least squares, or MCMC when
    asked), the ``single`` star fit, the ``model``, and the parameter boxes of both fits
    (``bounds``, ``single_bounds``: ``{name: (low, high)}``, physical units)."""

    result: Result
    single: Result
    model: SpotModel | BinaryModel
    bounds: dict[str, tuple[float, float]]
    single_bounds: dict[str, tuple[float, float]]

    def compare(self):
        """:class:`~.selection.ModelComparison` of the single-star and two-component fits."""
        from .selection import compare_models

        return compare_models(self.single, self.result, self.single_bounds, self.bounds)

    def derived(self, n: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
        """Draws of the light fraction (and rv_b for a binary); see :func:`.selection.derived`."""
        from .selection import derived

        return derived(self.model, self.result, self.bounds, n, seed)

    def corner(self, path=None, truths: Mapping[str, float] | None = None, names=None):
        """Corner plot with the derived light fraction; see :func:`.selection.corner_plot`."""
        from .selection import corner_plot

        return corner_plot(self.model, self.result, self.bounds, path, truths, names)

    def to_result(self) -> Result:
        """The two-component fit as one :class:`~photosphere.result.Result`, with the single-star
        labels (``flags["single_star"]``) and the comparison (``flags["comparison"]``: Δχ², ΔBIC,
        Laplace evidence ratio) beside its own flags."""
        return dataclasses.replace(self.result, flags={
            **self.result.flags, "single_star": self.single.to_dict()["labels"],
            "comparison": self.compare().to_dict()})

    def to_dict(self) -> dict:
        """The ``--json`` document: both fits, the comparison and the light fraction."""
        light = {k: {"median": float(np.median(v)),
                     "sigma": float(0.5 * np.diff(np.percentile(v, [15.865, 84.135]))[0])}
                 for k, v in self.derived().items()}
        return {"model": repr(self.model), "mixture": self.result.to_dict(),
                "single": self.single.to_dict(), "derived": light,
                "comparison": self.compare().to_dict()}


def _chain(model, observation, settings: ObservationSettings, *, initial, fixed):
    """The chain of a two-component fit: a spot model rotates as one star; a binary's
    components carry their own vsini (no chain rotation), one RV per exposure."""
    kw = dict(resolution=settings.resolution, continuum_degree=settings.continuum_degree)
    rv_bounds = settings.rv_bounds
    if isinstance(model, SpotModel):
        return build_chain(model, observation, rotation=True, rv_bounds=rv_bounds,
                           vsini_bounds=settings.vsini_bounds, initial=initial, fixed=fixed,
                           **kw)
    exposures = _exposures(observation)
    if model.n_epochs != len(exposures):
        raise FitError(f"the binary model has {model.n_epochs} epochs but {len(exposures)} "
                       "exposures were given; pass n_epochs=len(exposures)")
    if model.n_epochs == 1:
        return build_chain(model, exposures[0], rotation=False, rv_bounds=rv_bounds,
                           initial=initial, fixed=fixed, **kw)
    if rv_bounds is None:
        rvs = [v for k, v in {**(initial or {}), **(fixed or {})}.items() if k.startswith("rv")]
        if not rvs:
            raise FitError("a multi-epoch binary needs rv_bounds, or initial rv_e values "
                           "(from the single-star fit of each exposure)")
        rv_bounds = (min(rvs) - 50.0, max(rvs) + 50.0)
    return EpochChain(model, exposures, rv_bounds=rv_bounds, **kw)


def _delta_rv_scan(chain: ObservationChain, theta: np.ndarray, names: Sequence[str],
                   step: float = 3.0) -> np.ndarray:
    """Best ``delta_rv`` per name by χ² on a grid (others held at ``theta``)."""
    likelihood = Likelihood(chain)
    theta = theta.copy()
    for name in names:
        j = chain.parameter_names.index(name)
        lo, hi = chain.bounds[name]
        grid = np.arange(lo, hi + 0.5 * step, step)
        trial = np.repeat(theta[None], len(grid), 0)
        trial[:, j] = grid
        chi2 = np.concatenate([likelihood.chi2(trial[i:i + 32]) for i in range(0, len(grid), 32)])
        theta[j] = grid[int(np.nanargmin(chi2))]
    return theta


def _starts(model, single: Result, chain: ObservationChain,
            initial: Mapping[str, float] | None, fixed: Mapping[str, float] | None
            ) -> dict[str, float]:
    """Two-component starting values seeded by the single-star fit."""
    s = single.values
    grid_bounds = model.grid_bounds
    t_lo, t_hi = grid_bounds["teff"]
    start: dict[str, float] = {}
    if isinstance(model, SpotModel):
        teff = float(np.clip(s["teff"] + 150.0, t_lo + 500.0, t_hi))
        start.update(teff=teff, teff_spot=float(np.clip(teff - 1000.0, t_lo, teff - 250.0)),
                     filling_factor=0.3, vsini=s.get("vsini", 5.0))
        start.update({n: s[n] for n in model.shared})
    else:
        for n in model.grid.label_names:
            if n in model.share:
                start[n] = s[n]
            else:
                start[f"{n}_a"] = s[n]
                start[f"{n}_b"] = s[n]
        start["teff_b"] = float(np.clip(s["teff"] - 700.0, t_lo, t_hi))
        start.update(vsini_a=float(s.get("vsini", 5.0)), vsini_b=float(s.get("vsini", 5.0)),
                     **{model.ratio_name: 0.7 if model.flux_ratio == "radii" else 0.3})
        start.update({n: 0.0 for n in model.rv_names})
    start.update({n: v for n, v in s.items() if n.startswith("rv")})
    start.update(initial or {})
    start.update(fixed or {})
    start = {n: v for n, v in start.items() if n in chain.parameter_names}
    if isinstance(model, BinaryModel):
        scan = [n for n in model.rv_names if n not in (initial or {}) and n not in (fixed or {})]
        if scan:
            theta = _delta_rv_scan(chain, chain.theta_from(start), scan)
            start = dict(zip(chain.parameter_names, map(float, theta), strict=True))
    return start


def fit_mixture(model: SpotModel | BinaryModel, observation, *,
                settings: ObservationSettings | None = None, mcmc: bool = False,
                initial: Mapping[str, float] | None = None,
                fixed: Mapping[str, float] | None = None, n_walkers: int = 32,
                n_steps: int = 2000, seed: int = 0, progress: bool = True,
                single: Result | None = None, source: str | None = None,
                **fit_kwargs) -> MixtureFit:
    """Fit a two-component model to ``observation`` (a Spectrum, an EchelleSpectrum, or for a
    multi-epoch binary a list of exposures).

    A single-star fit with the model's grid comes first (``single``, or pass one); its labels
    seed the two-component starts (binary: ``delta_rv`` found by a χ² scan). initial / fixed:
    ``{name: value}`` of the two-component parameters (checked: identical components raise
    ModelError). mcmc: sample the posterior (emcee; n_walkers, n_steps, seed) from the least-
    squares solution. settings: the observation setup (resolution, continuum_degree, rv_bounds,
    vsini_bounds are used; its fields may be given as keywords, as in :func:`photosphere.infer.
    fit`). Other keywords go to :func:`photosphere.infer.fit`.
    """
    observed, fit_kwargs = ObservationSettings.split(fit_kwargs)
    settings = ObservationSettings.of(settings, **observed)
    check_distinct(model, {**(initial or {}), **(fixed or {})})
    exposures = _exposures(observation)
    if single is None or single.provenance.get("model_error") == "templates":
        single_obs = exposures if len(exposures) > 1 else exposures[0]
        # model_error="none": the mixture has no error templates, and the two fits are
        # compared by χ², so both treat the grid as exact (a given single-star fit made with
        # templates has the marginal χ², not comparable: it is refitted)
        single = fit(model.grid, single_obs, resolution=settings.resolution,
                     continuum_degree=settings.continuum_degree, rv_bounds=settings.rv_bounds,
                     vsini_bounds=settings.vsini_bounds, source=source, model_error="none")
    seeded = {n: v for n, v in single.values.items() if n.startswith("rv")}
    chain = _chain(model, observation, settings, initial={**seeded, **(initial or {})},
                   fixed=fixed)
    start = _starts(model, single, chain, initial, fixed)
    free_start = {n: v for n, v in start.items() if n not in (fixed or {})}
    result = fit(model, observation, initial=free_start, fixed=fixed, chain=chain,
                 source=source, **fit_kwargs)
    if mcmc:
        from .mcmc import sample

        result = sample(model, observation, initial=result, fixed=fixed, chain=chain,
                        n_walkers=n_walkers, n_steps=n_steps, seed=seed, progress=progress,
                        source=source)
    single_bounds = {**model.grid.bounds, "vsini": tuple(settings.vsini_bounds),
                     **{n: tuple(single.provenance["rv_bounds"]) for n in single.free
                        if n.startswith("rv")}}
    return MixtureFit(result=result, single=single, model=model, bounds=dict(chain.bounds),
                      single_bounds=single_bounds)


__all__ = ["MODES", "MixtureFit", "check_distinct", "fit_mixture", "make_model", "simulate"]
