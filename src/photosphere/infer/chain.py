"""The observation chain: a forward model's flux -> what the spectrograph recorded.

For parameters ``theta = (model labels..., vsini, [vmac], rv per exposure...)`` the chain
computes, for
each *segment* (one order of one exposure)::

    model.predict(labels)                         rest frame, model's log-uniform grid
      -> rotational_broaden(vsini, epsilon)         (limb-darkened, ops.rotation)
      -> radial-tangential macroturbulence ζ       (optional, fixed or fitted as ``vmac``)
      -> instrumental LSF (R, per order or R(λ))    (ops.lsf)
      -> Doppler shift of the model wavelengths by rv of that exposure (ops.doppler)
      -> flux-conserving rebin onto the observed pixels (ops.resample.rebin)
      -> × telluric transmission (on the observed pixels; optional)
      -> × continuum: Chebyshev polynomial in wavelength mapped to [-1, 1], per segment
      -> masks (masked pixels carry zero weight)

The continuum coefficients are *profiled out*: at every evaluation they are the weighted linear
least-squares solution given the model (a small ``(degree+1)²`` solve per segment, differentiable),
so the nonlinear fit only sees labels, vsini and RVs. This is faster and more robust than fitting
the coefficients as free parameters, and gives the same best fit.

The telluric transmission is multiplied on the observed pixels after the LSF and resampling: exact
when the tellurics are resolved (or already at the instrument's resolution, as TAPAS/TelFit
spectra convolved to R are), an approximation otherwise. It is fixed in the observed frame, so it
does not move with the star's RV.

A *fitted* transmission (``telluric`` a torch module, e.g.
:class:`~photosphere.models.lines.telluric.TelluricModel` with a scale per molecule and its own
RV) is instead multiplied *before* the LSF, as the instrument blurs the atmosphere's lines too::

    model.predict(labels) -> rotation ⊗ macroturbulence -> × T(λ · D(rv)) -> LSF -> shift, rebin

T is evaluated on the model's rest-frame grid at the observed wavelength λ · D(rv) of each model
pixel, so rotation and the LSF are two convolutions on this route (one composed kernel
otherwise, unchanged). The module's own parameters are not part of θ: they are torch parameters
reached by autograd (the line fit learns them with Adam; a least-squares fit keeps them fixed).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from ..errors import FitError, InvalidSpectrumError, OutOfGridError
from ..model import ForwardModel, check_model
from ..ops import _kernels, doppler, grid, lsf, macroturbulence, resample, rotation
from ..spectrum import EchelleSpectrum, Spectrum
from .settings import ObservationSettings

C_KMS = 299792.458
DTYPE = torch.float64


@dataclass(frozen=True)
class SegmentData:
    """One order of one exposure, prepared for fitting (tensors are float64).

    wavelength, flux, ivar: ``(n_pix,)`` observed frame Å, data, inverse variance (0 = masked);
    edges: ``(n_pix+1,)`` pixel edges Å (midpoints, as ops.resample.pixel_edges).
    model_slice: the model pixels (start, stop) needed to predict this segment.
    exposure: index of the exposure (selects its rv); order: index within the exposure.
    continuum_basis: ``(n_pix, K)`` continuum basis (Chebyshev polynomials or cubic B-splines)
    or None; telluric: ``(n_pix,)`` or None.
    resolution: float R, ``(n_model_slice,)`` R(λ) on the model pixels, or None (no LSF).
    """

    wavelength: torch.Tensor
    edges: torch.Tensor
    flux: torch.Tensor
    ivar: torch.Tensor
    sigma: np.ndarray
    mask: np.ndarray
    model_slice: tuple[int, int]
    exposure: int
    order: int
    name: str
    continuum_basis: torch.Tensor | None
    telluric: torch.Tensor | None
    resolution: float | torch.Tensor | None


def _exposures(observation) -> list[Spectrum | EchelleSpectrum]:
    if isinstance(observation, Spectrum | EchelleSpectrum):
        return [observation]
    if isinstance(observation, Sequence) and observation and all(
            isinstance(o, Spectrum | EchelleSpectrum) for o in observation):
        return list(observation)
    raise InvalidSpectrumError(
        f"observation must be a Spectrum, an EchelleSpectrum or a list of them (exposures), got "
        f"{type(observation).__name__}")


def _rows(spec: Spectrum | EchelleSpectrum) -> list[tuple[np.ndarray, ...]]:
    """(wavelength, flux, sigma, mask) per order as 1D arrays."""
    if isinstance(spec, Spectrum):
        return [(spec.wavelength, spec.flux, spec.sigma, spec.mask)]
    return [(spec.wavelength[i], spec.flux[i], spec.sigma[i], spec.mask[i])
            for i in range(spec.n_orders)]


#: kernel taps above which a float32 convolution goes through the FFT; float64 always does.
#: Measured on this 2-core machine over 30 000 px: float32 direct 1-4 ms up to ~120 taps
#: against 3-4 ms by FFT, 12 ms against 4 ms at 481 taps (R ~ 2 200); float64 direct 8-180 ms
#: against 3-5 ms by FFT (torch's float64 conv1d has no fast CPU kernel).
FFT_TAPS_FLOAT32 = 160


def _convolve(flux: torch.Tensor, kernel: torch.Tensor,
              dtype: torch.dtype = DTYPE, spectra: dict | None = None) -> torch.Tensor:
    """Rows of ``flux`` (B, n) convolved with a symmetric ``kernel``, one per row (B, taps) or
    shared (taps,); edges padded with the edge values; returned as float64.

    ``dtype`` is the model's own precision. A float32 model (the grid interpolator stores
    float32) with a short kernel is convolved directly in float32, the fastest on CPU, with
    rounding (~1e-7 relative) no larger than the model's own; long kernels (low resolution)
    and float64 models go through the FFT in float64 (same result to ~1e-15). ``spectra``: a
    dict the caller keeps while convolving several segments with the same ``kernel`` object,
    so its transform is computed once per FFT length (:func:`_fft_convolve`)."""
    half = kernel.shape[-1] // 2
    padded = _kernels.pad_edges(flux, half)
    if dtype == torch.float64 or kernel.shape[-1] > FFT_TAPS_FLOAT32:
        return _fft_convolve(padded.to(DTYPE), kernel.to(DTYPE), spectra)
    padded = padded.to(dtype)
    kernel = kernel.to(dtype).expand(flux.shape[0], -1)
    out = torch.nn.functional.conv1d(padded.unsqueeze(0), kernel.flip(-1).unsqueeze(1),
                                     groups=flux.shape[0])
    return out.squeeze(0).to(DTYPE)


def _fft_length(n: int) -> int:
    """The FFT length for a linear convolution of ``n`` samples: the smallest product of
    2, 3 and 5 not below ``n`` (up to ~1.1 n, where the next power of two is up to 2 n; the
    transforms are as fast per sample)."""
    from scipy.fft import next_fast_len

    return int(next_fast_len(int(n), real=True))


def _fft_convolve(padded: torch.Tensor, kernel: torch.Tensor,
                  spectra: dict | None = None) -> torch.Tensor:
    """The 'valid' part of ``padded (B, n + taps - 1)`` convolved with ``kernel`` ((B, taps) or
    (taps,)), by FFT: ``(B, n)``. ``spectra``: a cache of the kernel's transforms by
    ``(id(kernel), length)``, valid while the caller holds ``kernel``."""
    n_in, taps = padded.shape[-1], kernel.shape[-1]
    size = _fft_length(n_in + taps - 1)
    key = (id(kernel), size)
    if spectra is None or key not in spectra:
        transform = torch.fft.rfft(kernel, size)
        if spectra is None:
            spectrum = torch.fft.rfft(padded, size) * transform
            return torch.fft.irfft(spectrum, size)[..., taps - 1:n_in]
        spectra[key] = transform
    spectrum = torch.fft.rfft(padded, size) * spectra[key]
    return torch.fft.irfft(spectrum, size)[..., taps - 1:n_in]


def _differentiated(x: torch.Tensor) -> bool:
    """Whether ``x`` carries a gradient or a forward-mode tangent."""
    return (torch.is_grad_enabled() and x.requires_grad) or \
        fwAD.unpack_dual(x).tangent is not None


def _per_row(kernel: torch.Tensor, rows: int) -> torch.Tensor:
    """Kernels ``(B, taps)`` repeated for the ``rows`` rows of each batch element."""
    return kernel if rows == 1 else kernel.repeat_interleave(rows, dim=0)


def _compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The kernel of convolving with ``first`` ``(B, taps)`` or ``(taps,)`` then ``second``
    ``(taps2,)``: their full convolution, same leading shape as ``first``."""
    rows = first.reshape(-1, first.shape[-1])
    out = torch.nn.functional.conv1d(rows.unsqueeze(1), second.flip(-1).view(1, 1, -1),
                                     padding=second.shape[-1] - 1).squeeze(1)
    return out.reshape(*first.shape[:-1], out.shape[-1])


