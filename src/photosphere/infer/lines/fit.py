"""Fit a cloned line model to an observed spectrum (blasé's transfer learning).

The forward model of the observation is the inference layer's
:class:`~photosphere.infer.chain.ObservationChain` over the lines as a forward model
(:class:`~photosphere.models.lines.forward.LineForwardModel` with ``learned=True``: the opacity
is re-evaluated from the lines' current parameters at every prediction), on a log-uniform
rest-frame grid (constant velocity step, so the velocity-space kernels are right whatever the
data's pixels are):

    stellar lines exp(−τ(λ))  → rotation (vsini, limb darkening ε)  → × telluric T(λ · D(rv))
    → instrumental Gaussian LSF (R)  → Doppler shift and flux-conserving rebin onto the data
    pixels  → × continuum (Chebyshev polynomial, profiled: weighted least squares at every
    evaluation)

The telluric transmission (a fitted :class:`~photosphere.models.lines.telluric.TelluricModel`)
multiplies *before* the LSF because the instrument blurs the atmosphere's lines as well as the
star's: the chain's fitted-transmission stage. Learned: per-line corrections (Δ ln A, Δ ln σ,
Δ ln γ, centre shift), rv, vsini, and the telluric scalings and RV; the continuum is profiled.
Priors keep the line changes physical: an L1 + L2 penalty on Δ ln A (as blasé), Gaussian priors
on the width and centre changes. Fitting runs in two Adam stages: the few global parameters
first, then everything jointly (Adam measured faster than L-BFGS on ~10⁴ lines, see
docs/lines.md). The observation is the library's 1-D :class:`~photosphere.spectrum.Spectrum`;
:func:`observed_spectrum` adds the checks the fit needs (and σ when the spectrum has none).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import FitError, InvalidSpectrumError
from ...models.lines.clone import ResidualStats, optimise
from ...models.lines.forward import LineForwardModel
from ...models.lines.model import LineModel
from ...models.lines.telluric import TelluricModel
from ...ops.noise import with_uncertainty
from ...result import Result, Segment
from ...spectrum import Spectrum
from ..chain import ObservationChain
from ..optimize import parabola_minimum, rv_scan
from ..settings import ObservationSettings

SPEED_OF_LIGHT = 299792.458  # km/s
#: km/s either side of the starting RV that the fit's model grid covers
RV_MARGIN = 50.0


def observed_spectrum(spectrum: Spectrum) -> Spectrum:
    """``spectrum`` as the line fit uses it: one 1-D :class:`~photosphere.spectrum.Spectrum`
    with a positive, finite σ on every unmasked pixel, at least one of them unmasked.

    A :class:`Spectrum` already refuses non-1-D or mismatched arrays, non-finite or
    non-increasing wavelengths, NaN/inf flux on unmasked pixels and NaN or negative σ (σ = inf
    marks a masked pixel). Refused here, with an :class:`InvalidSpectrumError` naming the fix:
    anything that is not one 1-D spectrum (an ``EchelleSpectrum``), every pixel masked, σ = 0 on
    an unmasked pixel, no σ and no noise estimate from the flux. Without σ, every pixel gets one
    σ = median unmasked flux / S/N, the S/N from the flux alone (DER_SNR,
    :func:`~photosphere.ops.noise.with_uncertainty`, which notes it in ``meta``).
    """
    if not isinstance(spectrum, Spectrum):
        raise InvalidSpectrumError(
            f"the line fit takes one 1-D Spectrum, got {type(spectrum).__name__}; pass one "
            "order (EchelleSpectrum.order(k)) or build Spectrum(wavelength, flux, sigma)")
    if spectrum.mask.all():
        raise InvalidSpectrumError(f"every pixel of {spectrum!r} is masked; nothing to fit")
    estimated = not spectrum.has_uncertainty
    if estimated:
        try:
            spectrum = with_uncertainty(spectrum)
        except (FitError, InvalidSpectrumError) as exc:
            raise InvalidSpectrumError(
                f"no uncertainties given and the noise cannot be estimated from the flux "
                f"({exc}); pass sigma (or an error column in the file)") from None
    zero = ~spectrum.mask & ~(spectrum.sigma > 0)
    if zero.any():
        where = (f"{int(zero.sum())} unmasked pixel(s), first at "
                 f"{float(spectrum.wavelength[np.argmax(zero)]):.3f} Å")
        raise InvalidSpectrumError(
            f"σ = 0 estimated from the flux (median flux / DER_SNR S/N) on {where}; pass sigma"
            if estimated else f"σ = 0 on {where}; mask them (Spectrum.with_mask) or give "
            "their uncertainty")
    return spectrum


@dataclass(frozen=True)
class FitSettings:
    """Settings of :func:`fit_lines`.

    resolution: instrumental R (FWHM = c/R); epsilon: limb darkening; continuum_degree:
    Chebyshev degree; oversample: the fine grid's velocity step is (c/R)/oversample, and at
    most half the data's step; amplitude_l1/amplitude_l2: weights of Σ|Δ ln A| and Σ(Δ ln A)²;
    width_prior and centre_prior: 1σ of Δ ln σ, Δ ln γ (dimensionless) and of the centre shift
    (km/s); fit_line_parameters/fit_telluric: which parts learn; rv_search: half range (km/s) of
    the initial RV scan; n_global_steps/n_steps: Adam epochs of the two stages.
    """

    resolution: float = 55000.0
    epsilon: float = 0.6
    continuum_degree: int = 3
    oversample: float = 5.0
    amplitude_l1: float = 1.0
    amplitude_l2: float = 10.0
    width_prior: float = 0.3
    centre_prior: float = 1.0
    fit_line_parameters: bool = True
    fit_telluric: bool = True
    rv_search: float = 200.0
    vsini_initial: float = 3.0
    n_global_steps: int = 100
    n_steps: int = 300
    learning_rate: float = 0.02

    def observation(self, *, rv_bounds: tuple[float, float], vsini_max: float,
                    telluric: TelluricModel | None = None,
                    continuum_degree: int | None = None) -> ObservationSettings:
        """The observation chain's settings of this line fit, the one place where the line
        fit's resolution, limb darkening and continuum degree become the chain's:
        rv_bounds (km/s) and vsini (0..``vsini_max`` km/s) the range the chain's model grid
        covers; ``telluric`` the fitted transmission before the LSF; ``continuum_degree``
        overrides this object's (the RV scan uses a straight line)."""
        degree = self.continuum_degree if continuum_degree is None else continuum_degree
        return ObservationSettings(resolution=self.resolution, epsilon=self.epsilon,
                                   continuum_degree=degree, telluric=telluric,
                                   rv_bounds=rv_bounds, vsini_bounds=(0.0, vsini_max))

    def velocity_step(self, wavelength: np.ndarray) -> float:
        """km/s step of the model grid for data pixels ``wavelength`` (n_pix,) Å:
        (c/R)/oversample, and at most half the data's smallest step."""
        data_step = SPEED_OF_LIGHT * float(np.min(np.diff(np.log(wavelength))))
        return min(SPEED_OF_LIGHT / self.resolution / self.oversample, data_step / 2.0)


