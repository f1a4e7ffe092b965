"""Gaia FGK benchmark-star library spectra written by iSpec (``ORIGIN = 'iSpec'``;
Blanco-Cuaresma et al. 2014, A&A 566, A98).

A linear-WCS 1D image, ``CTYPE1 = 'AWAV'`` (air) and ``CUNIT1`` Å, sampled at 0.01 Å over
4800-6800 Å. The library spectra are corrected to the stellar rest frame (same paper). The
library ships each spectrum at its native resolution and degraded to a common R = 70 000; the
file does not record which, so no resolving power is set (pass ``--resolution``).
"""

from __future__ import annotations

import os

from ..spectrum import Spectrum
from .fits1d import read_fits1d


def read_gbs(path: str | os.PathLike, *, medium: str | None = None) -> Spectrum:
    """Read a GBS-library (iSpec) FITS spectrum: air Å from ``CTYPE1``, rest frame."""
    spec = read_fits1d(path, medium=medium)
    extra = dict(spec.meta.extra)
    extra.pop("resolution", None)
    extra.update({"product": "gbs_library", "library": "Gaia FGK benchmark stars (iSpec)",
                  "frame": "rest (GBS library)",
                  "resolution_source": ("GBS library files come at native R or degraded to "
                                        "R=70000 (Blanco-Cuaresma et al. 2014); which one is "
                                        "not recorded: pass --resolution")})
    return spec.replace(meta=spec.meta.replace(extra=extra))
