"""Sparse line-by-line opacity model: every line evaluated only inside its own pixel window.

The normalised flux is ``exp(−τ(λ))`` with ``τ(λ) = Σ_i A_i φ(λ − λ_i; σ_i, γ_i)``, φ an
area-normalised Voigt or pseudo-Voigt (Å⁻¹) and ``A_i`` the line's opacity area (Å). We sum
optical depths rather than multiplying ``(1 − depth_i)`` factors as blasé does: for weak lines
the two agree, ``exp(−τ)`` stays positive in saturated blends, and a telluric or continuum factor
composes by adding to τ (or multiplying the flux).

Sparse evaluation: line ``i`` covers the contiguous pixel block ``start_i … start_i + W − 1``
where ``start_i = searchsorted(λ, λ_i − half_window)`` and ``W`` pixels span ``2·half_window``.
The (n_lines, W) block of offsets is gathered by index arithmetic, evaluated once, and summed
into the spectrum with ``index_add_``, so the cost grows with lines × window, not lines × pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ...errors import ModelError
from .profiles import get_profile

_DTYPE = torch.float64


def _as_tensor(value, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(value, dtype=float), dtype=_DTYPE)
    if t.ndim != 1:
        raise ModelError(f"{name} must be 1-D (n_lines,), got shape {tuple(t.shape)}")
    if not torch.all(torch.isfinite(t)):
        raise ModelError(f"{name} contains NaN or inf; every line needs finite parameters")
    return t


def window_pixels(wavelength: torch.Tensor, half_window: float) -> int:
    """Pixels W that cover ``2·half_window`` Å at the finest step of ``wavelength`` (Å).

    Never more than the spectrum itself: a window longer than the data is the whole spectrum.
    """
    step = float(torch.min(torch.diff(wavelength)))
    return min(math.ceil(2.0 * half_window / step) + 1, int(wavelength.shape[-1]))


def window_starts(wavelength: torch.Tensor, centre: torch.Tensor, half_window: float,
                  n_window: int) -> torch.Tensor:
    """First pixel index of each line's window, clamped so the block stays on the grid."""
    n_pix = wavelength.shape[-1]
    start = torch.searchsorted(wavelength, centre.detach() - half_window)
    return torch.clamp(start, 0, n_pix - n_window)


def sparse_opacity(wavelength: torch.Tensor, centre: torch.Tensor, amplitude: torch.Tensor,
                   sigma: torch.Tensor, gamma: torch.Tensor, *, half_window: float,
                   profile: str = "pseudo_voigt",
                   window_centre: torch.Tensor | None = None) -> torch.Tensor:
    """τ(λ) summed over lines, each evaluated on its own window.

    wavelength: (n_pix,) increasing Å; centre, amplitude (Å), sigma (Å), gamma (Å): (n_lines,).
    window_centre: (n_lines,) Å where the windows are anchored (default: ``centre``).
    Returns (n_pix,) optical depth; differentiable in all line parameters.
    """
    if centre.numel() == 0:
        return torch.zeros_like(wavelength)
    n_window = window_pixels(wavelength, half_window)
    anchor = centre if window_centre is None else window_centre
    start = window_starts(wavelength, anchor, half_window, n_window)
    index = start[:, None] + torch.arange(n_window, device=wavelength.device)  # (n_lines, W)
    offset = wavelength[index] - centre[:, None]
    phi = get_profile(profile)(offset, sigma[:, None], gamma[:, None])
    tau = torch.zeros_like(wavelength)
    # lines beyond their window contribute nothing: zero the part outside ±half_window
    inside = offset.abs() <= half_window
    contribution = torch.where(inside, amplitude[:, None] * phi, torch.zeros_like(phi))
    return tau.index_add(0, index.reshape(-1), contribution.reshape(-1))


def dense_opacity(wavelength: torch.Tensor, centre: torch.Tensor, amplitude: torch.Tensor,
                  sigma: torch.Tensor, gamma: torch.Tensor, *, half_window: float | None = None,
                  profile: str = "pseudo_voigt") -> torch.Tensor:
    """Reference τ(λ): every line on every pixel (n_lines × n_pix; for tests and small cases)."""
    offset = wavelength[None, :] - centre[:, None]
    phi = get_profile(profile)(offset, sigma[:, None], gamma[:, None])
    contribution = amplitude[:, None] * phi
    if half_window is not None:
        contribution = torch.where(offset.abs() <= half_window, contribution,
                                   torch.zeros_like(contribution))
    return contribution.sum(0)