def line_chain(stellar: LineModel, spectrum: Spectrum, observation: ObservationSettings, *,
               velocity_step: float, learned: bool) -> ObservationChain:
    """The observation chain of ``spectrum`` over ``stellar`` as a
    :class:`~photosphere.models.lines.forward.LineForwardModel` (``learned``: re-evaluated from
    the lines' current parameters) on a ``velocity_step`` km/s rest-frame grid wide enough for
    every pixel over ``observation.rv_bounds`` and the broadening (vsini bound, 5 c/R, 50 km/s
    more), so the chain masks none of the data's pixels."""
    wave = spectrum.wavelength
    rv_max = max(abs(v) for v in observation.rv_bounds)
    margin = 1.0 + (rv_max + observation.vsini_bounds[1] + 5.0 * SPEED_OF_LIGHT
                    / observation.resolution + 50.0) / SPEED_OF_LIGHT
    template = LineForwardModel(stellar, velocity_step=velocity_step, medium=spectrum.medium,
                                wavelength_range=(wave[0] / margin, wave[-1] * margin),
                                learned=learned)
    return ObservationChain.from_settings(template, spectrum, observation)


class ObservedLineModel(torch.nn.Module):
    """The learned parameters of a line fit and its observation chain.

    stellar: the cloned :class:`LineModel` (its parameters become the learned corrections, its
    values at construction the prior means); observation: the 1-D
    :class:`~photosphere.spectrum.Spectrum` fitted (:func:`observed_spectrum`; for a simulation,
    any spectrum on the wanted pixels); telluric: a fitted transmission or None; rv: starting RV
    (km/s; the chain's grid covers rv ± :data:`RV_MARGIN`). The prediction is the chain's
    (:func:`line_chain`, the continuum profiled on the observation); this module holds rv,
    ln vsini and the priors.
    """

    def __init__(self, stellar: LineModel, observation: Spectrum, settings: FitSettings,
                 telluric: TelluricModel | None = None, rv: float = 0.0):
        super().__init__()
        self.stellar = stellar
        self.telluric = telluric
        self.settings = settings
        with torch.no_grad():
            for name in ("log_amplitude", "log_sigma", "log_gamma", "centre_shift"):
                self.register_buffer(f"initial_{name}", getattr(stellar, name).detach().clone())
        obs = observed_spectrum(observation)
        self.velocity_step = settings.velocity_step(obs.wavelength)
        vsini_max = max(20.0, 5.0 * settings.vsini_initial)
        setup = settings.observation(rv_bounds=(rv - RV_MARGIN, rv + RV_MARGIN),
                                     vsini_max=vsini_max, telluric=telluric)
        self.chain = line_chain(stellar, obs, setup, velocity_step=self.velocity_step,
                                learned=True)
        if len(self.chain.segments) != 1:
            raise FitError(f"the line fit's chain has {len(self.chain.segments)} segments; "
                           "expected one")
        seg = self.chain.segments[0]
        start = int(np.searchsorted(obs.wavelength, float(seg.wavelength[0])))
        #: the observation's pixels [start, stop) the chain predicts (masked ends are cropped)
        self.span = (start, start + int(seg.wavelength.shape[0]))
        self.n_pixels = int(obs.wavelength.size)
        self.rv = torch.nn.Parameter(torch.tensor(float(rv), dtype=torch.float64))
        self.log_vsini = torch.nn.Parameter(
            torch.tensor(math.log(max(settings.vsini_initial, 0.1)), dtype=torch.float64))

    @property
    def vsini(self) -> torch.Tensor:
        return torch.exp(torch.clamp(self.log_vsini, max=math.log(500.0)))

    def theta(self) -> torch.Tensor:
        """The chain's parameters ``(3,)``: line_strength 1, vsini, rv (km/s)."""
        return torch.stack([torch.ones_like(self.rv), self.vsini, self.rv])

    def parameter_groups(self, learning_rate: float) -> list[dict]:
        """Adam groups with learning rates in each parameter's natural step (per epoch):
        rv 0.5 km/s × lr/0.02, ln vsini, ln scale and ln line parameters lr, line centre shifts
        lr/50 Å."""
        unit = learning_rate / 0.02
        named = dict(self.named_parameters())
        rates = {"rv": 0.5 * unit, "log_vsini": learning_rate,
                 "telluric.log_scale": learning_rate, "telluric.rv": 0.5 * unit,
                 "stellar.centre_shift": learning_rate / 50}
        return [{"params": [p], "lr": rates.get(name, learning_rate)}
                for name, p in named.items() if p.requires_grad]

    def predicted(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Model and profiled continuum on the chain's pixels (:attr:`span`), each (n_span,)."""
        model, continuum = self.chain.predict(self.theta())
        return model[0], continuum[0]

    def chi2(self) -> torch.Tensor:
        """½ χ² of the observation (masked pixels weightless)."""
        seg = self.chain.segments[0]
        return 0.5 * torch.sum(seg.ivar * (self.predicted()[0] - seg.flux) ** 2)

    def _full(self, values: torch.Tensor) -> torch.Tensor:
        """``values (n_span,)`` on all the observation's pixels (n_pix,), NaN beyond the span."""
        start, stop = self.span
        return torch.cat([values.new_full((start,), math.nan), values,
                          values.new_full((self.n_pixels - stop,), math.nan)])

    def continuum(self) -> torch.Tensor:
        """Profiled continuum (n_pix,) in data flux units (NaN on cropped masked ends)."""
        return self._full(self.predicted()[1])

    def normalised(self) -> torch.Tensor:
        """Stellar × telluric flux without continuum on the data pixels (n_pix,)."""
        return self._full(self.chain.stellar(self.theta())[0])

    def components(self) -> dict[str, torch.Tensor]:
        """Data-pixel model parts, each (n_pix,): ``stellar`` (normalised), ``telluric``
        (transmission through the LSF), ``continuum``, and ``model`` (the full forward model)."""
        theta = self.theta()
        labels, vsini, rv = self.chain.split(theta)
        model, continuum = self.predicted()
        stellar = self.chain.resampled(self.chain.broadened(labels, vsini), rv)[0]
        telluric = (self.chain.observed_transmission(rv)[0] if self.telluric is not None
                    else torch.ones_like(stellar))
        return {name: self._full(v) for name, v in (
            ("model", model), ("stellar", stellar), ("telluric", telluric),
            ("continuum", continuum))}

    def forward(self) -> torch.Tensor:
        """Model flux on the data pixels, (n_pix,) (NaN on cropped masked ends)."""
        return self._full(self.predicted()[0])

    def prior(self) -> torch.Tensor:
        """−ln prior of the line corrections (L1 + L2 on Δ ln A, Gaussian on widths, centres)."""
        s = self.settings
        d_amp = self.stellar.log_amplitude - self.initial_log_amplitude
        d_sig = self.stellar.log_sigma - self.initial_log_sigma
        d_gam = self.stellar.log_gamma - self.initial_log_gamma
        shift_kms = ((self.stellar.centre_shift - self.initial_centre_shift)
                     / self.stellar.reference_centre * SPEED_OF_LIGHT)
        return (s.amplitude_l1 * d_amp.abs().sum() + s.amplitude_l2 * (d_amp**2).sum()
                + 0.5 * ((d_sig**2).sum() + (d_gam**2).sum()) / s.width_prior**2
                + 0.5 * (shift_kms**2).sum() / s.centre_prior**2)


@dataclass
class FitResult:
    """What :func:`fit_lines` learned: the fitted ``model``, the ``observation`` fitted (the
    1-D :class:`~photosphere.spectrum.Spectrum` of :func:`observed_spectrum`, σ included), rv
    and vsini (km/s), the telluric scalings, residual statistics (flux and in units of σ), the
    loss history and the time."""

    model: ObservedLineModel
    observation: Spectrum
    rv: float
    vsini: float
    telluric_scale: dict[str, float]
    telluric_rv: float | None
    residual: ResidualStats
    chi2_per_pixel: float
    rms_over_noise: float
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"rv_kms": self.rv, "vsini_kms": self.vsini, "telluric_scale": self.telluric_scale,
                "telluric_rv_kms": self.telluric_rv, "residual": self.residual.as_dict(),
                "chi2_per_pixel": self.chi2_per_pixel, "rms_over_noise": self.rms_over_noise,
                "n_lines": self.model.stellar.n_lines, "n_pixels": int(self.observation.flux.size),
                "steps": len(self.history), "seconds": self.seconds}

    def to_result(self, source: str = "") -> Result:
        """The fit as a :class:`~photosphere.result.Result` (``method="lines"``): rv and vsini
        (km/s; this optimiser gives no σ, so σ and the covariance are NaN), χ² over the unmasked
        pixels, the data and model spectrum as one segment, the summary in ``flags`` (no
        ``converged``: the fit runs a fixed number of Adam steps, it has no convergence test)."""
        obs = self.observation
        good = int(np.count_nonzero(~obs.mask))
        with torch.no_grad():
            model, continuum = self.model().numpy(), self.model.continuum().numpy()
        free = ("rv", "vsini")
        return Result(
            values={"rv": self.rv, "vsini": self.vsini},
            sigma={n: float("nan") for n in free}, free=free,
            covariance=np.full((2, 2), np.nan), chi2=self.chi2_per_pixel * good, n_pixels=good,
            n_parameters=len(free) + self.model.settings.continuum_degree + 1,
            segments=(Segment(obs.wavelength, np.where(obs.mask, np.nan, obs.flux), obs.sigma,
                              obs.mask, model, continuum),),
            flags={"lines": self.summary()},
            provenance={"source": source}, method="lines")


