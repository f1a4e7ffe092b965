"""1D FITS spectra written by iSpec (``ORIGIN = 'iSpec'``; Blanco-Cuaresma et al. 2014,
A&A 569, A111), the format of the Gaia FGK benchmark-star (GBS) spectral library
(Blanco-Cuaresma et al. 2014, A&A 566, A98).

A linear-WCS 1D image with ``CTYPE1 = 'AWAV'`` (air) or ``'WAVE'`` (vacuum) and ``CUNIT1``; the
GBS library files are sampled at 0.01 Å over 4800-6800 Å. iSpec does not record the velocity
frame or the resolving power (the GBS library ships each star at its native resolution and
degraded to R = 70 000; which one a file is, is not written in it), so neither is set: pass
``--resolution`` to a fit.
"""

from __future__ import annotations

import os

from ..spectrum import Spectrum
from .fits1d import read_fits1d


def read_ispec(path: str | os.PathLike, *, medium: str | None = None) -> Spectrum:
    """Read an iSpec FITS spectrum (e.g. a GBS-library star): air/vacuum from ``CTYPE1``."""
    spec = read_fits1d(path, medium=medium)
    extra = dict(spec.meta.extra)
    extra.pop("resolution", None)
    extra.update({"product": "ispec_fits", "written_by": "iSpec",
                  "resolution_source": ("not recorded by iSpec (GBS-library files come at "
                                        "native R or degraded to R=70000); pass --resolution")})
    return spec.replace(meta=spec.meta.replace(extra=extra))