class LineModel(torch.nn.Module):
    """A spectrum as a set of lines with learnable centre, opacity area, σ and γ.

    centre: (n_lines,) Å; amplitude: (n_lines,) opacity area A (Å, > 0); sigma: Gaussian σ (Å);
    gamma: Lorentzian HWHM (Å). Stored as ``centre`` and logarithms (``log_amplitude``,
    ``log_sigma``, ``log_gamma``) so positivity holds during fitting, and the centre as
    ``reference_centre + centre_shift``. ``half_window`` (Å) is the
    half width over which each line is evaluated; ``profile`` is ``"pseudo_voigt"`` (fast) or
    ``"voigt"`` (exact).
    """

    def __init__(self, centre, amplitude, sigma, gamma, *, half_window: float = 1.5,
                 profile: str = "pseudo_voigt", wavelength_range: Sequence[float] | None = None):
        super().__init__()
        get_profile(profile)
        c, a, s, g = (_as_tensor(v, n) for v, n in ((centre, "centre"), (amplitude, "amplitude"),
                                                     (sigma, "sigma"), (gamma, "gamma")))
        if not (c.shape == a.shape == s.shape == g.shape):
            raise ModelError("centre, amplitude, sigma and gamma must have the same length; got "
                             f"{[tuple(t.shape) for t in (c, a, s, g)]}")
        for t, n in ((a, "amplitude"), (s, "sigma"), (g, "gamma")):
            if torch.any(t <= 0):
                raise ModelError(f"{n} must be > 0 for every line (min {float(t.min()):.3g}); "
                                 "drop those lines or floor them")
        if half_window <= 0:
            raise ModelError(f"half_window={half_window} Å must be > 0")
        self.half_window = float(half_window)
        self.profile = profile
        self.wavelength_range = (tuple(float(v) for v in wavelength_range)
                                 if wavelength_range is not None
                                 else (float(c.min()) - half_window, float(c.max()) + half_window))
        # centres are learned as shifts from where the line was found: well scaled for the
        # optimiser, and the pixel windows stay anchored on the reference centre
        self.register_buffer("reference_centre", c)
        self.centre_shift = torch.nn.Parameter(torch.zeros_like(c))
        self.log_amplitude = torch.nn.Parameter(torch.log(a))
        self.log_sigma = torch.nn.Parameter(torch.log(s))
        self.log_gamma = torch.nn.Parameter(torch.log(g))

    @property
    def n_lines(self) -> int:
        return int(self.reference_centre.shape[0])

    @property
    def centre(self) -> torch.Tensor:
        return self.reference_centre + self.centre_shift

    @property
    def amplitude(self) -> torch.Tensor:
        return torch.exp(self.log_amplitude)

    @property
    def sigma(self) -> torch.Tensor:
        return torch.exp(self.log_sigma)

    @property
    def gamma(self) -> torch.Tensor:
        return torch.exp(self.log_gamma)

    def opacity(self, wavelength: torch.Tensor, *, amplitude_scale: torch.Tensor | None = None
                ) -> torch.Tensor:
        """τ(λ) on ``wavelength`` (n_pix,) Å; ``amplitude_scale`` multiplies every A_i."""
        amplitude = self.amplitude if amplitude_scale is None else self.amplitude * amplitude_scale
        return sparse_opacity(wavelength, self.centre, amplitude, self.sigma, self.gamma,
                              half_window=self.half_window, profile=self.profile,
                              window_centre=self.reference_centre)

    def forward(self, wavelength: torch.Tensor) -> torch.Tensor:
        """Normalised flux exp(−τ) on ``wavelength`` (n_pix,) Å."""
        return torch.exp(-self.opacity(wavelength))

    @torch.no_grad()
    def depth(self) -> np.ndarray:
        """Central depth 1 − exp(−A φ(0)) of each line alone, (n_lines,)."""
        zero = torch.zeros_like(self.reference_centre)
        phi0 = get_profile(self.profile)(zero, self.sigma, self.gamma)
        return (1.0 - torch.exp(-self.amplitude * phi0)).cpu().numpy()

    @torch.no_grad()
    def equivalent_width(self, n_samples: int = 1001, chunk: int = 2000) -> np.ndarray:
        """Equivalent width ∫(1 − exp(−A φ)) dλ of each line alone over its window (Å)."""
        x = torch.linspace(-self.half_window, self.half_window, n_samples, dtype=_DTYPE,
                           device=self.reference_centre.device)
        out = []
        fn = get_profile(self.profile)
        for lo in range(0, self.n_lines, chunk):
            sl = slice(lo, lo + chunk)
            tau = self.amplitude[sl, None] * fn(x[None, :], self.sigma[sl, None],
                                                self.gamma[sl, None])
            out.append(torch.trapezoid(1.0 - torch.exp(-tau), x, dim=-1))
        return torch.cat(out).cpu().numpy() if out else np.zeros(0)

    def parameters_numpy(self) -> dict[str, np.ndarray]:
        """Physical parameters as numpy arrays: centre, amplitude, sigma, gamma (Å)."""
        with torch.no_grad():
            return {"centre": self.centre.cpu().numpy(),
                    "amplitude": self.amplitude.cpu().numpy(),
                    "sigma": self.sigma.cpu().numpy(),
                    "gamma": self.gamma.cpu().numpy()}
