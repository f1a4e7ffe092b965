"""Training-only augmentation against the synthetic gap: absorption the grid does not have.

Real spectra hold lines and molecular bands that a synthetic grid lacks (fitting the UVES Sun
with the embedded grid leaves ≈ 17 % of the pixels with unmodelled absorption). Those features
pull the upper-envelope continuum (:func:`~photosphere.nn.data.normalise_orders`) down, so the
modelled lines look shallower and a network trained on synthetic spectra alone reads a lower
[Fe/H]. During training, :func:`unmodelled_lines` multiplies the noise-free image by random weak
absorption lines at random positions (not tied to the grid's line list, so the network learns to
discount them and their effect on the continuum), broadened like the star's own lines (intrinsic
width + LSF, plus rotation), and :func:`curvature_factors` bends each order's continuum (a
residual the straight-line normalisation leaves behind on real, deblazed orders).

All draws come from per-sample generators, so a sample's augmentation does not depend on the
batch it lands in.
"""

from __future__ import annotations

import math

import torch

LINE_DEPTH = (0.005, 0.3)  # central optical depth of an unmodelled line, drawn log-uniformly
INTRINSIC_SIGMA_KMS = 2.0  # Gaussian σ of a narrow line: thermal + microturbulence + LSF
ROTATION_SIGMA_PER_VSINI = 0.5  # σ of the rotation kernel / vsini (ε ≈ 0.6 limb darkening)
WINDOW_SIGMAS = 4.0  # each line is drawn over ± this many σ


def pixel_velocity(wavelength: torch.Tensor) -> float:
    """Median velocity step (km/s per pixel) of a layout ``wavelength`` (n_orders, n_pixels) Å."""
    w = wavelength.double()
    step = (w[:, 1:] - w[:, :-1]) / w[:, :-1]
    return float(step.median()) * 299_792.458


def unmodelled_lines(n_orders: int, n_pixels: int, vsini: torch.Tensor, max_lines: float,
                     pixel_kms: float, generators: list[torch.Generator]) -> torch.Tensor:
    """Transmission (B, n_orders, n_pixels) of random absorption lines, ≤ 1 everywhere.

    vsini: (B,) km/s of each star (its lines widen by rotation like the grid's);
    max_lines: largest mean number of lines per order: each sample draws its own mean uniformly
    in [0, max_lines] (some samples stay clean), then a Poisson number of lines per order at
    uniform positions with central optical depths log-uniform in ``LINE_DEPTH``;
    pixel_kms: velocity step of a pixel; generators: one per sample.
    """
    b = len(generators)
    tau = torch.zeros(b, n_orders * n_pixels, dtype=torch.float32)
    lo, hi = math.log(LINE_DEPTH[0]), math.log(LINE_DEPTH[1])
    for i, g in enumerate(generators):
        rate = float(torch.rand(1, generator=g)) * max_lines
        counts = torch.poisson(torch.full((n_orders,), rate), generator=g).long()
        n = int(counts.sum())
        if n == 0:
            continue
        order = torch.repeat_interleave(torch.arange(n_orders), counts)  # (n,)
        centre = torch.rand(n, generator=g, dtype=torch.float64) * (n_pixels - 1)
        depth = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64))
        sigma_px = math.hypot(INTRINSIC_SIGMA_KMS,
                              ROTATION_SIGMA_PER_VSINI * float(vsini[i])) / pixel_kms
        half = math.ceil(WINDOW_SIGMAS * sigma_px)
        pix = centre.round().long().unsqueeze(1) + torch.arange(-half, half + 1)  # (n, w)
        profile = depth.unsqueeze(1) * torch.exp(-0.5 * ((pix - centre.unsqueeze(1))
                                                         / sigma_px) ** 2)
        inside = (pix >= 0) & (pix < n_pixels)
        flat = (order.unsqueeze(1) * n_pixels + pix)[inside]
        tau[i].index_add_(0, flat, profile[inside].float())
    return torch.exp(-tau).view(b, n_orders, n_pixels)


def curvature_factors(curvature: torch.Tensor, n_pixels: int) -> torch.Tensor:
    """curvature: (B, n_orders) fractional bow of the continuum (centre vs. ends) ->
    (B, n_orders, n_pixels) factors, 1 at both ends of an order and 1 + curvature at its centre."""
    x = torch.linspace(-1.0, 1.0, n_pixels, dtype=curvature.dtype)
    return 1 + curvature.unsqueeze(-1) * (1 - x * x)
