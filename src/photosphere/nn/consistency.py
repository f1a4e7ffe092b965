"""Is a real spectrum inside what a network was trained on? The grid's answer at its labels.

A network answers every input, an M dwarf 600 K below its grid included, with labels and σ that
look as confident as for a solar twin. The check here closes that loop: the grid the network was
trained on is asked for the image it would make at the predicted labels (same layout, R, rotation
and normalisation as training), and the input is compared with it. What is left after the
input's own noise (DER_SNR) is removed in quadrature is the *mismatch*: a few per cent of the
continuum for stars the grid describes (the UVES Sun: 0.024 with the Sun-calibrated grid, WASP-14
0.019), tens of per cent for stars it does not (Gl 273, an M dwarf: 0.25). Above
``MISMATCH_LIMIT`` the prediction is flagged out of distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: Residual rms (fraction of the continuum, noise removed) above which a spectrum is flagged:
#: 1.5× the uncorrected grid's mismatch with the real Sun (0.040), well below an M dwarf's (0.25).
MISMATCH_LIMIT = 0.06


@dataclass(frozen=True)
class Consistency:
    """rms (input − grid image at the predicted labels), the noise part and the mismatch."""

    residual_rms: float
    noise_rms: float
    mismatch_rms: float
    out_of_distribution: bool
    mismatch_limit: float = MISMATCH_LIMIT

    def to_dict(self) -> dict[str, Any]:
        return {"residual_rms": self.residual_rms, "noise_rms": self.noise_rms,
                "mismatch_rms": self.mismatch_rms, "mismatch_limit": self.mismatch_limit,
                "out_of_distribution": self.out_of_distribution}


def grid_consistency(image: np.ndarray, labels: np.ndarray, simulator,
                     macroturbulence: float = 0.0, limit: float | None = None) -> Consistency:
    """Compare a prepared input ``image`` (n_orders, n_pixels), normalised as the network saw
    it, with ``simulator``'s noise-free image at ``labels`` (teff K, logg, feh dex, vsini km/s),
    each order scaled to the input by least squares.

    simulator: the :class:`~photosphere.nn.data.EchelleSimulator` of the model's grid and
    layout; macroturbulence: ζ_RT km/s of the comparison image (a model trained with a range:
    its middle). Labels outside the grid are clipped to it (the network may answer outside).
    labels: the simulator's star-label columns (teff, logg, feh, vsini, then e.g. alpha, vmic).
    limit: the mismatch above which the input is flagged (default :data:`MISMATCH_LIMIT`; a
    model calibrated on real stars records its own, ``mismatch_limit`` in its checkpoint).
    """
    from ..ops.noise import estimate_snr
    from .data import LABELS, normalise_orders

    lab = np.array(labels, dtype=float)
    for j, name in enumerate(LABELS[:3]):
        lo, hi = simulator.source.bounds[name]
        lab[j] = min(max(lab[j], lo), hi)
    lab[3] = max(lab[3], 0.0)
    with torch.no_grad():
        zeta = torch.tensor([float(macroturbulence)]) if macroturbulence > 0 else None
        model = normalise_orders(simulator.images(torch.tensor(lab[None]),
                                                  macroturbulence=zeta)).numpy()[0]
    image = np.asarray(image, dtype=float).reshape(model.shape)
    # one scale per order (least squares): the upper-envelope normalisation of a noisy order
    # sits a fraction of σ high, which is not a mismatch of the spectrum
    scale = np.sum(image * model, axis=-1, keepdims=True) / np.sum(model * model, axis=-1,
                                                                   keepdims=True)
    # rows filled with the continuum (windows the spectrum does not cover) and pixels without
    # flux (the CCD gap of a HARPS s1d file, read by a model without windows) are not compared
    rows = ~np.all(image == 1.0, axis=-1)
    rows = rows if rows.any() else np.ones_like(rows)
    keep = rows[:, None] & (image > 0)
    residual = (image - scale * model)[keep]
    residual_rms = float(np.sqrt(np.mean(residual ** 2)))
    snr = np.asarray(estimate_snr(image[rows]), dtype=float)
    noise_rms = float(np.sqrt(np.mean(1.0 / np.square(snr[np.isfinite(snr) & (snr > 0)]))))\
        if np.any(np.isfinite(snr) & (snr > 0)) else 0.0
    mismatch = math.sqrt(max(residual_rms ** 2 - noise_rms ** 2, 0.0))
    limit = MISMATCH_LIMIT if limit is None else float(limit)
    return Consistency(residual_rms, noise_rms, mismatch, mismatch > limit, limit)