def initial_rv_of(stellar: LineModel, spectrum: Spectrum, settings: FitSettings, *,
                  step: float | None = None) -> float:
    """RV (km/s) minimising χ² of the lines as cloned over ±``settings.rv_search``: the
    inference layer's RV scan (:func:`photosphere.infer.optimize.rv_scan`) of the line model as
    a forward model (:class:`~photosphere.models.lines.forward.LineForwardModel`, flat beyond
    its lines) through the observation chain (rotation at ``vsini_initial``, the Gaussian LSF,
    a linear continuum re-fitted at every trial), every ``step`` km/s (default: a third of the
    resolution element or the pixel, at least 0.25 km/s), refined by a parabola through the
    minimum. spectrum: a 1-D Spectrum (:func:`observed_spectrum`; the lines are taken in its
    medium). Raises :class:`FitError` when the minimum sits at the edge of the range."""
    spectrum = observed_spectrum(spectrum)
    wave = spectrum.wavelength
    vstep = min(SPEED_OF_LIGHT / settings.resolution / 3.0,
                SPEED_OF_LIGHT * float(np.min(np.diff(np.log(wave)))))
    step = step or max(vstep, 0.25)
    setup = settings.observation(rv_bounds=(-settings.rv_search, settings.rv_search),
                                 vsini_max=max(10.0, 3.0 * settings.vsini_initial),
                                 continuum_degree=1)
    chain = line_chain(stellar, spectrum, setup, velocity_step=vstep, learned=False)
    trials = np.arange(-settings.rv_search, settings.rv_search + step, step)
    chi2 = rv_scan(chain, np.array([1.0, settings.vsini_initial, 0.0]), trials)
    best = int(np.argmin(chi2))
    if best in (0, len(trials) - 1):
        raise FitError(f"the RV scan's best χ² sits at the edge of ±{settings.rv_search} km/s; "
                       "the line list may not match this star or range; widen rv_search or "
                       "pass rv=")
    return parabola_minimum(trials, chi2, best)


