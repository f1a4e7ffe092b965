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

The UVES Sun's modelled lines are also shallower than the grid's at the Sun's labels: over
401 grid lines deeper than 0.1, the real/synthetic depth ratio has a median of 0.81 and a robust
scatter of 0.17 in its logarithm, with a tail of grid lines the Sun hardly shows (line-list
errors). Putting the grid's flux back wherever the real Sun is brighter moves the shipped
model's [Fe/H] for the Sun from −0.27 to −0.08 (``benchmarks/nn_sun_gap.py``); removing the
extra absorption instead leaves it at −0.27. :func:`line_strength_jitter` scales each line's
depth by its own random factor (a smooth log-normal field along the order, and a few lines
weakened a lot), so the network cannot lean on a few lines whose strength the grid may have
wrong; :func:`veil` makes every line shallower by the same fraction (scattered light, a
zero-level error), which is nearly degenerate with Z (20 % veiling moves the shipped model's
[Fe/H] for a synthetic Sun by only −0.05 dex).

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
WEAKENED_PER_SIGMA = 0.5  # line_strength_jitter: fraction of knots weakened, per unit of σ


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


def veil(images: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """images: (B, n_orders, n_pixels) normalised flux; fraction: (B,) added continuum s ->
    (f + s) / (1 + s): the continuum stays at 1 and every line depth shrinks by 1 / (1 + s)."""
    s = fraction.to(images.dtype).view(-1, 1, 1)
    return (images + s) / (1 + s)


def line_strength_jitter(images: torch.Tensor, sigma: torch.Tensor,
                         generators: list[torch.Generator], knot_pixels: int = 16) -> torch.Tensor:
    """Scale line depths by a random factor that changes from line to line.

    images: (B, n_orders, n_pixels) normalised flux f; sigma: (B,) standard deviation of the
    natural log of the factor. The log factor is σ · g, g standard normal at knots every
    ``knot_pixels`` pixels; a fraction ``WEAKENED_PER_SIGMA · σ`` of the knots is also weakened by
    a factor uniform in 0.02–1 (the heavy tail of lines a grid has and a real star hardly shows).
    The knots are interpolated linearly, rescaled to unit variance between knots as well, so
    lines closer than ``knot_pixels`` share most of their factor.
    Returns 1 − (1 − f) · factor, clipped at 0.
    """
    _, n_orders, n_pixels = images.shape
    n_knots = (n_pixels - 1) // knot_pixels + 2
    logs = []
    for s, gen in zip(sigma.tolist(), generators, strict=True):
        g = s * torch.randn(n_orders, n_knots, generator=gen)
        weakened = torch.rand(n_orders, n_knots, generator=gen) < WEAKENED_PER_SIGMA * s
        u = 0.02 + 0.98 * torch.rand(n_orders, n_knots, generator=gen)
        logs.append(g + torch.where(weakened, u.log(), torch.zeros_like(u)))
    knots = torch.stack(logs)  # (B, n_orders, n_knots) log factor
    t = torch.arange(n_pixels, dtype=torch.float32) / knot_pixels
    left = t.long()  # (P,) knot at or before each pixel
    w = t - left
    # linear interpolation, rescaled to unit variance between knots as well as on them
    field = ((1 - w) * knots[..., left] + w * knots[..., left + 1]) / torch.sqrt(
        (1 - w) ** 2 + w ** 2)
    return (1 - (1 - images) * torch.exp(field.to(images.dtype))).clamp_min(0.0)
