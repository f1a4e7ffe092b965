"""MILES stellar library spectra (``TPLLIB = 'MILES'``; Sánchez-Blázquez et al. 2006, MNRAS 371,
703; Falcón-Barroso et al. 2011, A&A 532, A95).

One linear-WCS image per star (3540.5-7409.6 Å in v9.1, 0.9 Å per pixel), flux-calibrated on a
relative scale (not normalised), in the stellar rest frame, with air wavelengths (both stated
by the library papers above). The header ``FWHM`` is the constant line-spread FWHM in Å
(2.5 Å for v9.1, Falcón-Barroso et al. 2011), so R = λ / FWHM varies along the spectrum;
``meta.extra['resolution']`` is R at 5500 Å and ``lsf_fwhm_angstrom`` the FWHM itself.
"""

from __future__ import annotations

import os

from ..spectrum import Spectrum
from ._common import header_float, open_fits_lazy
from .fits1d import read_fits1d

#: Reference wavelength (Å) at which the MILES resolving power is quoted.
MILES_R_REFERENCE = 5500.0
MILES_PAPERS = "Sánchez-Blázquez et al. 2006; Falcón-Barroso et al. 2011"


def read_miles(path: str | os.PathLike, *, medium: str | None = None) -> Spectrum:
    """Read a MILES library star (see the module docstring) as a flux-calibrated Spectrum."""
    with open_fits_lazy(path) as hdul:
        fwhm = header_float(hdul[0].header, "FWHM")
    spec = read_fits1d(path, medium=medium or "air", flux_unit="relative flux (flux-calibrated)")
    extra = dict(spec.meta.extra)
    extra.update({"product": "miles", "library": "MILES",
                  "instrument_source": "MILES library (Sánchez-Blázquez et al. 2006)",
                  "frame": "rest (MILES library)",
                  "medium_assumed": False,
                  "medium_source": (f"given by the caller (medium={medium!r})" if medium else
                                    f"MILES library: air wavelengths ({MILES_PAPERS})")})
    if fwhm is not None and fwhm > 0:
        extra.update({"lsf_fwhm_angstrom": fwhm,
                      "resolution": MILES_R_REFERENCE / fwhm,
                      "resolution_source": (f"header FWHM = {fwhm:g} Å (constant): R = λ/FWHM, "
                                            f"{MILES_R_REFERENCE / fwhm:.0f} at "
                                            f"{MILES_R_REFERENCE:.0f} Å")})
    # MILES spectra were taken with the INT's IDS spectrograph (Sánchez-Blázquez et al. 2006)
    meta = spec.meta.replace(instrument="INT/IDS (MILES)", extra=extra)
    return spec.replace(meta=meta)
