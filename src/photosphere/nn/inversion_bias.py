"""The network's own inversion bias at the labels it read, removed with its training model.

A network's μ on its own syntheses is not their labels: trained on a finite set with noise it
pulls towards the box's centre and couples the labels' errors (on the benchmark stars' twins,
the optical networks trained on the calibrated emulator are 49–70 K / 0.10–0.15 / 0.07–0.11 dex
off, log g low on the dwarfs: docs/nn.md). That bias at the labels a spectrum was read as can
be measured without any real star: image the training model T at θ as the spectrum was imaged
(its R, the network's vsini, its S/N per row, its blank windows), read the images, compare. The
labels whose images the network reads as it read the spectrum solve

    N(T(θ)) = μ,   iterated as   θ ← θ + (μ − N(T(θ)))   from θ = μ,

``rounds`` times, each with ``draws`` noise realisations (fixed seeds: the same spectrum gives
the same answer). Only syntheses enter, so the correction is leave-one-out by construction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: rounds of θ ← θ + (μ − N(T(θ)))
BIAS_ROUNDS = 2
#: noise realisations per round
BIAS_DRAWS = 4


def row_noise(image: np.ndarray) -> np.ndarray:
    """(n_orders,) noise σ per row of a normalised image (DER_SNR; 0 for blank or noiseless
    rows)."""
    from ..ops.noise import estimate_snr

    img = np.asarray(image, dtype=float)
    sigma = np.zeros(img.shape[0])
    rows = ~np.all(img == 1.0, axis=-1)
    if rows.any():
        snr = np.atleast_1d(np.asarray(estimate_snr(img[rows]), dtype=float))
        ok = np.isfinite(snr) & (snr > 0)
        sigma[rows] = np.where(ok, 1.0 / np.where(ok, snr, 1.0), 0.0)
    return sigma


def remove_inversion_bias(mu: np.ndarray, image: np.ndarray,
                          run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                          model_image: Callable[[np.ndarray], np.ndarray], *,
                          quiet: np.ndarray | None = None, rounds: int = BIAS_ROUNDS,
                          draws: int = BIAS_DRAWS) -> np.ndarray:
    """The labels θ with N(T(θ)) = ``mu`` (module docstring).

    mu: (k,) the network's labels for ``image`` (n_orders, n_pixels, as it read it: rows
    normalised, blank rows all 1); run: the network, image -> (μ (k,), Σ); model_image: θ (k,)
    -> the training model's noise-free normalised image at θ, imaged as ``image`` was; quiet:
    (n_orders, n_pixels) True where ``image`` holds model values rather than data (no noise is
    added there) -> θ (k,).
    """
    from .twin import noisy_copies

    mu = np.asarray(mu, dtype=float)
    img = np.asarray(image, dtype=float)
    blank = np.all(img == 1.0, axis=-1)
    sigma = row_noise(img)
    keep = np.broadcast_to(~blank[:, None], img.shape).copy()
    if quiet is not None:
        keep = keep & ~np.asarray(quiet, dtype=bool)
    theta = mu.copy()
    for r in range(rounds):
        clean = np.array(model_image(theta), dtype=float)
        clean[blank] = 1.0
        copies = noisy_copies(clean, sigma, seeds=[1000 * r + d for d in range(draws)],
                              keep=keep)
        copies[:, blank] = 1.0
        read = np.mean([run(c)[0] for c in copies], axis=0)
        theta = theta + (mu - read)
    return theta