def fit_lines(stellar: LineModel, spectrum: Spectrum, *,
              settings: FitSettings | None = None, telluric: TelluricModel | None = None,
              rv: float | None = None, progress: bool = True) -> FitResult:
    """Fit line corrections, RV, vsini, continuum and tellurics of ``stellar`` to ``spectrum``.

    spectrum: one 1-D :class:`~photosphere.spectrum.Spectrum` (checked, and σ estimated when
    absent, by :func:`observed_spectrum`). stellar: cloned lines (rest frame, same air/vacuum
    medium as ``spectrum``); modified in place. rv: initial RV (km/s); ``None`` scans
    ±settings.rv_search. Raises :class:`InvalidSpectrumError` for a spectrum the fit cannot use,
    :class:`FitError` when the line list does not overlap it.
    """
    settings = settings or FitSettings()
    obs = observed_spectrum(spectrum)
    wave, mask = obs.wavelength, obs.mask
    lo, hi = stellar.wavelength_range
    centre = stellar.reference_centre.numpy()
    overlap = np.sum((centre > wave[0]) & (centre < wave[-1]))
    if overlap == 0:
        raise FitError(
            f"none of the {stellar.n_lines} lines ({lo:.1f}–{hi:.1f} Å) falls in the observed "
            f"range {wave[0]:.1f}–{wave[-1]:.1f} Å; clone a spectrum that covers the "
            "observation (check air vs vacuum too)")
    if rv is None:
        rv = initial_rv_of(stellar, obs, settings)
    model = ObservedLineModel(stellar, obs, settings, telluric, rv=rv)
    # the chain's χ²: masked pixels carry flux 0 and ivar 0 (no masked value, even 1e300,
    # reaches it)
    chi2 = model.chi2
    n_good = int((~mask).sum())

    # stage 1: globals only (rv, vsini, telluric scale/RV; the continuum is profiled)
    stellar.requires_grad_(False)
    if telluric is not None:
        telluric.log_scale.requires_grad_(settings.fit_telluric)
        telluric.rv.requires_grad_(settings.fit_telluric)
    t0 = time.perf_counter()
    history = optimise(chi2, model, optimizer="adam", n_steps=settings.n_global_steps,
                       groups=model.parameter_groups(4 * settings.learning_rate),
                       progress=progress, description="fit globals")
    # stage 2: everything jointly with the priors
    if settings.fit_line_parameters:
        stellar.requires_grad_(True)

        def loss():
            return chi2() + model.prior()

        history += optimise(loss, model, optimizer="adam", n_steps=settings.n_steps,
                            groups=model.parameter_groups(settings.learning_rate),
                            progress=progress, description="fit lines")
    seconds = time.perf_counter() - t0
    if not all(math.isfinite(h) for h in history[-5:]):
        raise FitError("the fit diverged (non-finite loss); lower learning_rate or check the "
                       "uncertainties")
    with torch.no_grad():
        resid = (obs.flux - model().numpy())[~mask]
        sig = obs.sigma[~mask]
    return FitResult(
        model=model, observation=obs, rv=float(model.rv.detach()),
        vsini=float(model.vsini.detach()),
        telluric_scale=telluric.scale if telluric is not None else {},
        telluric_rv=float(telluric.rv.detach()) if telluric is not None else None,
        residual=ResidualStats.of(resid), chi2_per_pixel=float(np.sum((resid / sig) ** 2) / n_good),
        rms_over_noise=float(np.sqrt(np.mean(resid**2)) / np.median(sig)),
        history=history, seconds=seconds)