def _compose_rows(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Row-wise composition of kernels ``first (B, t1)`` and ``second (B, t2)`` -> ``(B,
    t1 + t2 - 1)`` (a grouped full convolution)."""
    b = first.shape[0]
    return torch.nn.functional.conv1d(first.unsqueeze(0), second.flip(-1).unsqueeze(1),
                                      padding=second.shape[-1] - 1, groups=b).squeeze(0)


def chebyshev_basis(wavelength: np.ndarray, good: np.ndarray, degree: int) -> np.ndarray:
    """``(n_pix, degree+1)`` Chebyshev polynomials T_0..T_degree of the wavelength mapped so the
    good pixels span [-1, 1]."""
    lo, hi = float(wavelength[good].min()), float(wavelength[good].max())
    x = 2.0 * (wavelength - lo) / (hi - lo) - 1.0
    return np.polynomial.chebyshev.chebvander(x, degree)


def spline_basis(wavelength: np.ndarray, good: np.ndarray, knot_spacing: float) -> np.ndarray:
    """``(n_pix, n_intervals + 3)`` cubic B-splines with equally spaced knots, about
    ``knot_spacing`` Å apart, over the span of the good pixels (clamped at its ends): a smooth
    continuum that follows an unnormalised spectrum (blaze, flux calibration) over any length,
    each coefficient acting only locally."""
    from scipy.interpolate import BSpline

    lo, hi = float(wavelength[good].min()), float(wavelength[good].max())
    n_intervals = max(1, round((hi - lo) / knot_spacing))
    inner = np.linspace(lo, hi, n_intervals + 1)
    knots = np.concatenate([[lo] * 3, inner, [hi] * 3])
    x = np.clip(np.asarray(wavelength, float), lo, hi)
    return BSpline.design_matrix(x, knots, 3).toarray()


#: Å (air) of the Balmer lines in the optical: their wings span tens of Å, which a spline
#: continuum with knots every few tens of Å would absorb.
BALMER_LINES = (4101.73, 4340.46, 4861.33, 6562.80)
#: Å of spectrum a segment needs on each side of a Balmer line for its wings to be fitted:
#: such a segment gets a straight-line continuum (anchored by the far wings) instead of the spline.
BALMER_HALF_WIDTH = 25.0


def is_transmission(telluric) -> bool:
    """Whether a ``telluric`` setting is a fitted transmission (a torch module, multiplied
    before the LSF) rather than a fixed one on the observed pixels."""
    return isinstance(telluric, torch.nn.Module)


def holds_balmer_line(wavelength: np.ndarray, good: np.ndarray) -> bool:
    """Whether the good pixels extend at least :data:`BALMER_HALF_WIDTH` Å on both sides of a
    Balmer line (air or vacuum: the 1-2 Å between them does not matter here)."""
    if not good.any():
        return False
    lo, hi = float(wavelength[good].min()), float(wavelength[good].max())
    return any(lo <= c - BALMER_HALF_WIDTH and c + BALMER_HALF_WIDTH <= hi
               for c in BALMER_LINES)


class ObservationChain:
    """Forward model + instrument = predicted observation.

    model: a :class:`~photosphere.model.ForwardModel` (log-uniform wavelength grid).
    observation: a :class:`Spectrum`, an :class:`EchelleSpectrum` (orders fitted jointly) or a
    list of them (exposures sharing labels, one RV each).
    resolution: None (model already at the instrument's resolution), R (float), one R per order
    (sequence of length n_orders), or R(λ) arrays shaped like the observation's flux.
    telluric: None, a transmission shaped like the observation's flux (one exposure) or a list of
    them (one per exposure), or a :class:`Spectrum` of transmission resampled onto every segment
    (all multiplied on the observed pixels), or a differentiable transmission multiplied before
    the LSF (:func:`is_transmission`: a torch module mapping observed wavelengths ``(n,)`` Å, in
    the model's medium, to transmission ``(n,)``; see the module docstring).
    continuum_degree: degree of the per-segment Chebyshev continuum (None: no continuum, the
    data are compared with the model as they are).
    continuum_knot_spacing: Å; instead of one polynomial per segment, a cubic B-spline with knots
    about this far apart (follows unnormalised spectra over hundreds of Å); needs a
    continuum_degree (not None). A segment holding a Balmer line with its wings
    (:func:`holds_balmer_line`) gets a straight line instead, which cannot absorb the wings.
    rotation: include vsini as a parameter (rotational broadening, limb darkening ``epsilon``).
    macroturbulence: None, ζ_RT in km/s (fixed), or ``"fit"`` (a free parameter ``vmac`` within
    ``vmac_bounds``): the radial-tangential macroturbulence the 1D model lacks (ops.
    macroturbulence). A fixed ζ is folded into the LSF kernel, so it costs nothing per
    evaluation; a fitted one builds one kernel per row (differentiable in ζ).
    rv_bounds, vsini_bounds: km/s, the range the fit may explore; data pixels the model cannot
    predict over the whole RV range are masked.

    Parameters (``parameter_names``): the model labels, then ``vsini``, then ``vmac`` (when
    fitted), then ``rv`` (one exposure) or ``rv_0, rv_1, ...``.
    """

    @classmethod
    def from_settings(cls, model: ForwardModel, observation,
                      settings: ObservationSettings) -> ObservationChain:
        """The chain of ``settings`` (an :class:`~photosphere.infer.settings.
        ObservationSettings` with ``rv_bounds`` set, or ±300 km/s)."""
        return cls(model, observation, **settings.chain_kwargs())

    def __init__(self, model: ForwardModel, observation, resolution=None, telluric=None,
                 continuum_degree: int | None = 2, *, rotation: bool = True,
                 epsilon: float = 0.6, rv_bounds: tuple[float, float] = (-300.0, 300.0),
                 vsini_bounds: tuple[float, float] = (0.0, 100.0),
                 macroturbulence: float | str | None = None,
                 vmac_bounds: tuple[float, float] = (0.0, 15.0),
                 continuum_knot_spacing: float | None = None) -> None:
        self.model = check_model(model)
        self.exposures = _exposures(observation)
        # validated in one place; "auto" macroturbulence is resolved by fit/sample, not here
        settings = ObservationSettings(
            resolution=resolution, telluric=telluric, continuum_degree=continuum_degree,
            rotation=rotation, epsilon=epsilon, macroturbulence=macroturbulence,
            rv_bounds=rv_bounds, vsini_bounds=vsini_bounds, vmac_bounds=vmac_bounds,
            continuum_knot_spacing=continuum_knot_spacing)
        if settings.macroturbulence == "auto":
            raise FitError("macroturbulence='auto' is not understood by the chain; pass None, a "
                           "value in km/s or 'fit' (fit and sample resolve 'auto')")
        self.settings = settings
        self.continuum_degree = continuum_degree
        self.rotation = settings.rotation
        self.epsilon = settings.epsilon
        self.fit_vmac = settings.macroturbulence == "fit"
        self.macroturbulence = None if self.fit_vmac else settings.macroturbulence
        self.vmac_bounds = settings.vmac_bounds
        self.rv_bounds = settings.rv_bounds or (-300.0, 300.0)
        self.vsini_bounds = settings.vsini_bounds
        self.continuum_knot_spacing = settings.continuum_knot_spacing
        self.model_wavelength = np.asarray(model.wavelength, float)
        # log-uniform grid, or log-uniform windows with one step (a training set's line
        # windows): inside a run ln λ_i = ln λ_start + (i - start) Δ (used by _shifted_rebin)
        step, self.model_runs = grid.log_uniform_runs(self.model_wavelength)
        self.velocity_step = step
        self._model_wave_t = torch.as_tensor(self.model_wavelength, dtype=DTYPE)
        a, b = self.model_runs[0]
        self._dlog = float(np.log(self.model_wavelength[b - 1] / self.model_wavelength[a])
                           / (b - 1 - a))
        n_rv = len(self.exposures)
        self.label_names = tuple(model.label_names)
        self.rv_names = ("rv",) if n_rv == 1 else tuple(f"rv_{i}" for i in range(n_rv))
        self.parameter_names = (self.label_names + (("vsini",) if self.rotation else ())
                                + (("vmac",) if self.fit_vmac else ()) + self.rv_names)
        self.bounds: dict[str, tuple[float, float]] = {
            n: (float(model.bounds[n][0]), float(model.bounds[n][1])) for n in self.label_names}
        if self.rotation:
            self.bounds["vsini"] = self.vsini_bounds
        if self.fit_vmac:
            self.bounds["vmac"] = self.vmac_bounds
        for n in self.rv_names:
            self.bounds[n] = self.rv_bounds
        self.n_labels = len(self.label_names)
        self.rv_initial: float | None = None  # set by optimize.build_chain after its RV search
        #: a fitted transmission multiplied before the LSF (:func:`is_transmission`), or None
        self.transmission = telluric if is_transmission(telluric) else None
        self.segments = self._prepare(resolution, None if self.transmission else telluric)
        self.n_pixels = int(sum(int((s.ivar > 0).sum()) for s in self.segments))
        self.n_continuum = sum(0 if s.continuum_basis is None else s.continuum_basis.shape[-1]
                               for s in self.segments)
        if self.n_pixels <= self.n_continuum + len(self.parameter_names):
            raise FitError(f"only {self.n_pixels} usable pixels for {len(self.parameter_names)} "
                           f"parameters and {self.n_continuum} continuum coefficients; unmask "
                           "more pixels or lower continuum_degree")

    # ----------------------------------------------------------------- set-up
    def _margin_kms(self, resolution_min: float | None) -> float:
        """Velocity half-width of the broadening kernels (rotation + 4ζ of the macroturbulence
        + 5σ of the LSF) + 3 pixels."""
        lsf_kms = 0.0 if resolution_min is None else 5.0 * C_KMS / resolution_min / 2.3548
        macro_kms = 4.0 * (self.vmac_bounds[1] if self.fit_vmac else self.macroturbulence or 0.0)
        return (self.vsini_bounds[1] if self.rotation else 0.0) + lsf_kms + macro_kms \
            + 3 * self.velocity_step

    def _per_order(self, value, n_orders: int, n_pix: int, exposure: int, what: str):
        """Expand a scalar / per-order / per-pixel setting to one entry per order."""
        if value is None or np.ndim(value) == 0:
            return [value] * n_orders
        if isinstance(value, list | tuple) and len(value) == len(self.exposures) \
                and len(self.exposures) > 1:
            return self._per_order(value[exposure], n_orders, n_pix, 0, what)
        arr = np.asarray(value, float)
        if arr.shape == (n_orders,):
            return [float(v) for v in arr]
        if arr.shape == (n_pix,) and n_orders == 1:
            return [arr]
        if arr.shape == (n_orders, n_pix):
            return list(arr)
        raise InvalidSpectrumError(
            f"{what} has shape {arr.shape}; pass a scalar, one value per order ({n_orders},) or "
            f"one per pixel ({n_orders}, {n_pix})")

    def _prepare(self, resolution, telluric) -> list[SegmentData]:
        segments: list[SegmentData] = []
        coverage = []
        for e, spec in enumerate(self.exposures):
            if not spec.has_uncertainty:
                raise InvalidSpectrumError(
                    f"exposure {e} has no uncertainties (sigma); a fit needs them: pass "
                    "sigma/ivar when building the spectrum, or estimate them from the flux "
                    "with photosphere.ops.noise.with_uncertainty(spectrum) (DER_SNR; "
                    "photosphere.fit does this itself and notes it in the result)")
            rows = _rows(spec)
            n_orders, n_pix = len(rows), len(rows[0][0])
            res = self._per_order(resolution, n_orders, n_pix, e, "resolution")
            tel = telluric if isinstance(telluric, Spectrum) else \
                self._per_order(telluric, n_orders, n_pix, e, "telluric")
            for o, (wave, flux, sigma, mask) in enumerate(rows):
                wave = self._to_model_medium(wave, spec.medium)
                coverage.append((float(wave[0]), float(wave[-1])))
                r = res[o]
                r_min = None if r is None else float(np.min(r))
                if r_min is not None and r_min <= 0:
                    raise FitError(f"resolution must be positive, got {r_min}")
                margin = self._margin_kms(r_min)
                d_lo = math.sqrt((1 + self.rv_bounds[0] / C_KMS) / (1 - self.rv_bounds[0] / C_KMS))
                d_hi = math.sqrt((1 + self.rv_bounds[1] / C_KMS) / (1 - self.rv_bounds[1] / C_KMS))
                need_lo = wave / d_hi * (1 - margin / C_KMS)
                need_hi = wave / d_lo * (1 + margin / C_KMS)
                ivar = np.where(mask | self._model_masked(wave), 0.0,
                                spec.ivar[o] if isinstance(spec, EchelleSpectrum) else spec.ivar)
                name = self._segment_name(spec, e, o)
                for w, (a, b) in enumerate(self.model_runs):
                    # one segment per order and model window: its pixels the window predicts
                    wmin, wmax = self.model_wavelength[a], self.model_wavelength[b - 1]
                    good = (need_lo >= wmin) & (need_hi <= wmax) & (ivar > 0)
                    seg = self._segment(wave, flux, sigma, ivar, good, need_lo, need_hi, r,
                                        tel if isinstance(tel, Spectrum) else tel[o],
                                        spec.medium, (a, b), e, o,
                                        name if len(self.model_runs) == 1 else
                                        f"{name}{', ' if name else ''}window {w}")
                    if seg is not None:
                        segments.append(seg)
        if not segments:
            wmin, wmax = float(self.model_wavelength[0]), float(self.model_wavelength[-1])
            lo = min(c[0] for c in coverage)
            hi = max(c[1] for c in coverage)
            raise OutOfGridError(
                f"no observed pixel can be predicted by the model: the spectrum covers "
                f"{lo:.1f}-{hi:.1f} Å, the model {wmin:.1f}-{wmax:.1f} Å (less the margin for rv "
                f"in {self.rv_bounds} km/s and broadening); use a model covering the spectrum, "
                "narrow rv_bounds, or check that some pixels are unmasked")
        return segments

    def _model_masked(self, wave: np.ndarray) -> np.ndarray:
        """Observed pixels (``wave`` in the model's medium) that fall on the model's own mask
        (``model.model_mask``, e.g. lines a line calibration found bad), placed in the rest
        frame at the middle of the RV bounds."""
        model_mask = getattr(self.model, "model_mask", None)
        if model_mask is None or not np.any(model_mask):
            return np.zeros(len(wave), bool)
        rv = 0.5 * (self.rv_bounds[0] + self.rv_bounds[1])
        rest = np.asarray(wave, float) / doppler.doppler_factor(rv)
        return np.interp(rest, self.model_wavelength, np.asarray(model_mask, float),
                         left=0.0, right=0.0) > 0

    def _segment(self, wave, flux, sigma, ivar, good, need_lo, need_hi, r, tel_row, medium,
                 run: tuple[int, int], e: int, o: int, name: str) -> SegmentData | None:
        """The pixels ``good`` of one order, cropped to their span, predicted by the model
        pixels of ``run``; None when too few pixels are left for the continuum."""
        n_keep = int(good.sum())
        if n_keep < self._n_basis(wave, good) + 2:
            return None
        # crop to the predictable span: pixels the model cannot reach are not carried
        k0, k1 = int(np.flatnonzero(good)[0]), int(np.flatnonzero(good)[-1]) + 1
        wave, flux, sigma, good, ivar, need_lo, need_hi = (
            np.array(x[k0:k1]) for x in (wave, flux, sigma, good, ivar, need_lo, need_hi))
        if r is not None and np.ndim(r) == 1:
            r = np.asarray(r)[k0:k1]
        if tel_row is not None and not isinstance(tel_row, Spectrum):
            tel_row = np.asarray(tel_row, float)[k0:k1]
        a, b = run
        log_model = np.log(self.model_wavelength[a:b])
        i0 = a + max(int(np.searchsorted(log_model, np.log(need_lo[good].min()))) - 2, 0)
        i1 = a + min(int(np.searchsorted(log_model, np.log(need_hi[good].max()))) + 2, b - a)
        res_seg = r
        if r is not None and np.ndim(r) == 1:
            res_seg = torch.as_tensor(np.interp(self.model_wavelength[i0:i1], wave, r),
                                      dtype=DTYPE)
        return SegmentData(
            wavelength=torch.as_tensor(np.array(wave, float), dtype=DTYPE),
            edges=resample.pixel_edges(torch.as_tensor(np.array(wave, float), dtype=DTYPE)),
            flux=torch.as_tensor(np.where(good, flux, 0.0), dtype=DTYPE),
            ivar=torch.as_tensor(np.where(good, ivar, 0.0), dtype=DTYPE),
            sigma=np.where(good, sigma, np.inf), mask=~good,
            model_slice=(i0, i1), exposure=e, order=o, name=name,
            continuum_basis=self._continuum_basis(wave, good),
            telluric=self._telluric_row(tel_row, wave, medium),
            resolution=res_seg)

    def _n_basis(self, wave: np.ndarray, good: np.ndarray) -> int:
        """Number of continuum coefficients a segment of these pixels gets."""
        if self.continuum_degree is None or not good.any():
            return 0
        if self.continuum_knot_spacing is None:
            return self.continuum_degree + 1
        if holds_balmer_line(wave, good):
            return 2
        span = float(wave[good].max() - wave[good].min())
        return max(1, round(span / self.continuum_knot_spacing)) + 3

    def _continuum_basis(self, wave: np.ndarray, good: np.ndarray) -> torch.Tensor | None:
        if self.continuum_degree is None:
            return None
        if self.continuum_knot_spacing is None:
            basis = chebyshev_basis(wave, good, self.continuum_degree)
        elif holds_balmer_line(wave, good):
            basis = chebyshev_basis(wave, good, 1)
        else:
            basis = spline_basis(wave, good, self.continuum_knot_spacing)
        return torch.as_tensor(basis, dtype=DTYPE)

    def _to_model_medium(self, wave: np.ndarray, medium: str) -> np.ndarray:
        if medium == self.model.medium:
            return np.asarray(wave, float)
        from ..ops import airvac

        convert = airvac.air_to_vacuum if medium == "air" else airvac.vacuum_to_air
        return np.asarray(convert(np.asarray(wave, float)), float)

    @staticmethod
    def _segment_name(spec, exposure: int, order: int) -> str:
        name = f"exposure {exposure}" if exposure else ""
        if isinstance(spec, EchelleSpectrum):
            name += f"{', ' if name else ''}order {int(spec.order_numbers[order])}"
        return name

    def _telluric_row(self, tel, wave: np.ndarray, medium: str) -> torch.Tensor | None:
        if tel is None:
            return None
        if isinstance(tel, Spectrum):
            t_wave = self._to_model_medium(tel.wavelength, tel.medium)
            if t_wave[0] > wave[0] or t_wave[-1] < wave[-1]:
                raise InvalidSpectrumError(
                    f"the telluric transmission covers {t_wave[0]:.1f}-{t_wave[-1]:.1f} Å but a "
                    f"segment spans {wave[0]:.1f}-{wave[-1]:.1f} Å; pass a transmission covering "
                    "the observation")
            row = resample.rebin(torch.as_tensor(np.array(t_wave, float), dtype=DTYPE),
                                 torch.as_tensor(np.array(tel.flux, float), dtype=DTYPE),
                                 torch.as_tensor(wave, dtype=DTYPE))
        else:
            row = torch.as_tensor(np.array(tel, float), dtype=DTYPE)
        if not torch.all(torch.isfinite(row)) or torch.any(row < 0):
            raise InvalidSpectrumError("telluric transmission must be finite and >= 0")
        return row

    # ----------------------------------------------------------------- evaluation
    def split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``theta (..., n_params)`` -> labels ``(..., n_labels)``, vsini ``(...)`` or None,
        rv ``(..., n_exposures)`` (a fitted ``vmac`` comes from :meth:`vmac_of`)."""
        labels = theta[..., :self.n_labels]
        k = self.n_labels
        vsini = None
        if self.rotation:
            vsini = theta[..., k]
            k += 1
        return labels, vsini, theta[..., k + int(self.fit_vmac):]

    def vmac_of(self, theta: torch.Tensor) -> torch.Tensor | None:
        """The fitted macroturbulence ``(...)`` km/s in ``theta``, or None when not fitted."""
        if not self.fit_vmac:
            return None
        return theta[..., self.n_labels + int(self.rotation)]

    def _macro_kernel(self) -> torch.Tensor | None:
        """The macroturbulence kernel ``(taps,)`` on the model grid, or None (cached)."""
        if self.macroturbulence is None:
            return None
        if "_macro" not in self.__dict__:
            self.__dict__["_macro"] = None if self.macroturbulence == 0 else \
                macroturbulence.radial_tangential_kernel(self.velocity_step, self.macroturbulence)
        return self.__dict__["_macro"]

    def _lsf_kernel(self, resolution: float) -> torch.Tensor:
        """The Gaussian LSF kernel ``(taps,)`` of a constant R on the model grid, convolved with
        the macroturbulence kernel when there is one (cached)."""
        cache = self.__dict__.setdefault("_lsf_kernels", {})
        if resolution not in cache:
            kernel = self._gaussian_kernel(resolution)
            macro = self._macro_kernel()
            if macro is not None:
                kernel = _compose(macro, kernel)
            cache[resolution] = kernel
        return cache[resolution]

    def _rotation_kernel(self, vsini: torch.Tensor) -> torch.Tensor:
        """Rotation kernels ``(B, taps)`` for ``vsini (B,)``. Under forward-mode autodiff the
        kernel is built on the primal values and its tangent attached as ``∂K/∂vsini ×
        tangent`` (central difference of the kernel, 1e-4 km/s, relative error ~1e-8): the
        quadrature behind the kernel is many small operations whose dual versions cost more
        than the whole rest of the chain."""
        primal, tangent = fwAD.unpack_dual(vsini)
        if tangent is None:
            return rotation.rotation_kernel(self.velocity_step, vsini, self.epsilon)
        h = 1e-4
        with torch.no_grad():
            shifted = torch.cat([primal, (primal - h).clamp_min(0.0), primal + h])
            k = rotation.rotation_kernel(self.velocity_step, shifted, self.epsilon)
        k0, k_lo, k_hi = k.chunk(3)
        step = (primal + h - (primal - h).clamp_min(0.0)).unsqueeze(-1)
        return fwAD.make_dual(k0, (k_hi - k_lo) / step * tangent.unsqueeze(-1))

    def _vmac_kernel(self, vmac: torch.Tensor) -> torch.Tensor:
        """Macroturbulence kernels ``(B, taps)`` for fitted ``vmac (B,)``, one width for the whole
        ``vmac_bounds`` (so rows stack and the margin holds)."""
        half = max(1, math.ceil(4.0 * self.vmac_bounds[1] / self.velocity_step))
        return macroturbulence.radial_tangential_kernel(self.velocity_step, vmac.clamp_min(0.0),
                                                        half_width=half)

    def broadened(self, labels: torch.Tensor, vsini: torch.Tensor | None,
                  vmac: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Rest-frame model flux after rotation, macroturbulence and LSF, per segment
        ``(..., n_model_slice)``.

        Rows of a batch ``(B, ·)`` that repeat each other's labels (and broadening) are
        computed once: the finite-difference Jacobian's rows for vsini and RV share the model
        prediction of the base row, and its RV row the broadened spectrum too."""
        parts = [labels] + [x.unsqueeze(-1) for x in (vsini, vmac) if x is not None]
        keys = torch.cat([torch.as_tensor(p, dtype=DTYPE) for p in parts], -1)
        if keys.ndim == 2 and len(keys) > 2 and not _differentiated(keys):
            unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
            if len(unique) < len(keys):
                n = labels.shape[-1]
                label_rows, label_inverse = torch.unique(unique[:, :n], dim=0,
                                                         return_inverse=True)
                flux = self.model.predict(label_rows)[label_inverse]
                rest = iter(unique[:, n + i] for i in range(unique.shape[1] - n))
                vs = next(rest) if vsini is not None else None
                vm = next(rest) if vmac is not None else None
                return [f.squeeze(-2)[inverse]
                        for f in self.broaden(flux.unsqueeze(-2), vs, vm)]
        flux = self.model.predict(labels)
        return [f.squeeze(-2) for f in self.broaden(flux.unsqueeze(-2), vsini, vmac)]

    def broaden(self, flux: torch.Tensor, vsini: torch.Tensor | None,
                vmac: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Rows of model flux ``(..., R, n_model)`` (the R rows of a batch element share its
        ``vsini (...)`` and ``vmac (...)``) after rotation, macroturbulence and LSF, per segment
        ``(..., R, n_model_slice)``.

        With a constant R the rotation kernel (one per batch element) and the LSF kernel are
        convolved with each other first (a few dozen taps), so the spectrum is convolved once:
        both are convolutions in velocity on the log-uniform grid, so this equals rotating then
        broadening, away from the slice ends (which the margin keeps outside the data)."""
        precision = torch.float32 if flux.dtype == torch.float32 else DTYPE
        flux = flux.to(DTYPE)
        batch, rows, n = flux.shape[:-2], flux.shape[-2], flux.shape[-1]
        flat = flux.reshape(-1, n)
        rot = None
        if vsini is not None:
            vs = torch.as_tensor(vsini, dtype=DTYPE).expand(batch).reshape(-1)
            rot = self._rotation_kernel(vs)                                  # (B, taps)
        if vmac is not None:
            vm = self._vmac_kernel(torch.as_tensor(vmac, dtype=DTYPE).expand(batch).reshape(-1))
            rot = vm if rot is None else _compose_rows(rot, vm)
        out = []
        cache: dict[tuple, torch.Tensor] = {}
        # per call: the kernel of each constant R (rotation ⊗ LSF, the same for every segment
        # of that R) and its FFTs by length, computed once for all segments
        kernels: dict = {}
        spectra: dict = {}
        for seg in self.segments:
            i0, i1 = seg.model_slice
            key = (i0, i1, id(seg.resolution) if torch.is_tensor(seg.resolution)
                   else seg.resolution)
            if key not in cache:
                f = flat[:, i0:i1]
                if torch.is_tensor(seg.resolution):
                    kernel = self._macro_kernel()
                    if rot is not None:
                        kernel = _per_row(rot if kernel is None else _compose(rot, kernel),
                                          rows)
                    if kernel is not None:
                        f = _convolve(f, kernel, precision)
                    f = lsf.instrumental_broaden(self._model_wave_t[i0:i1], f, seg.resolution)
                else:
                    if seg.resolution not in kernels:
                        kernel = (self._lsf_kernel(float(seg.resolution))
                                  if seg.resolution is not None else self._macro_kernel())
                        if rot is not None:
                            kernel = _per_row(rot if kernel is None else _compose(rot, kernel),
                                              rows)
                        kernels[seg.resolution] = kernel
                    kernel = kernels[seg.resolution]
                    if kernel is not None:
                        f = _convolve(f, kernel, precision, spectra)
                cache[key] = f.reshape(*batch, rows, i1 - i0)
            out.append(cache[key])
        return out

    def _stellar_kernel(self, vsini: torch.Tensor | None, vmac: torch.Tensor | None
                        ) -> torch.Tensor | None:
        """The star's own broadening (rotation ⊗ fitted or fixed macroturbulence) as kernels
        ``(B, taps)`` for ``vsini``, ``vmac`` ``(B,)``, ``(taps,)`` (fixed macroturbulence
        only), or None (none)."""
        kernel = None if vsini is None else self._rotation_kernel(vsini)
        if vmac is not None:
            vm = self._vmac_kernel(vmac)
            kernel = vm if kernel is None else _compose_rows(kernel, vm)
        macro = self._macro_kernel()
        if macro is not None:
            kernel = macro if kernel is None else _compose(kernel, macro)
        return kernel

    def _gaussian_kernel(self, resolution: float) -> torch.Tensor:
        """The Gaussian LSF kernel ``(taps,)`` of a constant R alone (cached)."""
        cache = self.__dict__.setdefault("_gaussian_kernels", {})
        if resolution not in cache:
            cache[resolution] = lsf.gaussian_kernel(self.velocity_step, resolution).to(DTYPE)
        return cache[resolution]

    def _transmit(self, flux: torch.Tensor, seg: SegmentData, rv: torch.Tensor) -> torch.Tensor:
        """``flux (B, n_slice)`` on segment ``seg``'s model slice (rest frame) times the fitted
        transmission at the observed wavelengths λ · D(rv), ``rv (B,)`` km/s."""
        i0, i1 = seg.model_slice
        observed = self._model_wave_t[i0:i1] * doppler.doppler_factor(rv).unsqueeze(-1)
        return flux * torch.stack([self.transmission(w) for w in observed])

    def _instrument(self, flux: torch.Tensor, seg: SegmentData) -> torch.Tensor:
        """``flux (B, n_slice)`` through segment ``seg``'s LSF (constant R, R(λ), or none)."""
        if torch.is_tensor(seg.resolution):
            i0, i1 = seg.model_slice
            return lsf.instrumental_broaden(self._model_wave_t[i0:i1], flux, seg.resolution)
        if seg.resolution is None:
            return flux
        return _convolve(flux, self._gaussian_kernel(float(seg.resolution)))

    def transmitted(self, labels: torch.Tensor, vsini: torch.Tensor | None,
                    vmac: torch.Tensor | None, rv: torch.Tensor) -> list[torch.Tensor]:
        """Rest-frame model flux per segment ``(..., n_model_slice)`` through the fitted
        transmission: rotation ⊗ macroturbulence, × T(λ · D(rv)), then the LSF (two
        convolutions; see the module docstring). labels ``(..., n_labels)``, vsini and vmac
        ``(...)`` km/s or None, rv ``(..., n_exposures)`` km/s; the batch dims broadcast."""
        flux = self.model.predict(labels).to(DTYPE)
        shapes = [flux.shape[:-1], rv.shape[:-1]] + [x.shape for x in (vsini, vmac)
                                                      if x is not None]
        batch = np.broadcast_shapes(*shapes)
        flat = flux.expand(*batch, flux.shape[-1]).reshape(-1, flux.shape[-1])
        rvs = rv.expand(*batch, rv.shape[-1]).reshape(-1, rv.shape[-1])
        kernel = self._stellar_kernel(
            *(None if x is None else torch.as_tensor(x, dtype=DTYPE).expand(batch).reshape(-1)
              for x in (vsini, vmac)))
        out = []
        for seg in self.segments:
            i0, i1 = seg.model_slice
            f = flat[:, i0:i1]
            if kernel is not None:
                f = _convolve(f, kernel)
            f = self._instrument(self._transmit(f, seg, rvs[:, seg.exposure]), seg)
            out.append(f.reshape(*batch, i1 - i0))
        return out

    def observed_transmission(self, rv: torch.Tensor) -> list[torch.Tensor]:
        """The fitted transmission alone as observed, per segment ``(..., n_pix)``: T(λ · D(rv))
        through the LSF, shifted and rebinned like the star (a figure's telluric component).
        rv ``(..., n_exposures)`` km/s."""
        rvs = rv.reshape(-1, rv.shape[-1])
        out = []
        for seg in self.segments:
            i0, i1 = seg.model_slice
            ones = torch.ones(rvs.shape[0], i1 - i0, dtype=DTYPE)
            f = self._instrument(self._transmit(ones, seg, rvs[:, seg.exposure]), seg)
            out.append(f.reshape(*rv.shape[:-1], i1 - i0))
        return self.resampled(out, rv)

    def _shifted_rebin(self, seg: SegmentData, flux: torch.Tensor, rv: torch.Tensor
                       ) -> torch.Tensor:
        """``ops.resample.rebin(shift_wavelength(model_wave, rv), flux, seg.wavelength)`` for a
        log-uniform model slice, without a search: a Doppler shift is a translation in ln λ, so
        the observed pixel edges divided by D(rv) fall at model edge index
        ``ln(e / (D λ_0)) / Δ + ½`` computed arithmetically. Model pixel edges are the
        log-midpoints (ops uses linear midpoints: a relative difference of order Δ² ≈ 1e-11).
        flux ``(..., n_slice)``; rv ``(...)``; returns ``(..., n_pix)``, differentiable in both.
        """
        i0, i1 = seg.model_slice
        n = i1 - i0
        lam0 = float(self.model_wavelength[i0])
        cache = self.__dict__.setdefault("_rebin", {})
        if (i0, i1, id(seg.edges)) not in cache:
            model_edges = lam0 * torch.exp((torch.arange(n + 1, dtype=DTYPE) - 0.5) * self._dlog)
            cache[(i0, i1, id(seg.edges))] = (
                model_edges, torch.diff(model_edges),
                torch.log(seg.edges / lam0) / self._dlog + 0.5)   # edge index position at rv=0
        model_edges, widths, position = cache[(i0, i1, id(seg.edges))]
        d = doppler.doppler_factor(rv).unsqueeze(-1)                 # (..., 1)
        edges = seg.edges / d                                        # (..., n_pix+1) rest frame
        shape = np.broadcast_shapes(edges.shape[:-1], flux.shape[:-1])
        edges = edges.expand(*shape, edges.shape[-1])
        flux = flux.expand(*shape, n)
        lo = lam0 * math.exp(-0.5 * self._dlog)
        hi = lam0 * math.exp((n - 0.5) * self._dlog)
        edges = edges.clamp(lo, hi)
        shift = torch.log(d.detach()) / self._dlog                   # (..., 1) in model pixels
        # the model pixel of each edge: floor(position - shift) within 0..n-1 (clamping first,
        # then truncating, is the same and one pass less)
        k = (position - shift).clamp_(0, n - 1).long().expand(*shape, -1)
        cum = torch.cat([torch.zeros_like(flux[..., :1]), torch.cumsum(flux * widths, -1)], -1)
        start = torch.gather(model_edges.expand(*shape, -1), -1, k)  # model_edges[k], faster
        at = torch.addcmul(torch.gather(cum, -1, k), edges - start, torch.gather(flux, -1, k))
        return torch.diff(at, dim=-1) / torch.diff(edges, dim=-1)

    def resampled(self, broadened: list[torch.Tensor], rv: torch.Tensor) -> list[torch.Tensor]:
        """Shift each segment's model by the RV of its exposure and rebin onto the observed
        pixels, times the telluric transmission: ``(..., n_pix)`` per segment (no continuum).

        ``rv`` ``(..., n_exposures)`` broadcasts against the batch dims of ``broadened``.
        """
        out = []
        for seg, f in zip(self.segments, broadened, strict=True):
            m = self._shifted_rebin(seg, f, rv[..., seg.exposure])
            if seg.telluric is not None:
                m = m * seg.telluric
            out.append(m)
        return out

    def _basis_products(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n_pix, K(K+1)/2)`` products T_j T_k (j ≤ k) of segment ``i``'s continuum basis and
        the ``(K·K,)`` index of each entry of the K × K normal matrix in them (cached; the basis
        does not change when pixels are masked). The normal matrix is symmetric: its upper
        triangle is all that is summed."""
        cache = self.__dict__.setdefault("_products", {})
        t = self.segments[i].continuum_basis
        if i not in cache:
            k = t.shape[-1]
            upper = torch.triu_indices(k, k)
            where = torch.empty(k, k, dtype=torch.long)
            where[upper[0], upper[1]] = torch.arange(upper.shape[1])
            where[upper[1], upper[0]] = torch.arange(upper.shape[1])
            cache[i] = (t[:, upper[0]] * t[:, upper[1]]).contiguous(), where.reshape(-1)
        return cache[i]

    def _weighted_basis(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment ``i``'s basis products weighted by its ``ivar`` ``(K(K+1)/2, n_pix)`` and
        ``ivar · flux · T`` ``(K, n_pix)`` (this layout: the products with the model rows are
        about twice as fast on CPU as with ``(n_pix, ·)``): the parts of the normal equations
        that do not depend on the model (cached while the segment keeps the same ``ivar`` and
        ``flux`` tensors)."""
        cache = self.__dict__.setdefault("_weighted", {})
        seg = self.segments[i]
        hit = cache.get(i)
        if hit is None or hit[0] is not seg.ivar or hit[1] is not seg.flux:
            products, _ = self._basis_products(i)
            hit = (seg.ivar, seg.flux, (products * seg.ivar[:, None]).T.contiguous(),
                   ((seg.ivar * seg.flux)[:, None] * seg.continuum_basis).T.contiguous())
            cache[i] = hit
        return hit[2], hit[3]

    def continuum(self, stellar: list[torch.Tensor], weights: list[torch.Tensor] | None = None,
                  log_det: list | None = None) -> list[torch.Tensor]:
        """Profiled continuum per segment ``(..., n_pix)``: the Chebyshev polynomial that best
        scales ``stellar`` to the data (weighted linear least squares, weights default ivar).
        When a list is passed as ``log_det``, ``log det(AᵀWA)`` per segment is appended to it."""
        if self.continuum_degree is None:
            return [torch.ones_like(s) for s in stellar]
        out = []
        for i, (seg, s) in enumerate(zip(self.segments, stellar, strict=True)):
            k = seg.continuum_basis.shape[-1]
            # normal matrix AᵀWA with A = s·T, as s² @ (w T_j T_k), j ≤ k: no (..., n_pix, K)
            # design, each symmetric pair summed once, the data's weights folded in once
            products, where = self._basis_products(i)
            if weights is None:
                weighted, data = self._weighted_basis(i)
                flat = s.reshape(-1, s.shape[-1])                                # (M, n_pix)
                upper = (weighted @ (flat * flat).T).T.reshape(*s.shape[:-1], -1)
                rhs = (data @ flat.T).T.reshape(*s.shape[:-1], k)
            else:
                ws = weights[i] * s
                upper = (ws * s) @ products
                rhs = (ws * seg.flux) @ seg.continuum_basis
            normal = upper[..., where].reshape(*upper.shape[:-1], k, k)
            eye = torch.eye(k, dtype=DTYPE)
            scale = normal.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-300)
            coef = torch.linalg.solve(normal + 1e-12 * scale[..., None, None] * eye, rhs)
            if log_det is not None:
                log_det.append(torch.linalg.slogdet(normal)[1])
            out.append(coef @ seg.continuum_basis.T)                             # (..., n_pix)
        return out

    def predict(self, theta: torch.Tensor, weights: list[torch.Tensor] | None = None,
                log_det: list | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Full model per segment ``(..., n_pix)`` and its continuum, for ``theta (...,
        n_params)`` in physical units (``log_det``: see :meth:`continuum`)."""
        stellar = self.stellar(torch.as_tensor(theta, dtype=DTYPE))
        cont = self.continuum(stellar, weights, log_det)
        return [s * c for s, c in zip(stellar, cont, strict=True)], cont

    def stellar(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """The model without continuum per segment ``(..., n_pix)`` for ``theta (...,
        n_params)``: broadened, shifted and rebinned (:meth:`broadened`, :meth:`resampled`), or
        through the fitted transmission before the LSF (:meth:`transmitted`)."""
        labels, vsini, rv = self.split(theta)
        vmac = self.vmac_of(theta)
        if self.transmission is None:
            return self.resampled(self.broadened(labels, vsini, vmac), rv)
        return self.resampled(self.transmitted(labels, vsini, vmac, rv), rv)

    def stellar_and_templates(self, theta: torch.Tensor
                              ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per segment, the model without continuum ``(..., n_pix)`` (as :meth:`resampled`) and
        the model's error templates (``predict_error_templates``) through the same linear chain
        (rotation, LSF, Doppler shift, rebinning, × telluric): ``(..., K, n_pix)``."""
        if self.transmission is not None:
            raise FitError("model error templates through a fitted transmission are not "
                           "supported; pass the tellurics as a fixed transmission")
        theta = torch.as_tensor(theta, dtype=DTYPE)
        labels, vsini, rv = self.split(theta)
        flux = self.model.predict(labels)
        templates = self.model.predict_error_templates(labels).to(flux.dtype)
        rows = self.broaden(torch.cat([flux.unsqueeze(-2), templates], -2), vsini,
                            self.vmac_of(theta))
        out = self.resampled(rows, rv.unsqueeze(-2))
        return [o[..., 0, :] for o in out], [o[..., 1:, :] for o in out]

    def model_variance(self, theta: torch.Tensor, continuum: list[torch.Tensor]
                       ) -> list[torch.Tensor] | None:
        """The model's own variance (``predict_variance``, e.g. emulator error) carried to the
        observed pixels (rebinned as if fully correlated within a pixel) times continuum², or
        None when the model has none."""
        if not hasattr(self.model, "predict_variance"):
            return None
        labels, _, rv = self.split(torch.as_tensor(theta, dtype=DTYPE))
        var = self.model.predict_variance(labels).to(DTYPE)
        out = []
        for seg, c in zip(self.segments, continuum, strict=True):
            i0, i1 = seg.model_slice
            v = self._shifted_rebin(seg, var[..., i0:i1], rv[..., seg.exposure])
            out.append(v.clamp_min(0) * c ** 2)
        return out

    # ----------------------------------------------------------------- helpers
    def masked(self, extra: Sequence[np.ndarray]) -> ObservationChain:
        """A copy of this chain with more pixels masked: ``extra`` holds one bool array per
        segment, shaped like its pixels (True = drop). The model and settings are shared."""
        if len(extra) != len(self.segments):
            raise FitError(f"masked() needs one mask per segment ({len(self.segments)}), got "
                           f"{len(extra)}")
        out = copy.copy(self)
        segments = []
        for seg, drop in zip(self.segments, extra, strict=True):
            drop = np.asarray(drop, bool) | seg.mask
            keep = torch.as_tensor(~drop)
            segments.append(dataclasses.replace(
                seg, ivar=torch.where(keep, seg.ivar, 0.0),
                flux=torch.where(keep, seg.flux, 0.0), sigma=np.where(drop, np.inf, seg.sigma),
                mask=drop))
        out.segments = segments
        out.__dict__.pop("_weighted", None)  # the copy's own cache (ivar and flux changed)
        out.n_pixels = int(sum(int((s.ivar > 0).sum()) for s in segments))
        if out.n_pixels <= out.n_continuum + len(out.parameter_names):
            raise FitError(f"only {out.n_pixels} usable pixels left after masking; mask fewer")
        return out

    def inflated(self, jitter: float, model: Sequence[torch.Tensor]) -> ObservationChain:
        """A copy of this chain whose pixel variances include a misfit term:
        ``σ² + (jitter · model)²`` per segment, ``model`` the best-fit full model of each
        segment (so ``jitter`` is a fraction of the flux level). Masks are kept."""
        if not (math.isfinite(jitter) and jitter >= 0):
            raise FitError(f"jitter={jitter} must be a finite fraction of the flux >= 0")
        out = copy.copy(self)
        segments = []
        for seg, m in zip(self.segments, model, strict=True):
            var = torch.as_tensor(seg.sigma, dtype=DTYPE) ** 2 + (jitter * m.detach()) ** 2
            keep = seg.ivar > 0
            segments.append(dataclasses.replace(
                seg, ivar=torch.where(keep, 1.0 / var, 0.0),
                sigma=np.where(keep.numpy(), var.sqrt().numpy(), np.inf)))
        out.segments = segments
        out.__dict__.pop("_products", None)
        out.__dict__.pop("_weighted", None)
        return out

    def theta_from(self, values: Mapping[str, float]) -> np.ndarray:
        """Parameter vector from a ``{name: value}`` mapping (``rv`` fills every exposure)."""
        out = []
        for n in self.parameter_names:
            if n in values:
                out.append(float(values[n]))
            elif n.startswith("rv_") and "rv" in values:
                out.append(float(values["rv"]))
            else:
                raise FitError(f"no value for parameter {n!r}; give one of "
                               f"{list(self.parameter_names)}")
        return np.array(out)

    @property
    def lower(self) -> np.ndarray:
        return np.array([self.bounds[n][0] for n in self.parameter_names])

    @property
    def upper(self) -> np.ndarray:
        return np.array([self.bounds[n][1] for n in self.parameter_names])
