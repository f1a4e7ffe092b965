"""Add lines the clone lacks: significant residual absorption not covered by any model line.

A synthetic line list misses lines (e.g. Co I 5343.4 Å, molecular bands); per-line corrections
cannot create them. After a fit, :func:`find_missing_lines` looks for absorption dips in
``data / model`` deeper than ``n_sigma`` times the local noise that lie farther than
``exclusion_fwhm`` FWHM from every stellar line's observed centre, and turns each into a rest-frame
first guess. :func:`fit_adding_lines` fits, adds those lines (flagged ``added`` in the line
table) and refits.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ModelError
from ...models.lines.detect import LineGuess, _pseudo_voigt_peak, find_lines
from ...models.lines.model import LineModel
from ...models.lines.telluric import TelluricModel
from ...ops.doppler import doppler_factor
from ...spectrum import Spectrum
from .fit import FitResult, FitSettings, fit_lines


def find_missing_lines(result: FitResult, *, n_sigma: float = 5.0,
                       exclusion_fwhm: float = 1.0) -> LineGuess:
    """Rest-frame first guesses (Å) for absorption features the fitted model misses.

    result: a :func:`.fit.fit_lines` result. A feature is a minimum of data / model (masked
    pixels set to 1) whose prominence exceeds ``n_sigma`` × the median relative noise σ / model,
    farther than ``exclusion_fwhm`` × FWHM (at least 2 pixels) from every stellar line's
    observed centre. Widths start at the median σ and γ of the existing lines; the opacity area
    reproduces the observed depth. Returns an empty :class:`LineGuess` when nothing is found.
    """
    obs = result.observation
    model = result.model
    with torch.no_grad():
        flux_model = model().numpy()
    good = ~obs.mask & (flux_model > 0)
    ratio = np.where(good, obs.flux / np.where(good, flux_model, 1.0), 1.0)
    relative_noise = float(np.median(obs.sigma[good] / flux_model[good]))
    empty = LineGuess(*(np.zeros(0) for _ in range(5)))
    try:
        guess = find_lines(obs.wavelength, ratio, prominence=min(n_sigma * relative_noise, 0.5))
    except ModelError:
        return empty
    stellar = model.stellar
    with torch.no_grad():
        factor = float(doppler_factor(model.rv))
        observed = (stellar.centre * factor).numpy()
        fwhm = (2.3548 * stellar.sigma + 2.0 * stellar.gamma).numpy() * factor
    step = float(np.median(np.diff(obs.wavelength)))
    reach = np.maximum(exclusion_fwhm * fwhm, 2.0 * step)
    nearest = np.searchsorted(observed, guess.centre)
    covered = np.zeros(guess.n_lines, bool)
    for offset in (-1, 0):  # the neighbours on either side of each candidate
        k = np.clip(nearest + offset, 0, observed.size - 1)
        covered |= np.abs(guess.centre - observed[k]) <= reach[k]
    keep = ~covered
    if not keep.any():
        return empty
    sigma = np.full(keep.sum(), float(np.median(stellar.sigma.detach().numpy())))
    gamma = np.full(keep.sum(), float(np.median(stellar.gamma.detach().numpy())))
    depth = guess.depth[keep]
    amplitude = -np.log1p(-depth) / _pseudo_voigt_peak(sigma, gamma)
    return LineGuess(centre=guess.centre[keep] / factor, amplitude=amplitude, sigma=sigma,
                     gamma=gamma, depth=depth)


def with_added_lines(stellar: LineModel, extra: LineGuess) -> tuple[LineModel, np.ndarray]:
    """A new :class:`LineModel` with ``stellar``'s current lines plus ``extra`` (sorted by
    centre), and the (n_lines,) boolean mask of the added ones."""
    p = stellar.parameters_numpy()
    centre = np.concatenate([p["centre"], extra.centre])
    order = np.argsort(centre, kind="stable")
    cat = {k: np.concatenate([p[k], getattr(extra, k)])[order]
           for k in ("amplitude", "sigma", "gamma")}
    added = np.concatenate([np.zeros(stellar.n_lines, bool), np.ones(extra.n_lines, bool)])
    half = np.concatenate([p["half_window"], np.full(extra.n_lines, np.nan)])[order]
    model = LineModel(centre[order], cat["amplitude"], cat["sigma"], cat["gamma"],
                      half_window=None, profile=stellar.profile,
                      wavelength_range=stellar.wavelength_range, pair_dtype=stellar.pair_dtype)
    with torch.no_grad():  # existing lines keep their windows; new ones get automatic ones
        auto = model.half_window.numpy()
        model.half_window.copy_(torch.as_tensor(np.where(np.isnan(half), auto, half)))
    return model, added[order]


def fit_adding_lines(stellar: LineModel, spectrum: Spectrum, *, settings: FitSettings,
                     telluric: TelluricModel | None = None, rv: float | None = None,
                     n_sigma: float = 5.0, progress: bool = True
                     ) -> tuple[FitResult, FitResult, np.ndarray]:
    """Fit ``spectrum`` (one 1-D Spectrum, as :func:`.fit.fit_lines`), add the missing lines
    (:func:`find_missing_lines`), refit from the first fit's RV.

    Returns the first fit, the final fit (whose ``model.stellar`` holds every line) and the
    (n_lines,) mask of added lines in the final model (all False when none was missing; the
    final fit is then the first one).
    """
    first = fit_lines(stellar, spectrum, settings=settings, telluric=telluric, rv=rv,
                      progress=progress)
    extra = find_missing_lines(first, n_sigma=n_sigma)
    if extra.n_lines == 0:
        return first, first, np.zeros(stellar.n_lines, bool)
    grown, added = with_added_lines(first.model.stellar, extra)
    final = fit_lines(grown, first.observation, settings=settings, telluric=telluric, rv=first.rv,
                      progress=progress)
    return first, final, added
