"""Analytic absorption-line spectra and line measurements shared by the ops tests."""

import numpy as np

C_KMS = 299_792.458


def gaussian_line(wave, center=5000.0, depth=0.6, sigma_kms=3.0):
    """Continuum 1 minus a Gaussian line of ``sigma_kms`` width in velocity."""
    v = C_KMS * np.log(wave / center)
    return 1.0 - depth * np.exp(-0.5 * (v / sigma_kms) ** 2)


def equivalent_width(wave, flux):
    """∫ (1 − f) dλ (Å) with pixel widths from midpoints."""
    mid = 0.5 * (wave[1:] + wave[:-1])
    edges = np.concatenate([[2 * wave[0] - mid[0]], mid, [2 * wave[-1] - mid[-1]]])
    return float(np.sum((1 - flux) * np.diff(edges)))


def fwhm_kms(wave, flux, center=5000.0):
    """Full width at half depth (km/s) of a single absorption line, by linear interpolation."""
    v = C_KMS * np.log(wave / center)
    depth = 1 - flux
    half = depth.max() / 2
    above = np.flatnonzero(depth >= half)
    i, j = above[0], above[-1]
    left = np.interp(half, [depth[i - 1], depth[i]], [v[i - 1], v[i]])
    right = np.interp(half, [depth[j + 1], depth[j]], [v[j + 1], v[j]])
    return right - left
