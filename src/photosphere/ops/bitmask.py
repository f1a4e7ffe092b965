"""Bad-pixel bitmasks → masked pixels (or inflated uncertainties).

APOGEE_PIXMASK bits (SDSS DR17 bitmask documentation, ``APOGEE_PIXMASK``):

====  ===============  ==============================================================
bit   name             meaning
====  ===============  ==============================================================
0     BADPIX           pixel marked as bad in the bad-pixel mask
1     CRPIX            cosmic ray (ap3d)
2     SATPIX           saturated (ap3d)
3     UNFIXABLE        unfixable (ap3d)
4     BADDARK          bad according to the dark frame
5     BADFLAT          bad according to the flat frame
6     BADERR           very high error
7     NOSKY            no sky available from the sky fibres
8     LITTROW_GHOST    in the Littrow ghost, may be affected
9     PERSIST_HIGH     high-persistence region
10    PERSIST_MED      medium-persistence region
11    PERSIST_LOW      low-persistence region
12    SIG_SKYLINE      near a sky line with significant flux compared with the object
13    SIG_TELLURIC     near a significant telluric absorption line
14    NOT_ENOUGH_PSF   less than 50 % of the PSF in good pixels
====  ===============  ==============================================================

By default bits 0-7 and 12 count as bad (:data:`APOGEE_PIXMASK_BAD_BITS`), the choice of the
APOGEE pipeline (ASPCAP) and The Cannon (Ness et al. 2015).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import InvalidSpectrumError
from ..spectrum import EchelleSpectrum, Spectrum

APOGEE_PIXMASK_BITS: dict[str, int] = {
    "BADPIX": 0, "CRPIX": 1, "SATPIX": 2, "UNFIXABLE": 3, "BADDARK": 4, "BADFLAT": 5,
    "BADERR": 6, "NOSKY": 7, "LITTROW_GHOST": 8, "PERSIST_HIGH": 9, "PERSIST_MED": 10,
    "PERSIST_LOW": 11, "SIG_SKYLINE": 12, "SIG_TELLURIC": 13, "NOT_ENOUGH_PSF": 14,
}
APOGEE_PIXMASK_BAD_BITS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 12)


def bit_value(bits: Iterable[int | str]) -> int:
    """The integer with the given bits set; bits are numbers 0-62 or APOGEE_PIXMASK names."""
    value = 0
    for bit in bits:
        if isinstance(bit, str):
            if bit.upper() not in APOGEE_PIXMASK_BITS:
                raise InvalidSpectrumError(
                    f"unknown bit name {bit!r}; known: {', '.join(APOGEE_PIXMASK_BITS)}")
            bit = APOGEE_PIXMASK_BITS[bit.upper()]
        if int(bit) != bit or not 0 <= bit <= 62:
            raise InvalidSpectrumError(f"bit {bit!r} must be an integer in 0..62")
        value |= 1 << int(bit)
    return value


def bitmask_to_mask(bitmask, bits: Iterable[int | str] = APOGEE_PIXMASK_BAD_BITS) -> np.ndarray:
    """Boolean array, True where any of ``bits`` is set in the integer ``bitmask`` array."""
    arr = np.asarray(bitmask)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InvalidSpectrumError("bitmask must hold integers (got non-integer floats)")
    elif arr.dtype.kind not in "iub":
        raise InvalidSpectrumError(f"bitmask must be an integer array, got dtype {arr.dtype}")
    # int16 FITS columns store bit 15 as a negative number: view the bits, not the value
    as_int = arr.astype(np.int64)
    if arr.dtype.kind == "i" and arr.dtype.itemsize < 8:
        as_int &= (1 << (8 * arr.dtype.itemsize)) - 1
    return (as_int & bit_value(bits)) != 0


def apply_bitmask(spectrum: Spectrum | EchelleSpectrum, bitmask=None,
                  bits: Iterable[int | str] = APOGEE_PIXMASK_BAD_BITS, inflate: float = 1e6,
                  mask: bool = True) -> Spectrum | EchelleSpectrum:
    """A copy of ``spectrum`` in which pixels flagged by ``bits`` of ``bitmask`` are bad.

    bitmask: integer array of the flux's shape, or None to use ``spectrum.meta.extra["bitmask"]``
    (where the APOGEE readers keep the raw PIXMASK). With ``mask=True`` (default) flagged pixels are
    masked, which gives them σ = inf (ivar = 0) in a :class:`Spectrum`. With ``mask=False`` they
    stay unmasked and their σ is multiplied by ``inflate`` (the large-error convention of
    The Cannon's training sets), which needs a spectrum with uncertainties.
    """
    if bitmask is None:
        bitmask = spectrum.meta.extra.get("bitmask")
        if bitmask is None:
            raise InvalidSpectrumError(
                "apply_bitmask: no bitmask given and spectrum.meta.extra has no 'bitmask'; "
                "pass the PIXMASK array explicitly")
    flagged = bitmask_to_mask(bitmask, bits)
    if flagged.shape != spectrum.flux.shape:
        raise InvalidSpectrumError(
            f"bitmask shape {flagged.shape} does not match the flux shape {spectrum.flux.shape}")
    if mask:
        return spectrum.with_mask(flagged) if isinstance(spectrum, Spectrum) else \
            spectrum.replace(mask=spectrum.mask | flagged)
    if not spectrum.has_uncertainty:
        raise InvalidSpectrumError(
            "apply_bitmask(mask=False) inflates σ, but the spectrum has no uncertainties; "
            "pass mask=True or give the spectrum sigma/ivar")
    if not inflate >= 1:
        raise InvalidSpectrumError(f"inflate={inflate} must be >= 1")
    return spectrum.replace(sigma=np.where(flagged, spectrum.sigma * inflate, spectrum.sigma))
